"""What several fault kinds share: a stage killed and restarted (``Kill``), the cell's own throwaway Redis
(``OwnRedis``), the queue's state in Redis (``queue_state``), the machine's own PostgreSQL cluster
(``local_cluster``)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import ClassVar

from harness.faults.base import Fault, FaultKind, Pipeline
from harness.servers import ThrowawayRedis
from pipeline.queues import QUEUES, Queue
from pipeline.wiring import FORWARD_SUFFIX

log = logging.getLogger("telemetry_bench.orchestrator")


class Kill(FaultKind):
    """A stage killed (SIGKILL) and started again with the same command; recovered when its path moves again.
    ``stage``: the kind's first process; the fault's own ``stage`` picks another of the same kind, or ``any``."""

    struck: str | None = None  # the process this strike killed (``FaultKind.target``)

    async def strike(self, p: Pipeline) -> None:
        self.struck = self.target(p)
        stage = p.stages[self.struck]
        if self.fault.stage:
            self.fault.detail = f"killed {self.struck}"
        await stage.kill_and_restart()
        await p.ready(stage)
        self.fault.restarted_at_ns = time.time_ns()


class OwnRedis(FaultKind):
    """A kind that runs the cell on a private Redis, never the machine's (``persistent``: with an append-only file,
    which a restart brings back; a short directory: unix socket paths are limited to about 100 bytes)."""

    persistent: ClassVar[bool] = False

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault)
        self.own_redis: ThrowawayRedis | None = None

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        root = Path(tempfile.mkdtemp(prefix="tb-redis-"))
        own = self.own_redis = ThrowawayRedis(root, persistent=self.persistent)

        def cleanup() -> None:
            own.stop()
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(cleanup)  # should the harness be stopped before the finally below runs
        try:
            await asyncio.to_thread(own.start)
            p.services = dataclasses.replace(p.services, redis_url=own.url, redis_source="embedded")
            log.info("%s: the cell runs on its own Redis %s in %s", self.fault.kind, own.version, root)
            yield
        finally:
            await asyncio.to_thread(cleanup)
            atexit.unregister(cleanup)


def queue_state(url: str, prefix: str, queue: str, pause_s: float = 0.0) -> dict[str, str]:
    """Every key under ``prefix`` with its contents in one line: the writer and forward queues as their variant
    ``queue`` summarises them (``Queue.summary``), any other key (ingest's stream position) by its value.
    ``pause_s`` first pauses every client's writes for that long (``CLIENT PAUSE … WRITE``), so the summary stays
    true. Synchronous (it runs its own event loop): called from a thread, around a Redis restart."""
    return asyncio.run(_queue_state(url, prefix, QUEUES[queue], pause_s))


async def _queue_state(url: str, prefix: str, queue: type[Queue], pause_s: float) -> dict[str, str]:
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    try:
        if pause_s:
            await client.client_pause(round(pause_s * 1000), all=False)
        state: dict[str, str] = {}
        for key in (prefix, prefix + FORWARD_SUFFIX):
            state.update(await queue.summary(client, key))
        for key in sorted([k async for k in client.scan_iter(match=f"{prefix}*")]):
            if key in state:
                continue
            kind = str(await client.type(key))
            if kind == "string":
                state[key] = f"value {await client.get(key)!s}"
            elif kind == "hash":
                state[key] = f"hash {await client.hgetall(key)}"
            else:  # a queue key its variant did not claim
                state[key] = kind
        return dict(sorted(state.items()))
    finally:
        await client.aclose()


def local_cluster(dsn: str) -> tuple[str, str] | None:
    """(version, name) of the machine's own PostgreSQL cluster that serves ``dsn`` (a loopback host or a socket, and
    the port a cluster of ``pg_lsclusters`` listens on); None if there is no such cluster (or no Debian tools)."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        info = conninfo_to_dict(dsn)
        out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError, ValueError):
        return None
    host, port = str(info.get("host") or ""), str(info.get("port") or 5432)
    if host not in ("", "localhost", "127.0.0.1", "::1") and not host.startswith("/"):
        return None
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[2] == port:
            return parts[0], parts[1]
    return None
