"""Instrumentation: the bulk histogram observe gives exactly what per-value observe gives."""

from __future__ import annotations

import random

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

    def samples(reg: CollectorRegistry) -> dict[tuple[str, str], float]:
        out = {}
        for fam in text_string_to_metric_families(generate_latest(reg).decode()):
            for s in fam.samples:
                if not s.name.endswith("_created"):
                    out[(s.name, s.labels.get("le", ""))] = round(s.value, 6)
        return out

    assert samples(reg_a) == samples(reg_b)
