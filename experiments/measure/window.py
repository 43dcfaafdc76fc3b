"""What a repeat measures: the window's throughput (from commit events) and exact latencies (from the table),
resources per stage, queue lengths over time, PostgreSQL deltas, and Prometheus quantiles of the same window.
The bottleneck verdict drawn from them is ``experiments.measure.verdict``."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import redis.asyncio as aioredis

from experiments.measure.promql import quantiles
from pipeline import db
from pipeline.queues import QUEUES
from pipeline.wiring import FORWARD_SUFFIX

if TYPE_CHECKING:
    from harness.orchestrator import Orchestrator


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


def window_from_commits(events: list[tuple[int, int]], warmup_s: float, measure_s: float) -> Window | None:
    """Throughput robust to batching: the window opens at the first commit at least ``warmup_s`` after the first
    commit and closes at the last commit within ``measure_s`` after that; throughput = rows of the commits after the
    opening one ÷ the time between the two. Counting whole commits over whole commit intervals, a batch is never
    half in the window (rows between two fixed instants move by whole batches)."""
    if not events:
        return None
    events = sorted(events)
    first = events[0][0]
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


def measure_window(dsn: str, schema: str, warmup_s: float, measure_s: float) -> Window | None:
    """The measured window of a repeat from its table (``window_from_commits`` over ``commit_events``)."""
    return window_from_commits(commit_events(dsn, schema), warmup_s, measure_s)


def window_length(gap_s: float | None, measure_s: float, min_commits: int, max_s: float) -> float:
    """The measured window a cell needs: ``measure_s``, or long enough for ``min_commits`` commits at the pilot's
    median commit interval (25 % margin), at most ``max_s``."""
    if gap_s is None or min_commits <= 0:
        return measure_s
    return min(max(measure_s, 1.25 * min_commits * gap_s), max(max_s, measure_s))


def latencies(dsn: str, schema: str, since_intended_ns: int, until_intended_ns: int) -> dict[str, dict[str, Any]]:
    """Exact percentiles (ms) of intended → inserted and sent → inserted, for readings intended in the window."""
    q = f"""
        SELECT count(*),
               percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {EPOCH_NS} - intended_ns),
               max({EPOCH_NS} - intended_ns),
               percentile_disc(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY {EPOCH_NS} - sent_ns),
               max({EPOCH_NS} - sent_ns)
        FROM telemetry_data WHERE intended_ns >= %s AND intended_ns < %s
    """
    with db.connect_sync(dsn, schema) as conn:
        row = conn.execute(q, (since_intended_ns, until_intended_ns)).fetchone()
    assert row is not None

    def pack(pcts: list[int] | None, mx: int | None) -> dict[str, Any]:
        if not row[0] or pcts is None:
            return {"n": 0}
        p50, p95, p99 = (v / 1e6 for v in pcts)
        return {"p50": p50, "p95": p95, "p99": p99, "max": (mx or 0) / 1e6, "n": int(row[0])}

    return {"intended": pack(row[1], row[2]), "sent": pack(row[3], row[4])}


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


# ------------------------------------------------------------------------------------------- resources, queues
@dataclass
class ResourceMonitor:
    """Samples CPU seconds and RSS of every stage process, and the Redis queue lengths, at every poll (on the
    orchestrator's Redis: a restart_redis cell runs on its own)."""

    queue_key: str
    t0: float = field(default_factory=time.time)
    procs: dict[str, psutil.Process] = field(default_factory=dict)
    series: dict[str, list[list[float]]] = field(default_factory=dict)  # stage → [t, cpu_s, rss]
    queue_series: dict[str, list[list[float]]] = field(default_factory=dict)
    histogram_series: dict[str, list[tuple[float, Snapshot]]] = field(default_factory=dict)  # stage → (epoch s, …)
    servers: ServerProcesses = field(default_factory=lambda: ServerProcesses())
    # called at every poll with the live stage pids and the snapshot (the repeat's sampler: experiments.sampling)
    on_poll: Callable[[dict[str, int], dict[str, Any]], None] | None = None
    _redis: aioredis.Redis | None = None

    def record_histograms(self, now: float, scrapes: dict[str, Any]) -> None:
        """Keep each stage's histogram buckets as just scraped (stage → ``Scrape``), timestamped: the measured
        window's Prometheus quantiles come from the scrapes at its bounds (``prometheus_data``)."""
        for name, scrape in scrapes.items():
            snap = histograms_of(scrape)
            if snap:
                self.histogram_series.setdefault(name, []).append((now, snap))

    async def sample(self, orch: Orchestrator, snap: dict[str, Any]) -> None:
        now = time.time()
        pids, scrapes = orch.pids(), orch.scrapes()
        self.record_histograms(now, {name: scrape for name, scrape in scrapes.items() if name in pids})
        for name, pid in pids.items():
            try:
                p = self.procs.get(name)
                if p is None or p.pid != pid:
                    p = self.procs[name] = psutil.Process(pid)
                with p.oneshot():
                    t = p.cpu_times()
                    rss = p.memory_info().rss
                self.series.setdefault(name, []).append([now - self.t0, t.user + t.system, float(rss)])
            except psutil.Error:
                continue
        for server, cpu_s, server_rss in await self.servers.sample(
            orch.services.pg_dsn, orch.services.redis_url, now, QUEUES[orch.cfg.queue].broker
        ):
            self.series.setdefault(server, []).append([now - self.t0, cpu_s, server_rss])
        await self._sample_queues(orch, now)
        if self.on_poll is not None:
            self.on_poll(pids, snap)

    async def _sample_queues(self, orch: Orchestrator, now: float) -> None:
        """The writer and forward queues' depth, as the run's queue variant reports it (``Queue.depth``)."""
        if self._redis is None:
            self._redis = aioredis.Redis.from_url(orch.services.redis_url)
        queue = QUEUES[orch.cfg.queue]
        for key in (self.queue_key, self.queue_key + FORWARD_SUFFIX):
            try:
                n = await queue.depth(self._redis, key)
            except Exception:  # a Redis restart: skip this sample
                continue
            self.queue_series.setdefault(key, []).append([now - self.t0, float(n)])

    async def close(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()

    def resources(self, window: tuple[float, float] | None) -> dict[str, dict[str, Any]]:
        """Per stage: CPU seconds, cores busy inside ``window`` (epoch seconds), peak RSS, the series."""
        out = {}
        for name, s in self.series.items():
            util = None
            if window is not None:
                inside = [x for x in s if window[0] - 0.5 <= x[0] + self.t0 <= window[1] + 0.5]
                if len(inside) >= 2 and inside[-1][0] > inside[0][0]:
                    util = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
            out[name] = {
                "cpu_s": s[-1][1] - s[0][1] if len(s) > 1 else 0.0,
                "cpu_util_window": util,
                "peak_rss_bytes": int(max(x[2] for x in s)),
                "series": [[round(a, 3), round(b, 4), c] for a, b, c in s],
            }
        return out

    def queue_growth(self, key: str, window: tuple[float, float] | None) -> float | None:
        """Least-squares slope (entries/s) of the queue's length inside ``window``."""
        s = self.queue_series.get(key, [])
        if window is not None:
            s = [x for x in s if window[0] <= x[0] + self.t0 <= window[1]]
        if len(s) < 3:
            return None
        return _slope([x[0] for x in s], [x[1] for x in s])


SERVERS = ("postgresql", "redis", "nats", "rabbitmq")  # the servers' pseudo-stages in a repeat's resources


@dataclass
class ServerProcesses:
    """CPU of the PostgreSQL and Redis servers serving the run, as two more "stages" (``postgresql``, ``redis``),
    and of the broker its queue variant uses (``nats``, ``rabbitmq``: the local process listening on its port).

    PostgreSQL: every server process ``pg_stat_activity`` lists for the run's database, plus its background
    processes (WAL writer, checkpointer, …), refreshed every ``REFRESH_S``; Redis: ``INFO server``'s
    ``process_id``. Only processes on this machine whose name says what they are (a remote server's pids mean
    nothing here). CPU is accumulated per process from its first sample on, so a process that exits takes nothing
    back from the total."""

    REFRESH_S = 2.0
    pids: dict[str, list[int]] = field(default_factory=dict)
    refreshed: float = 0.0
    last: dict[int, float] = field(default_factory=dict)  # pid → its CPU seconds when last sampled
    total: dict[str, float] = field(default_factory=dict)
    problem: str | None = None

    async def sample(
        self, pg_dsn: str, redis_url: str, now: float, broker: str | None = None
    ) -> list[tuple[str, float, float]]:
        if now - self.refreshed >= self.REFRESH_S:
            self.refreshed = now
            try:
                self.pids = await asyncio.to_thread(_server_pids, pg_dsn, redis_url, broker)
            except Exception as exc:  # the server is restarting (a fault cell): keep the last known processes
                self.problem = str(exc)
        out = []
        for name, pids in self.pids.items():
            rss = 0.0
            for pid in pids:
                try:
                    p = psutil.Process(pid)
                    with p.oneshot():
                        t = p.cpu_times()
                        cpu = t.user + t.system
                        rss += p.memory_info().rss
                except psutil.Error:
                    continue
                self.total[name] = self.total.get(name, 0.0) + max(0.0, cpu - self.last.get(pid, cpu))
                self.last[pid] = cpu
            out.append((name, self.total.get(name, 0.0), rss))
        return out


def _server_pids(pg_dsn: str, redis_url: str, broker: str | None = None) -> dict[str, list[int]]:
    import psycopg
    import redis

    def named(pids: list[int], word: str) -> list[int]:
        keep = []
        for pid in pids:
            with contextlib.suppress(psutil.Error):
                if word in " ".join([psutil.Process(pid).name(), *psutil.Process(pid).cmdline()[:1]]):
                    keep.append(pid)
        return keep

    out: dict[str, list[int]] = {}
    with psycopg.connect(pg_dsn, connect_timeout=2, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE (datname = current_database() OR backend_type <> "
            "'client backend') AND pid <> pg_backend_pid()"
        ).fetchall()
    out["postgresql"] = named([r[0] for r in rows], "postgres")
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        info: Any = client.info("server")
        out["redis"] = named([int(info["process_id"])], "redis")
    finally:
        client.close()
    from urllib.parse import urlsplit

    from pipeline.queues.base import BROKER_URLS

    # the broker the run's queue variant uses (jetstream, rabbitmq): the local process listening on its port
    word, port = {"nats": ("nats-server", 4222), "rabbitmq": ("beam", 5672)}.get(broker or "", ("", 0))
    if broker and word and (url := BROKER_URLS.get(broker)):
        parts = urlsplit(url)
        if parts.hostname in ("127.0.0.1", "localhost"):
            out[broker] = named(_listening(parts.port or port), word)
    return {k: v for k, v in out.items() if v}


def _listening(port: int) -> list[int]:
    """The pids listening on TCP ``port`` on this machine."""
    with contextlib.suppress(psutil.Error):
        return sorted({c.pid for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr
                       and c.laddr.port == port and c.pid})  # fmt: skip
    return []


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    den = sum((x - mx) ** 2 for x in xs)
    return 0.0 if den == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / den


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
