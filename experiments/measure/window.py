"""What a repeat measures from what it left behind: the window's throughput (from commit events) and exact latencies
(from the table), PostgreSQL deltas, and Prometheus quantiles of the same window. What is sampled while it runs
(resources per stage and server, queue lengths, histogram scrapes) is ``experiments.measure.monitor``'s; the
bottleneck verdict drawn from both is ``experiments.measure.verdict``."""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from experiments.measure.promql import quantiles
from harness import clocks
from pipeline import db

SERVERS = (
    "postgresql",
    "redis",
    "nats",
    "rabbitmq",
)  # the servers' pseudo-stages in a repeat's resources (``monitor.ServerProcesses``)

# --------------------------------------------------------------------------------------------------- the table
MIN_COMMITS = 20  # a measured window spans at least this many commits (matrix `min_commits`)


@dataclass
class Window:
    """The measured window over commit events: from one commit to a later one, whole transactions only."""

    start_ns: int  # commit time of the commit opening the window (its rows are not counted)
    end_ns: int  # commit time of the last commit inside the window
    complete: bool  # False: the run ended before the window's planned length
    committed: int  # rows of the commits after the opening one, up to and including the last
    commits: int = 0  # commits after the opening one (the window spans this many commit intervals)
    commit_gap_s: float | None = None  # median time between commits after warm-up (sizes the next window)

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9

    @property
    def throughput(self) -> float | None:
        return self.committed / self.seconds if self.seconds > 0 and self.commits > 0 else None


EPOCH_NS = "(extract(epoch FROM inserted_at) * 1e9)::bigint"


def commit_events(dsn: str, schema: str) -> list[tuple[int, int]]:
    """(commit time in ns, rows) per transaction, in commit order: rows grouped by the transaction that inserted
    them (``xmin``), its time the last ``inserted_at`` (``clock_timestamp()`` per row, just before the commit)."""
    with db.connect_sync(dsn, schema) as conn:
        rows = conn.execute(f"SELECT max({EPOCH_NS}), count(*) FROM telemetry_data GROUP BY xmin ORDER BY 1").fetchall()
    return [(int(t), int(n)) for t, n in rows]


COUNT_WARMUP_SHARE = 0.2  # a count cell's warm-up: at most this share of its commits' span


def window_from_commits(
    events: list[tuple[int, int]], warmup_s: float, measure_s: float, *, count: bool = False
) -> Window | None:
    """Throughput robust to batching: the window opens at the first commit at least ``warmup_s`` after the first
    commit and closes at the last commit within ``measure_s`` after that; throughput = rows of the commits after the
    opening one ÷ the time between the two. Counting whole commits over whole commit intervals, a batch is never
    half in the window (rows between two fixed instants move by whole batches).

    ``count``: a run of a fixed number of readings, which ends by itself, perhaps within the warm-up (100,000 readings
    at 150,000/s): its warm-up is sized from the run — at most :data:`COUNT_WARMUP_SHARE` of the span from its first
    commit to its last — so that its window always holds the rest of its commits."""
    if not events:
        return None
    events = sorted(events)
    first = events[0][0]
    if count:
        warmup_s = min(warmup_s, COUNT_WARMUP_SHARE * (events[-1][0] - first) / 1e9)
    after = [e for e in events if e[0] >= first + round(warmup_s * 1e9)]
    if not after:
        return Window(first, first, False, 0)
    start = after[0][0]
    limit = start + round(measure_s * 1e9)
    inside = [e for e in after[1:] if e[0] <= limit]
    complete = events[-1][0] > limit
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(after)]
    gap = statistics.median(gaps) / 1e9 if gaps else None
    if not inside:
        return Window(start, start, complete, 0, 0, gap)
    return Window(start, inside[-1][0], complete, sum(n for _, n in inside), len(inside), gap)


def measure_window(dsn: str, schema: str, warmup_s: float, measure_s: float, *, count: bool = False) -> Window | None:
    """The measured window of a repeat from its table (``window_from_commits`` over ``commit_events``)."""
    return window_from_commits(commit_events(dsn, schema), warmup_s, measure_s, count=count)


def window_length(gap_s: float | None, measure_s: float, min_commits: int, max_s: float) -> float:
    """The measured window a cell needs: ``measure_s``, or long enough for ``min_commits`` commits at the pilot's
    median commit interval (25 % margin), at most ``max_s``."""
    if gap_s is None or min_commits <= 0:
        return measure_s
    return min(max(measure_s, 1.25 * min_commits * gap_s), max(max_s, measure_s))


def latencies(
    dsn: str,
    schema: str,
    since_intended_ns: int,
    until_intended_ns: int,
    shifts: Sequence[tuple[list[str] | None, int]] = (),
) -> dict[str, dict[str, Any]]:
    """Exact percentiles (ms) of intended → inserted and sent → inserted, for readings intended in the window.

    ``shifts``: (sensor ids, ns added to their readings' latencies) — a cross-host run's clock correction: a
    generator on another host stamps intended and sent by its clock, PostgreSQL stamps ``inserted_at`` by its own.
    Sensor ids None: every reading (one generator); readings of no listed sensor are not shifted."""
    whens = [(ids, ns) for ids, ns in shifts if ids is not None]
    default = next((ns for ids, ns in shifts if ids is None), 0)
    params: list[Any] = []
    case = "%s::bigint"
    if whens:
        case = "CASE " + " ".join("WHEN sensor_id = ANY(%s) THEN %s::bigint" for _ in whens) + " ELSE %s::bigint END"
        for ids, ns in whens:
            params += [ids, ns]
    params.append(default)
    q = f"""
        SELECT count(*),
               percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY e - intended_ns + s),
               max(e - intended_ns + s),
               percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY e - sent_ns + s),
               max(e - sent_ns + s)
        FROM (SELECT {EPOCH_NS} AS e, intended_ns, sent_ns, {case} AS s FROM telemetry_data
              WHERE intended_ns >= %s AND intended_ns < %s) t
    """
    with db.connect_sync(dsn, schema) as conn:
        row = conn.execute(q, (*params, since_intended_ns, until_intended_ns)).fetchone()
    assert row is not None

    def pack(pcts: list[int] | None, mx: int | None) -> dict[str, Any]:
        if not row[0] or pcts is None:
            return {"n": 0}
        p50, p95, p99 = (v / 1e6 for v in pcts)
        return {"p50": p50, "p95": p95, "p99": p99, "max": (mx or 0) / 1e6, "n": int(row[0])}

    return {"intended": pack(row[1], row[2]), "sent": pack(row[3], row[4])}


def db_clock(dsn: str, schema: str, rounds: int = clocks.ROUNDS) -> dict[str, float]:
    """PostgreSQL's clock (``clock_timestamp()``, which stamps ``inserted_at``) minus this process's, NTP-style
    (``harness.clocks.offset``: the shortest of a few round trips)."""
    with db.connect_sync(dsn, schema) as conn:

        def read_ns() -> int:
            row = conn.execute("SELECT (extract(epoch FROM clock_timestamp()) * 1e6)::bigint").fetchone()
            assert row is not None
            return int(row[0]) * 1000

        return clocks.offset(read_ns, rounds)


def intended_bounds(dsn: str, schema: str) -> tuple[int, int] | None:
    with db.connect_sync(dsn, schema) as conn:
        row = conn.execute("SELECT min(intended_ns), max(intended_ns) FROM telemetry_data").fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def percentile_disc(sorted_values: list[int], q: float) -> int:
    """PostgreSQL's percentile_disc: the first value whose cumulative fraction reaches q."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def end_to_end(
    arrivals: list[int], intended: list[int], latencies: list[int], window: Window | None, since: int, until: int
) -> tuple[dict[str, Any], float | None]:
    """A websocket client's view: exact latency percentiles (ms) of readings intended in [since, until), and
    readings received per second inside the commit window."""
    lats = sorted(lat for lat, i in zip(latencies, intended, strict=True) if since <= i < until)
    latency: dict[str, Any] = {"n": 0}
    if lats:
        latency = {f"p{round(q * 100)}": percentile_disc(lats, q) / 1e6 for q in (0.5, 0.95, 0.99)}
        latency.update(max=lats[-1] / 1e6, n=len(lats))
    rate = None
    if window is not None and window.seconds > 0:
        rate = sum(1 for a in arrivals if window.start_ns <= a < window.end_ns) / window.seconds
    return latency, rate


# ------------------------------------------------------------------------------------------------ PostgreSQL
def pg_stats(dsn: str, schema: str) -> dict[str, int | None]:
    with db.connect_sync(dsn, schema) as conn:
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint").fetchone()
        # NULL (not an error) before the first run has created the table in this schema
        size = conn.execute("SELECT pg_total_relation_size(to_regclass('telemetry_data'))").fetchone()
        try:  # PostgreSQL ≤ 16
            cp = conn.execute("SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter").fetchone()
        except Exception:  # 17+: pg_stat_checkpointer
            conn.rollback()
            cp = conn.execute("SELECT num_timed + num_requested FROM pg_stat_checkpointer").fetchone()
    return {
        "wal": int(wal[0]) if wal else None,
        "table_bytes": int(size[0]) if size and size[0] is not None else None,
        "checkpoints": int(cp[0]) if cp else None,
    }


def pg_deltas(before: dict[str, int | None], after: dict[str, int | None], readings: int) -> dict[str, Any]:
    wal = after["wal"] - before["wal"] if after["wal"] is not None and before["wal"] is not None else None
    cps = (
        after["checkpoints"] - before["checkpoints"]
        if after["checkpoints"] is not None and before["checkpoints"] is not None
        else None
    )
    return {
        "wal_bytes": wal,
        "wal_bytes_per_reading": wal / readings if wal is not None and readings else None,
        "table_bytes": after["table_bytes"],
        "checkpoints": cps,
    }


# -------------------------------------------------------------------------------------------- Prometheus data
HISTOGRAMS = (
    "db_insertion_seconds",
    "latency_to_db_insert",
    "data_dictionarize_seconds",
    "latency_end_to_end",
    "generator_buffer_wait_seconds",
    "generator_publish_delay_seconds",
    "ingest_transport_seconds",
    "writer_batch_rows",
    "forward_request_seconds",
)


Buckets = dict[str, float]  # le → cumulative count
Snapshot = dict[str, Buckets]  # histogram name → buckets


def histograms_of(scrape: Any) -> Snapshot:
    """The ``HISTOGRAMS`` a scrape holds (``harness.scrape.Scrape``), by name."""
    out = {}
    for h in HISTOGRAMS:
        b = scrape.histogram(h)
        if b:
            out[h] = b
    return out


def _at(series: list[tuple[float, Snapshot]], t: float, after: bool) -> Snapshot | None:
    """The scrape nearest ``t`` on its side: the last at or before it (``after`` False), the first at or after."""
    if after:
        return next((snap for ts, snap in series if ts >= t), None)
    before = [snap for ts, snap in series if ts <= t]
    return before[-1] if before else (series[0][1] if series else None)


def window_buckets(start: Buckets, end: Buckets) -> Buckets | None:
    """The readings observed between two cumulative scrapes: end − start per bucket; None if the counters went
    backwards (a restarted stage) or nothing was observed."""
    delta = {le: end[le] - start.get(le, 0.0) for le in end}
    if any(v < 0 for v in delta.values()) or not delta.get("+Inf"):
        return None
    return delta


def prometheus_data(
    finals: dict[str, Any],
    series: dict[str, list[tuple[float, Snapshot]]],
    window: tuple[float, float] | None,
) -> tuple[dict[str, Any], dict[str, Any], dict[str, float]]:
    """(stage → histogram → buckets of the measured window, 'stage/metric' → PromQL quantiles of those buckets in
    ms, sums: 'stage/metric' → seconds over the whole run).

    Same window, same population: a stage's buckets in the window are the difference of its cumulative buckets
    scraped at the window's start (the last scrape at or before it) and end (the first scrape at or after it, else
    the stage's final scrape), so the interpolated quantiles describe the readings the exact ones do (up to one poll
    interval, ≈ 0.25 s, at each end). ``finals``: stage → its final ``Scrape``; ``series``: stage → timestamped
    (epoch s) histogram snapshots taken during the run (``ResourceMonitor.record_histograms``)."""
    buckets: dict[str, dict[str, dict[str, float]]] = {}
    qs: dict[str, dict[str, float | None]] = {}
    sums: dict[str, float] = {}
    for name, final in finals.items():
        last = histograms_of(final)
        for h in HISTOGRAMS:
            sums[f"{name}/{h}"] = final.get(f"{h}_sum") if h in last else 0.0
        if window is None:
            continue
        s = series.get(name, [])
        start, end = _at(s, window[0], after=False), _at(s, window[1], after=True) or last
        for h in HISTOGRAMS:
            if end is None or h not in end:
                continue
            b = window_buckets((start or {}).get(h, {}), end[h])
            if b is None:
                continue
            buckets.setdefault(name, {})[h] = b
            scale = 1.0 if h == "writer_batch_rows" else 1000.0
            qs[f"{name}/{h}"] = {k: (v * scale if v is not None else None) for k, v in quantiles(b).items()}
    return buckets, qs, sums
