"""Instrumentation: the bulk histogram observes give exactly what per-value observe gives, and the histograms time
their own cost in place."""

from __future__ import annotations

import random
from typing import Any

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline import metrics


def test_observe_many_equals_observe() -> None:
    rng = random.Random(3)
    values = [rng.choice([0.0, 0.007, 0.01, 5.0, 1e9, -1.0]) if rng.random() < 0.2 else rng.expovariate(10)
              for _ in range(5000)]  # fmt: skip
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "x", buckets=metrics.DB_BUCKETS, registry=reg_a)
    b = Histogram("h", "x", buckets=metrics.DB_BUCKETS, registry=reg_b)
    for v in values:
        a.observe(v)
    metrics.observe_many(b, values)
    assert _samples(reg_a) == _samples(reg_b)


def test_the_histograms_time_their_own_cost_in_place() -> None:
    """A stated extra cost inside recording (a histogram whose observe spins 200 µs) comes out in the process's
    instrumentation seconds; with histograms off nothing is recorded and the lazy values are never computed."""
    import time

    class Slow:
        def observe(self, amount: float) -> None:
            end = time.perf_counter_ns() + 200_000
            while time.perf_counter_ns() < end:
                pass

    timed = metrics._Timed(Slow())  # type: ignore[arg-type]
    before = metrics._spent_s()
    for _ in range(50):
        timed.observe(1.0)
    assert 0.010 <= metrics._spent_s() - before < 0.030  # 50 × 200 µs, plus the timer's own calls

    computed = []

    def values() -> Any:
        for v in (0.1, 0.2):
            computed.append(v)
            yield v

    metrics.set_histograms(False)
    try:
        before = metrics._spent_s()
        metrics.observe_many(metrics.latency_to_db_insert(), values())
        assert computed == [] and metrics._spent_s() == before
    finally:
        metrics.set_histograms(True)
    metrics.observe_many(metrics.latency_to_db_insert(), values())
    assert computed == [0.1, 0.2] and metrics._spent_s() > before
    [family] = metrics.instrumentation_seconds().collect()  # what /metrics exports
    assert family.samples[0].value == metrics._spent_s()


def test_observe_ages_equals_observe_per_value() -> None:
    """The writer's vectorised per-reading latency gives exactly what per-value ``observe`` gives, None and 0
    stamps skipped."""
    rng = random.Random(4)
    now = 1_800_000_000_000_000_000
    bounds_ns = [round(b * 1e9) for b in metrics.LATENCY_TO_DB_BUCKETS]
    stamps: list[int | None] = [now - rng.choice([*bounds_ns, rng.randint(0, 300 * 10**9)]) for _ in range(3000)]
    stamps += [None, 0, now]  # absent stamps, and an age of 0
    reg_a, reg_b = CollectorRegistry(), CollectorRegistry()
    a = Histogram("h", "x", buckets=metrics.LATENCY_TO_DB_BUCKETS, registry=reg_a)
    b = Histogram("h", "x", buckets=metrics.LATENCY_TO_DB_BUCKETS, registry=reg_b)
    for s in stamps:
        if s:
            a.observe((now - s) / 1e9)
    metrics.observe_ages(b, now, stamps)
    assert _samples(reg_a) == _samples(reg_b)


def _samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
    out = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            if not s.name.endswith("_created"):
                out[(s.name, s.labels.get("le", ""))] = round(s.value, 6)
    return out
