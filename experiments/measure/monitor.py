"""What a repeat samples while it runs, at every poll of the orchestrator (≈ 0.25 s): CPU seconds and RSS of every
stage process and of the PostgreSQL and Redis servers serving the run, the Redis queue lengths, and each stage's
histogram scrapes (the measured window's Prometheus quantiles come from them: ``window.prometheus_data``)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import psutil
import redis.asyncio as aioredis

from experiments.measure.window import Snapshot, histograms_of
from pipeline.queues import QUEUES
from pipeline.wiring import FORWARD_SUFFIX

if TYPE_CHECKING:
    from harness.orchestrator import Orchestrator


def cpu_between(series: Sequence[Sequence[float]], a: float, b: float) -> float | None:
    """CPU seconds between instants ``a`` and ``b`` off a cumulative series of [t, cpu_s, …] (same time base), each
    end read by linear interpolation between the polls around it; None unless polls lie on both sides of both
    instants (a process that started or ended inside the window)."""

    def at(t: float) -> float | None:
        for p, q in itertools.pairwise(series):
            if p[0] <= t <= q[0]:
                return p[1] + (q[1] - p[1]) * ((t - p[0]) / (q[0] - p[0]) if q[0] > p[0] else 0.0)
        return None

    lo, hi = at(a), at(b)
    return hi - lo if lo is not None and hi is not None else None


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
                "cpu_s_window": self._cpu_between(s, window) if window is not None else None,
                "cpu_util_window": util,
                "peak_rss_bytes": int(max(x[2] for x in s)),
                "series": [[round(a, 3), round(b, 4), c] for a, b, c in s],
            }
        return out

    def _cpu_between(self, s: list[list[float]], window: tuple[float, float]) -> float | None:
        return cpu_between(s, window[0] - self.t0, window[1] - self.t0)

    def queue_growth(self, key: str, window: tuple[float, float] | None) -> float | None:
        """Least-squares slope (entries/s) of the queue's length inside ``window``."""
        s = self.queue_series.get(key, [])
        if window is not None:
            s = [x for x in s if window[0] <= x[0] + self.t0 <= window[1]]
        if len(s) < 3:
            return None
        return _slope([x[0] for x in s], [x[1] for x in s])


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
