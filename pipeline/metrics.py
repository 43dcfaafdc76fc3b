"""Every Prometheus metric of the pipeline, defined in one place.

The seed's five metric names keep the seed's meaning (with its insert-timer bug fixed: ``db_insertion_seconds``
times the awaited write and commit, not coroutine creation). Metrics are created on first use, so each process
exposes only the ones its stage records. ``telemetry_readings_total{stage=...}`` counts readings at each hop and is
what the orchestrator's accounting reads.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable
from functools import cache

import numpy as np
from prometheus_client import Counter, Gauge, Histogram, start_http_server

# --- the seed's buckets -----------------------------------------------------------------------------------------
DB_BUCKETS = (0.007, 0.008, 0.0085, 0.009, 0.0092, 0.0094, 0.0096, 0.0098, 0.01, 0.011, 0.012, 0.015, 0.02,
              0.08, 0.1, 0.2, 0.3, 0.4, 0.5, 0.8, 1, 2, 4, 10)  # fmt: skip
LATENCY_TO_DB_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 150, 200)
DICTIONARIZE_BUCKETS = tuple(b for b in DB_BUCKETS if b <= 0.2)
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5,
                      7.5, 10, 15, 20, 30, 50, 75, 100, 150, 200)  # fmt: skip
# --- ours: wide, log-spaced (100 µs … 100 s) ----------------------------------------------------------------------
WIDE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5,
                10, 25, 50, 100)  # fmt: skip

_HISTOGRAMS_ON = True
_SPENT_NS = 0  # this process's time inside histogram recording (``_Timed.observe``, ``observe_many``)


class _NoHistogram:
    """Stands in for every histogram when histograms are off (``--no-histograms``): counters stay, so the
    accounting still works, and the cost of instrumentation can be measured as on vs off."""

    def observe(self, amount: float) -> None:
        return None


NO_HISTOGRAM = _NoHistogram()


class _Timed:
    """A histogram whose ``observe`` times itself (``perf_counter_ns`` around the call) into the process's
    instrumentation seconds: the histograms' own cost, measured in place in every repeat
    (``instrumentation_seconds``; docs/targets.md)."""

    __slots__ = ("hist",)

    def __init__(self, hist: Histogram) -> None:
        self.hist = hist

    def observe(self, amount: float) -> None:
        global _SPENT_NS
        t = time.perf_counter_ns()
        self.hist.observe(amount)
        _SPENT_NS += time.perf_counter_ns() - t


def _spent_s() -> float:
    return _SPENT_NS / 1e9


@cache
def instrumentation_seconds() -> Gauge:
    """Seconds this process has spent recording histograms — every ``observe`` and ``observe_many`` call, the
    per-reading values they take included — timed in place: what the histograms cost, without an on/off pair."""
    g = Gauge("telemetry_instrumentation_seconds", "Seconds spent recording histograms (timed in place)")
    g.set_function(_spent_s)
    return g


def set_histograms(enabled: bool) -> None:
    global _HISTOGRAMS_ON
    _HISTOGRAMS_ON = enabled
    instrumentation_seconds()  # exported by every stage (0 with histograms off)


def _hist(make: Callable[[], Histogram]) -> Callable[[], Histogram]:
    """Decorator: a cached histogram getter (timed: ``_Timed``) that returns NO_HISTOGRAM while histograms are
    off."""
    cached = cache(lambda: _Timed(make()))

    def get() -> Histogram:
        return cached() if _HISTOGRAMS_ON else NO_HISTOGRAM  # type: ignore[return-value]

    get.__name__, get.__doc__ = make.__name__, make.__doc__
    return get


STAGES = ("unsent", "generated", "ingested", "queued", "dequeued", "committed", "forwarded", "received", "broadcast")


@cache
def readings() -> Counter:
    return Counter("telemetry_readings", "Readings that passed each hop of the pipeline", ["stage"])


def count(stage: str, n: int = 1) -> None:
    readings().labels(stage).inc(n)


# seed: processing node
@_hist
def db_insertion_seconds() -> Histogram:
    return Histogram("db_insertion_seconds", "Time to write one batch and commit it", buckets=DB_BUCKETS)


@_hist
def latency_to_db_insert() -> Histogram:
    return Histogram(
        "latency_to_db_insert",
        "Reading timestamp to just before its batch is written, per reading (seconds)",
        buckets=LATENCY_TO_DB_BUCKETS,
    )


@_hist
def data_dictionarize_seconds() -> Histogram:
    return Histogram(
        "data_dictionarize_seconds", "Time to decode one stream message into rows", buckets=DICTIONARIZE_BUCKETS
    )


@cache
def redis_queue_len() -> Gauge:
    return Gauge("redis_queue_len", "Length of the Redis queue, from the reply to the last push")


# seed: backend
@_hist
def latency_end_to_end() -> Histogram:
    return Histogram(
        "latency_end_to_end", "Reading timestamp to shown in a page, as reported by the page (seconds)",
        buckets=END_TO_END_BUCKETS,
    )  # fmt: skip


# ours
@_hist
def generator_buffer_wait_seconds() -> Histogram:
    return Histogram(
        "generator_buffer_wait_seconds",
        "Time a stream message waits in its subscriber's bounded buffer before it is sent",
        buckets=WIDE_BUCKETS,
    )


@cache
def generator_distinct() -> Gauge:
    return Gauge(
        "generator_distinct_readings",
        "Distinct readings generated: the highest reading index sent + 1 (a resumed stream re-sends none)",
    )


@cache
def generator_streams() -> Counter:
    return Counter("generator_streams", "Streams by state change: started, completed (ended normally)", ["event"])


@_hist
def generator_publish_delay_seconds() -> Histogram:
    return Histogram(
        "generator_publish_delay_seconds", "Sent minus intended send time, per stream message (open loop lag)",
        buckets=WIDE_BUCKETS,
    )  # fmt: skip


@_hist
def ingest_transport_seconds() -> Histogram:
    return Histogram(
        "ingest_transport_seconds", "Sent (generator) to received and decoded (ingest), per stream message",
        buckets=WIDE_BUCKETS,
    )  # fmt: skip


@_hist
def writer_batch_rows() -> Histogram:
    return Histogram(
        "writer_batch_rows", "Rows per committed batch",
        buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000),
    )  # fmt: skip


@_hist
def forward_request_seconds() -> Histogram:
    return Histogram("forward_request_seconds", "Duration of one POST to the backend", buckets=WIDE_BUCKETS)


@cache
def errors() -> Counter:
    return Counter("telemetry_errors", "Errors counted and survived, by stage and kind", ["stage", "kind"])


@cache
def ws_clients() -> Gauge:
    return Gauge("backend_ws_clients", "Connected websocket clients")


@cache
def broadcast_dropped() -> Counter:
    return Counter(
        "backend_broadcast_dropped_readings", "Readings not delivered to a websocket client because it was too slow"
    )


def observe_many(hist: Histogram, values: Iterable[float]) -> None:
    """Observe many values at once: the same buckets, sum and count as ``observe`` per value, at a fraction of the
    cost (one increment per bucket touched instead of a lock and a bucket scan per value). Hot paths observe
    a value per reading; at 100k+ readings/s per-value ``observe`` alone costs a tenth of a core. Pass the values
    lazily (a generator expression): with histograms off they are then never computed, and with them on their
    computation is timed as instrumentation."""
    global _SPENT_NS
    if hist is NO_HISTOGRAM:
        return
    t = time.perf_counter_ns()
    hist = hist.hist if isinstance(hist, _Timed) else hist
    _observe_many(hist, values)
    _SPENT_NS += time.perf_counter_ns() - t


def observe_ages(hist: Histogram, now_ns: int, stamps_ns: Iterable[int | None]) -> None:
    """Observe ``(now_ns − stamp) / 1e9`` for each stamp (ns; 0 or None: none, skipped), vectorised: the same
    buckets, sum and count as ``observe`` per value — the same float per value, the same first bound ≥ it
    (``searchsorted`` left, as ``bisect_left``) — at a third of ``observe_many``'s cost per value. The writer's
    per-reading latency (timed as instrumentation, like ``observe_many``)."""
    global _SPENT_NS
    if hist is NO_HISTOGRAM:
        return
    t = time.perf_counter_ns()
    inner = hist.hist if isinstance(hist, _Timed) else hist
    bounds, buckets, total = (getattr(inner, a, None) for a in ("_upper_bounds", "_buckets", "_sum"))
    listed = list(stamps_ns)
    try:
        stamps = np.array(listed, dtype=np.int64)
    except TypeError:  # a None among them
        stamps = np.array([x or 0 for x in listed], dtype=np.int64)
    stamps = stamps[stamps != 0]
    if bounds is None or buckets is None or total is None:  # not an unlabelled classic histogram: the slow way
        _observe_many(inner, ((now_ns - int(x)) / 1e9 for x in stamps))
    elif len(stamps):
        ages = (now_ns - stamps) / 1e9
        total.inc(float(ages.sum()))
        counts = np.bincount(np.searchsorted(np.asarray(bounds), ages, side="left"), minlength=len(bounds))
        for i in np.flatnonzero(counts):
            buckets[i].inc(int(counts[i]))
    _SPENT_NS += time.perf_counter_ns() - t


def _observe_many(hist: Histogram, values: Iterable[float]) -> None:
    bounds = getattr(hist, "_upper_bounds", None)
    buckets = getattr(hist, "_buckets", None)
    total = getattr(hist, "_sum", None)
    if bounds is None or buckets is None or total is None:  # not an unlabelled classic histogram: the slow way
        for v in values:
            hist.observe(v)
        return
    counts = [0] * len(bounds)
    s = 0.0
    for v in values:
        counts[bisect.bisect_left(bounds, v)] += 1  # the first bound >= v, as observe's scan finds it
        s += v
    total.inc(s)
    for i, c in enumerate(counts):
        if c:
            buckets[i].inc(c)


def serve(port: int, host: str = "127.0.0.1") -> int:
    """Serve /metrics on host:port in a daemon thread; port 0 picks a free one. Returns the bound port."""
    server, _thread = start_http_server(port, addr=host)
    return int(server.server_port)


@cache
def backend_metric_data() -> Counter:
    return Counter("backend_metric_data", "JSON objects posted to the backend's /metric_data (user metrics)")
