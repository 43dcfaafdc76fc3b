"""Faults injected mid-run (``kill_writer`` … ``restart_redis``): what each does, when the affected path moved again
(recovery), and the Redis state a ``restart_redis`` must bring back. Cells set ``fault`` and either ``fault_at_s``
(a fixed time) or nothing / ``fault_between`` (a time drawn per repeat from a seeded uniform distribution over a
share of the stream, ``draw_at_s``; the seed and the interval are recorded with the fault)."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import hashlib
import logging
import random
import shutil
import signal
import statistics
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, computed_field, field_validator, model_validator

from harness import fault_kinds
from harness.process import PipelineError, Stage
from harness.servers import ThrowawayRedis
from harness.services import Services
from pipeline.endpoints import redact_dsn
from pipeline.queues import QUEUES, Queue
from pipeline.wiring import FORWARD_SUFFIX

if TYPE_CHECKING:
    from harness.plan import PipelineConfig

log = logging.getLogger("telemetry_bench.orchestrator")

FAULTS = ("kill_writer", "kill_ingest", "kill_backend", "drop_grpc", "restart_postgres", "restart_redis",
          "refuse_pg", "lock_table", "pause_writer", "redis_full", "backend_503", "chaos")  # fmt: skip
CHAOS = ("kill_writer", "kill_ingest", "drop_grpc", "lock_table")  # chaos's default kinds: they combine safely
# held for a while, then undone (harness.fault_kinds)
TIMED = ("refuse_pg", "lock_table", "pause_writer", "redis_full", "backend_503")
NEEDS_BACKEND = ("kill_backend", "backend_503")  # kinds that strike the backend: the run must forward to one
REDIS_DOWN_S = 1.0  # restart_redis: how long the server stays down between its stop and its start
KILLS = {"kill_writer": "writer-1", "kill_ingest": "ingest", "kill_backend": "backend"}  # fault → stage
FAULT_MIN_REPEATS = 5  # a fault cell at random moments takes at least this many repeats
FAULT_BETWEEN = (0.15, 0.5)  # default: a fault strikes between these fractions of the stream's generation time


def draw_at_s(seed: int, key: str, index: int, lo_s: float, hi_s: float) -> float:
    """A repeat's fault time, uniform in ``[lo_s, hi_s]``: the same (seed, key, index) always draws the same time
    (``key`` is the cell's id, ``index`` the repeat's), so a run is reproducible from its recorded seed."""
    if not 0 <= lo_s <= hi_s:
        raise ValueError(f"fault window [{lo_s}, {hi_s}] s: need 0 ≤ lo ≤ hi")
    digest = hashlib.sha256(f"{seed}:{key}:{index}".encode()).digest()  # one well-mixed integer per repeat
    return round(random.Random(int.from_bytes(digest[:8], "big")).uniform(lo_s, hi_s), 3)


class Fault(BaseModel):
    """A fault injected ``at_s`` seconds after the stream is flowing (the first reading is in the table, so every
    stage holds readings when it strikes). ``Fault("kill_writer", 1.5)`` or by keyword.

    In ``results.json``: kind, at_s, recovery_s, note, detail, injected, seed and drawn_from_s (a random moment).
    The instants (ns since the epoch) stay out
    of it; read back, they are relative (injected at 0), which keeps ``recovery_s`` and ``injected``."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    at_s: float = 2.0
    injected_at_ns: int | None = Field(None, exclude=True)
    restarted_at_ns: int | None = Field(None, exclude=True)
    resumed_at_ns: int | None = Field(None, exclude=True)  # first progress of the affected path after the fault
    note: str = ""  # why it was not injected
    detail: str = ""  # what the fault did (restart_redis: the queue keys it kept)
    seed: int | None = None  # at a random moment: the seed at_s was drawn with (``draw_at_s``)
    drawn_from_s: tuple[float, float] | None = None  # … and the interval it was drawn from (s after the start)
    parts: list[Fault] = Field(default_factory=list)  # chaos: its faults, each at its own moment

    def __init__(self, kind: str | None = None, at_s: float | None = None, /, **data: Any) -> None:
        if kind is not None:
            data["kind"] = kind
        if at_s is not None:
            data["at_s"] = at_s
        super().__init__(**data)

    @field_validator("kind")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in FAULTS:
            raise ValueError(f"unknown fault {v!r}; valid faults: {', '.join(FAULTS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _from_results(cls, data: Any) -> Any:
        """``injected`` / ``recovery_s`` as stored in results.json → relative instants."""
        if isinstance(data, dict) and ("injected" in data or "recovery_s" in data):
            data = dict(data)
            injected, recovery = data.pop("injected", False), data.pop("recovery_s", None)
            if injected or recovery is not None:
                data.setdefault("injected_at_ns", 0)
                if recovery is not None:
                    data.setdefault("resumed_at_ns", data["injected_at_ns"] + round(recovery * 1e9))
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def recovery_s(self) -> float | None:
        if self.injected_at_ns is None or self.resumed_at_ns is None:
            return None
        return (self.resumed_at_ns - self.injected_at_ns) / 1e9

    @computed_field  # type: ignore[prop-decorator]
    @property
    def injected(self) -> bool:
        return self.injected_at_ns is not None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()

    @classmethod
    def drawn(cls, kind: str, seed: int, key: str, index: int, lo_s: float, hi_s: float) -> Fault:
        """A fault at a random moment of ``[lo_s, hi_s]`` (``draw_at_s``), its seed and interval recorded."""
        at = draw_at_s(seed, key, index, lo_s, hi_s)
        return cls(kind, at, seed=seed, drawn_from_s=(round(lo_s, 3), round(hi_s, 3)))


class Recovery(BaseModel):
    """A fault cell's recovery times over its repeats (results.json: ``summary.recovery``): how many repeats had
    the fault, how many were injected and recovered, the median, min and max recovery time, and each one."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    repeats: int
    injected: int
    recovered: int  # injected, and the affected path moved again before the run ended
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    values_s: list[float] = Field(default_factory=list)  # in repeat order
    at_s: list[float] = Field(default_factory=list)  # each injected repeat's fault time (drawn, or fixed)
    seed: int | None = None


def recovery_of(faults: list[Fault]) -> Recovery | None:
    """The recovery distribution of one cell's faults (one per repeat), or None without any."""
    if not faults:
        return None
    injected = [f for f in faults if f.injected]
    values = [round(f.recovery_s, 3) for f in injected if f.recovery_s is not None]
    return Recovery(
        kind=faults[0].kind,
        repeats=len(faults),
        injected=len(injected),
        recovered=len(values),
        median_s=round(statistics.median(values), 3) if values else None,
        min_s=min(values, default=None),
        max_s=max(values, default=None),
        values_s=values,
        at_s=[f.at_s for f in injected],
        seed=faults[0].seed,
    )


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


class Pipeline(Protocol):
    """What an injection needs of the running pipeline (the orchestrator)."""

    cfg: PipelineConfig
    services: Services
    queue_key: str
    schema: str
    stages: dict[str, Stage]

    async def ready(self, stage: Stage) -> None: ...

    def total(self, stage_names: list[str], counter: str) -> int: ...


class Injection:
    """Injects one fault into a running pipeline at its time, and watches for the affected path to move again."""

    def __init__(self, fault: Fault) -> None:
        self.fault = fault
        self._base = 0  # the affected path's progress when the fault hit
        self.own_redis: ThrowawayRedis | None = None  # restart_redis: the cell's private Redis
        self.own_role: str | None = None  # refuse_pg: the cell's own PostgreSQL role
        self.admin_dsn = ""  # the harness's own PostgreSQL connection (not the cell's role)
        self._undo: asyncio.Task[None] | None = None  # a timed fault, held until it is undone
        self._flowing_ns: int | None = None  # when the first reading was seen in the table
        self.parts = [Injection(part) for part in fault.parts]  # chaos: one injection per fault, overlaps allowed

    @property
    def backend_hook(self) -> bool:
        """Whether the backend must start with its fault hook (``--fault-hook``): a ``backend_503`` is to come."""
        return self.fault.kind == "backend_503" or any(part.backend_hook for part in self.parts)

    def due(self, started_ns: int) -> bool:
        """Whether to inject now: ``at_s`` after the first reading reached the table (a fault that strikes the
        backend: was forwarded), not after the generator's start (``started_ns``, unused): a stream's start-up time
        varies, its flow is what the fault must hit."""
        f, flowing = self.fault, self._flowing_ns
        if self.parts:
            return any(part.due(started_ns) for part in self.parts)
        return (
            f.injected_at_ns is None and not f.note and flowing is not None and time.time_ns() - flowing >= f.at_s * 1e9
        )

    @property
    def settled(self) -> bool:
        """Injected (and, a timed fault, undone), or not injected for a stated reason: the run may end."""
        if self.parts:
            return all(part.settled for part in self.parts)
        return (self.fault.injected_at_ns is not None and (self._undo is None or self._undo.done())) or bool(
            self.fault.note
        )

    def _progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        kind = self.fault.kind
        if kind == "kill_ingest":
            return p.total(["ingest"], "queued")
        if kind == "drop_grpc":
            return int(snap["ingested"])
        if kind in NEEDS_BACKEND:
            return int(snap["forwarded"])
        if kind == "pause_writer":  # the paused writer's own commits
            return p.total([fault_kinds.PAUSED], "committed")
        return int(snap["committed"])

    async def inject(self, p: Pipeline, snap: dict[str, Any]) -> None:
        f = self.fault
        if self.parts:  # chaos: every part that is due (the others at their own moments)
            for part in self.parts:
                if part.due(0):
                    await part.inject(p, snap)
            self._chaos_times()
            return
        f.injected_at_ns = time.time_ns()
        self._base = self._progress(p, snap)
        log.warning("fault: %s", f.kind)
        target = KILLS.get(f.kind)
        if target is not None:
            stage = p.stages.get(target)
            if stage is None:
                raise PipelineError(f"fault {f.kind}: this topology has no {target} stage (use topology split)")
            await stage.kill_and_restart()
            await p.ready(stage)
            f.restarted_at_ns = time.time_ns()
        elif f.kind == "drop_grpc":
            p.stages["generator"].signal(signal.SIGUSR1)  # the generator aborts its streams (UNAVAILABLE)
        elif f.kind == "restart_redis":
            await self._restart_redis(p)
        elif f.kind == "restart_postgres":
            await self._restart_postgres(p)
        elif f.kind in TIMED:
            self._undo = asyncio.create_task(self._timed(p))

    async def _timed(self, p: Pipeline) -> None:
        """A timed fault (``harness.fault_kinds``), held for its time; undone, the affected path may move again."""
        f = self.fault
        if f.kind == "refuse_pg":
            assert self.own_role is not None
            await fault_kinds.refuse_pg(p, f, self.admin_dsn, self.own_role)
        elif f.kind == "lock_table":
            await fault_kinds.lock_table(p, f, self.admin_dsn, p.schema)
        elif f.kind == "pause_writer":
            await fault_kinds.pause_writer(p, f)
        elif f.kind == "redis_full":
            await fault_kinds.redis_full(p, f)
        elif f.kind == "backend_503":
            await fault_kinds.backend_503(p, f)
        f.restarted_at_ns = time.time_ns()

    async def _restart_redis(self, p: Pipeline) -> None:
        f, own = self.fault, self.own_redis
        assert own is not None
        try:
            # writes are paused while the state is read, so the server stops with exactly that state; what
            # it reloads is read on a private socket before the stages can reach it
            q = p.cfg.queue
            before = await asyncio.to_thread(queue_state, own.url, p.queue_key, q, pause_s=REDIS_DOWN_S + 5)
            after = await asyncio.to_thread(own.restart, REDIS_DOWN_S, lambda url: queue_state(url, p.queue_key, q))
        except Exception as exc:  # a Redis error, a server that did not come back: this cell fails, not the run
            raise PipelineError(f"fault restart_redis: {type(exc).__name__}: {exc}") from None
        f.restarted_at_ns = time.time_ns()
        if after != before:
            raise PipelineError(f"fault restart_redis: Redis came back with {after}, not {before}")
        kept = "; ".join(f"{k}: {v}" for k, v in before.items()) or "no keys"
        f.detail = f"Redis {own.version} with AOF, down {REDIS_DOWN_S:g} s, came back with every key: {kept}"

    async def _restart_postgres(self, p: Pipeline) -> None:
        f = self.fault
        cluster = local_cluster(p.services.pg_dsn) if p.services.pg_source != "embedded" else None
        if cluster is None:
            source = p.services.pg_source
            f.note = (f"not injected: only a local PostgreSQL cluster (pg_lsclusters) is restarted, and this run's "
                      f"({source}, {redact_dsn(p.services.pg_dsn)}) is not one")  # fmt: skip
            f.injected_at_ns = None
            return
        cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, "restart"]
        proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            raise PipelineError(f"fault restart_postgres: {' '.join(cmd)} failed: {proc.stderr.strip()}")
        f.restarted_at_ns = time.time_ns()

    def _chaos_times(self) -> None:
        """Chaos: injected at its first fault; recovered when every injected fault's path moved again."""
        f, parts = self.fault, [part.fault for part in self.parts]
        injected = [x.injected_at_ns for x in parts if x.injected_at_ns is not None]
        f.injected_at_ns = min(injected) if injected else None
        if all(x.resumed_at_ns is not None or x.note for x in parts) and injected:
            f.resumed_at_ns = max(x.resumed_at_ns or 0 for x in parts)
        f.note = "; ".join(f"{x.kind} {x.note}" for x in parts if x.note) if not injected else ""
        f.detail = "; ".join(f"{x.kind} at {x.at_s:g} s: {x.detail or 'done'}" for x in parts if x.injected)

    async def watch(self, p: Pipeline, snap: dict[str, Any]) -> None:
        """At every poll: note when the affected path moves again after the fault (its recovery)."""
        f = self.fault
        if self.parts:
            for part in self.parts:
                await part.watch(p, snap)
            self._chaos_times()
            return
        if self._undo is not None and self._undo.done() and not self._undo.cancelled() and self._undo.exception():
            exc = self._undo.exception()
            raise PipelineError(f"fault {f.kind}: {type(exc).__name__}: {exc}")
        # the flow the fault must hit: the backend's, forwarding (it may run ahead of, or behind, the commits)
        path = "forwarded" if f.kind in NEEDS_BACKEND else "committed"
        if self._flowing_ns is None and int(snap[path]) > 0:
            self._flowing_ns = time.time_ns()
        if f.injected_at_ns is None and not f.note and int(snap["streams_completed"]) >= 1:
            f.note = f"not injected: the stream ended before {f.at_s:g} s of flow"
        if f.injected_at_ns is None or f.resumed_at_ns is not None:
            return
        if f.kind == "drop_grpc" and f.restarted_at_ns is None:
            drops = p.stages["ingest"].last.get("telemetry_errors_total", stage="ingest", kind="stream_dropped")
            if drops >= 1:
                f.restarted_at_ns = time.time_ns()
                self._base = self._progress(p, snap)
            return
        if f.restarted_at_ns is not None and self._progress(p, snap) > self._base:
            f.resumed_at_ns = time.time_ns()

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        """What the fault needs around the whole run: its own Redis (``restart_redis``), its own PostgreSQL role
        (``refuse_pg``); and a timed fault undone (SIGCONT, logins allowed, lock released) whatever happens."""
        self.admin_dsn = p.services.pg_dsn
        async with contextlib.AsyncExitStack() as stack:
            for part in self.parts:
                await stack.enter_async_context(part.around_run(p))
            if self.fault.kind in ("restart_redis", "redis_full"):
                await stack.enter_async_context(self._own_redis(p, persistent=self.fault.kind == "restart_redis"))
            if self.fault.kind == "refuse_pg":
                self.own_role = await stack.enter_async_context(fault_kinds.own_role(p))
            try:
                yield
            finally:
                if self._undo is not None:
                    with contextlib.suppress(Exception):
                        await self._undo  # the run ended early: still undo the fault

    @contextlib.asynccontextmanager
    async def _own_redis(self, p: Pipeline, persistent: bool) -> AsyncIterator[None]:
        """restart_redis, redis_full: never the machine's Redis; the cell runs on a private server (restart_redis:
        with an append-only file, which a restart brings back; a short directory: unix socket paths are limited to
        about 100 bytes)."""
        root = Path(tempfile.mkdtemp(prefix="tb-redis-"))
        own = self.own_redis = ThrowawayRedis(root, persistent=persistent)

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
