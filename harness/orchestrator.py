"""Starts a pipeline as real processes, watches it, drains it in flow order, and accounts for every reading.

The runner and ``telemetry-bench live`` both use this. Order: consumers first (backend, forwarder, writers,
ingest — or the one ``node`` process), the generator last; at the end the generator stops first and every stage
drains in flow order before it is stopped. Ports are free ones chosen here and passed down as flags. Each child
runs in its own session, so a Ctrl-C reaches only the orchestrator, which then stops the children in order.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import grpc
import httpx
import orjson
import websockets
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness.plan import PipelineConfig
from harness.scrape import Scrape, parse, scrape
from harness.services import Services, ThrowawayRedis
from pipeline import db
from pipeline.config import BackendSettings
from pipeline.metrics import STAGES

log = logging.getLogger("telemetry_bench.orchestrator")

READY_TIMEOUT_S = 30.0
POLL_S = 0.25
STOP_TIMEOUT_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PipelineError(RuntimeError):
    pass


def queue_state(url: str, prefix: str, pause_s: float = 0.0) -> dict[str, str]:
    """Every key under ``prefix`` with its contents summarised (length, pending entries, value); ``pause_s``
    first pauses every client's writes for that long (``CLIENT PAUSE … WRITE``), so the summary stays true."""
    import redis

    client = redis.Redis.from_url(url, socket_timeout=5, decode_responses=True)
    try:
        if pause_s:
            client.client_pause(round(pause_s * 1000), all=False)
        state: dict[str, str] = {}
        for key in sorted(client.scan_iter(match=f"{prefix}*")):
            kind = str(client.type(key))
            if kind == "list":
                state[key] = f"list of {client.llen(key)}"
            elif kind == "stream":
                groups = client.xinfo_groups(key)
                pending = ", ".join(f"group {g['name']} {g['pending']} pending" for g in groups)
                state[key] = f"stream of {client.xlen(key)} ({pending or 'no group'})"
            elif kind == "string":
                state[key] = f"value {client.get(key)!s}"
            elif kind == "hash":
                state[key] = f"hash {client.hgetall(key)}"
            else:
                state[key] = kind
        return state
    finally:
        client.close()


@dataclass
class Stage:
    name: str
    argv: list[str]
    metrics_url: str | None
    log_path: Path
    stats_path: Path | None = None  # final counters, written by the stage on exit
    proc: subprocess.Popen[bytes] | None = None
    last: Scrape = field(default_factory=Scrape)
    carry: dict[str, int] = field(default_factory=dict)  # counters of earlier incarnations (killed, restarted)
    restarts: int = 0

    def start(self, env: dict[str, str]) -> None:
        self.env = env
        self.log_file = self.log_path.open("ab" if self.restarts else "wb")
        self.proc = subprocess.Popen(
            self.argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )

    def count(self, counter: str) -> int:
        """``telemetry_readings_total{stage=counter}`` over every incarnation of this stage (as last scraped)."""
        return self.last.readings(counter) + self.carry.get(counter, 0)

    async def kill_and_restart(self) -> None:
        """SIGKILL (no flush, no goodbye), then the same command again."""
        self.signal(signal.SIGKILL)
        await self.wait(10)
        for c in STAGES:
            self.carry[c] = self.carry.get(c, 0) + self.last.readings(c)
        self.last = Scrape()
        self.restarts += 1
        with contextlib.suppress(Exception):
            self.log_file.close()
        self.start(self.env)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.alive and time.monotonic() < end:
            await asyncio.sleep(0.05)
        rc = self.proc.poll() if self.proc else None
        if rc is not None and self.stats_path is not None and self.stats_path.exists():
            self.last = parse(self.stats_path.read_text())
        return rc

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait for a clean exit, SIGKILL after ``timeout``."""
        self.signal(signal.SIGTERM)
        rc = await self.wait(timeout)
        if self.alive:
            log.error("%s did not stop within %.0f s of SIGTERM: killed", self.name, timeout)
            self.signal(signal.SIGKILL)
            rc = await self.wait(5)
        with contextlib.suppress(Exception):
            self.log_file.close()
        return rc


@dataclass
class Accounting:
    generated: int = 0
    unsent: int = 0  # scheduled but never sent: the generator fell behind and stopped (not generated, not lost)
    ingested: int = 0
    queued: int = 0
    committed_counter: int = 0  # the writers' own count
    rows: int = 0  # rows in telemetry_data
    committed: int = 0  # distinct (sensor_id, sequence_number) in telemetry_data
    forwarded: int = 0
    received: int = 0  # accepted by the backend
    broadcast: int = 0  # sent to websocket clients, summed over clients
    ws_received: int = 0  # counted by our websocket clients, summed
    ws_clients: int = 0
    forwarding: bool = True
    broadcast_best_effort: bool = False  # the backend was killed: what it broadcast while down is gone by design

    @property
    def duplicated(self) -> int:
        return self.rows - self.committed

    @property
    def lost(self) -> int:
        return self.generated - self.committed

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} readings lost: generated {self.generated}, committed {self.committed}")
        if self.duplicated:
            out.append(f"{self.duplicated} duplicated rows in telemetry_data")
        if self.forwarding:
            if self.forwarded != self.generated:
                out.append(f"forwarded {self.forwarded} of {self.generated} readings")
            # our clients must each receive every forwarded reading; other clients (a dashboard someone opened)
            # may add to the backend's broadcast count
            want = self.forwarded * self.ws_clients
            if self.broadcast_best_effort:
                return out
            if self.broadcast < want:
                out.append(f"broadcast {self.broadcast}, expected at least {want} ({self.ws_clients} clients)")
            if self.ws_received != want:
                out.append(f"websocket clients received {self.ws_received}, expected {want}")
        return out

    def as_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d.update(duplicated=self.duplicated, lost=self.lost)
        return d


FAULTS = ("kill_writer", "kill_ingest", "kill_backend", "drop_grpc", "restart_postgres", "restart_redis")
REDIS_DOWN_S = 1.0  # restart_redis: how long the server stays down between its stop and its start


@dataclass
class Fault:
    """A fault injected ``at_s`` seconds after the generator started."""

    kind: str
    at_s: float = 2.0
    injected_at_ns: int | None = None
    restarted_at_ns: int | None = None
    resumed_at_ns: int | None = None  # first progress of the affected path after the fault
    note: str = ""  # why it was not injected
    detail: str = ""  # what the fault did (restart_redis: the queue keys it kept)

    @property
    def recovery_s(self) -> float | None:
        if self.injected_at_ns is None or self.resumed_at_ns is None:
            return None
        return (self.resumed_at_ns - self.injected_at_ns) / 1e9

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "at_s": self.at_s, "recovery_s": self.recovery_s, "note": self.note,
                "detail": self.detail, "injected": self.injected_at_ns is not None}  # fmt: skip


@dataclass
class RunResult:
    config: PipelineConfig
    accounting: Accounting
    started_ns: int
    stream_ended_ns: int
    drained_ns: int
    failures: list[str]
    ports: dict[str, int]
    fault: Fault | None = None

    @property
    def ok(self) -> bool:
        return not self.failures


class WsProbe:
    """A websocket client of the backend: counts the readings it receives and, per reading, when it arrived and
    how long after its intended time (end-to-end latency to a viewer, exact, from the same clock)."""

    def __init__(self, url: str, keep: int = 2_000_000) -> None:
        self.url, self.received, self.keep, self.reconnects = url, 0, keep, 0
        self.task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()
        self.arrivals: list[int] = []  # receive time, ns since the epoch, per reading (up to ``keep``)
        self.latencies: list[int] = []  # receive time - intended_ns, per reading (same order)
        self.intended: list[int] = []

    async def _run(self) -> None:
        attempt = 0
        while True:  # reconnect after the backend restarts (a fault cell): what it broadcast meanwhile is missed
            try:
                await self._receive()
                return
            except (OSError, websockets.exceptions.WebSocketException):
                if not self.connected.is_set() and attempt == 0:
                    raise
                self.reconnects += 1
                await asyncio.sleep(min(2.0, 0.05 * 2**attempt))
                attempt += 1

    async def _receive(self) -> None:
        async with websockets.connect(self.url, max_size=None) as ws:
            self.connected.set()
            async for message in ws:
                now = time.time_ns()
                obj = orjson.loads(message)
                readings = obj if isinstance(obj, list) else [obj]
                self.received += len(readings)
                if len(self.arrivals) < self.keep:
                    for r in readings:
                        intended = r.get("intended_ns")
                        if intended:
                            self.arrivals.append(now)
                            self.intended.append(intended)
                            self.latencies.append(now - intended)

    async def start(self) -> None:
        task = self.task = asyncio.create_task(self._run())
        done, _ = await asyncio.wait(
            {task, asyncio.ensure_future(self.connected.wait())}, timeout=READY_TIMEOUT_S,
            return_when=asyncio.FIRST_COMPLETED,
        )  # fmt: skip
        if task in done:
            task.result()  # raises the connection error
        if not self.connected.is_set():
            raise PipelineError(f"websocket {self.url.partition('&token=')[0]} did not connect")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.task


Progress = Callable[[dict[str, Any]], None]


class Monitor(Protocol):
    """Called at every poll of a run (about every POLL_S), e.g. to sample resources and queue lengths."""

    async def sample(self, orch: Orchestrator, snap: dict[str, Any]) -> None: ...


class Orchestrator:
    def __init__(
        self,
        cfg: PipelineConfig,
        services: Services,
        workdir: Path,
        *,
        schema: str = "public",
        queue_key: str = "queue:telemetry",
        python_prefix: Callable[[str], list[str]] | None = None,
        on_progress: Progress | None = None,
        monitor: Monitor | None = None,
        preferred_ports: dict[str, int] | None = None,
        fault: Fault | None = None,
        api_token: str | None = None,
    ) -> None:
        self.cfg, self.services, self.workdir, self.schema = cfg, services, workdir, schema
        self.queue_key = queue_key
        self.python_prefix = python_prefix or (lambda stage: [])
        self.on_progress = on_progress
        self.monitor = monitor
        if fault is not None and fault.kind not in FAULTS:
            raise ValueError(f"unknown fault {fault.kind!r}; valid faults: {', '.join(FAULTS)}")
        self.fault = fault
        # the backend's token, as the stages would read it (TELEMETRY_API_TOKEN or .env) unless given: the backend
        # and forwarder get it explicitly, and our websocket clients present it
        self.api_token = api_token if api_token is not None else BackendSettings().api_token
        self._db_committed = (0, 0.0)  # (count, when): the table's distinct readings, polled while a fault runs
        self._fault_base = 0
        self._own_redis: ThrowawayRedis | None = None  # restart_redis: the cell's private Redis
        self.ports: dict[str, int] = {}
        self.preferred_ports = preferred_ports or {}
        self.stages: dict[str, Stage] = {}
        self.probes: list[WsProbe] = []
        self.http = httpx.AsyncClient()

    # ----------------------------------------------------------------------------------------------- building
    def _port(self, name: str) -> int:
        """The preferred port for ``name`` if it is free (live runs: fixed ports, see prometheus.yml), else any."""
        if name not in self.ports:
            want = self.preferred_ports.get(name)
            if want is not None:
                with socket.socket() as s:
                    # as the servers bind (SO_REUSEADDR): a port whose last connections are in TIME_WAIT is free
                    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                    try:
                        s.bind(("127.0.0.1", want))
                    except OSError:
                        log.warning("port %d for %s is taken: using a free one", want, name)
                        want = None
            self.ports[name] = want if want is not None else free_port()
        return self.ports[name]

    def _stage(self, name: str, module: str, args: list[str]) -> Stage:
        port = self._port(f"{name}_metrics")
        stats = self.workdir / f"{name}.prom"
        argv = [sys.executable, *self.python_prefix(name), "-m", f"pipeline.{module}", *args,
                "--metrics-port", str(port), "--host", "127.0.0.1", "--stats-file", str(stats),
                "--histograms" if self.cfg.histograms else "--no-histograms"]  # fmt: skip
        stage = Stage(name, argv, f"http://127.0.0.1:{port}/metrics", self.workdir / f"{name}.log", stats)
        self.stages[name] = stage
        return stage

    def _common(self) -> list[str]:
        c = self.cfg
        return ["--pg-dsn", self.services.pg_dsn, "--redis-url", self.services.redis_url,
                "--db-schema", self.schema, "--queue", c.queue, "--queue-key", self.queue_key,
                "--queue-entry", c.queue_entry, "--queue-cap", str(c.effective_queue_cap)]  # fmt: skip

    def _stream_args(self) -> list[str]:
        c = self.cfg
        return ["--generator", f"127.0.0.1:{self.ports['generator']}", "--rpc", c.rpc, "--decoder", c.decoder,
                "--rate", str(c.rate), f"--{'' if c.max_rate else 'no-'}max-rate", "--sensors", str(c.sensors),
                "--count", str(c.count), "--duration", str(c.duration), "--seed", str(c.seed),
                "--readings-per-message", str(c.readings_per_message)]  # fmt: skip

    def _writer_args(self) -> list[str]:
        c = self.cfg
        return ["--sink", c.sink, "--batch-size", str(c.batch_size), "--flush-interval", str(c.flush_interval),
                "--dedupe" if c.dedupe else "--no-dedupe"]  # fmt: skip

    def _forwarder_args(self) -> list[str]:
        c = self.cfg
        return ["--forwarder", c.forwarder, "--backend-url", f"http://127.0.0.1:{self.ports.get('backend', 0)}",
                "--forward-batch", str(c.forward_batch), "--concurrency", str(c.concurrency)]  # fmt: skip

    def plan(self) -> list[Stage]:
        """The stages in start order (consumers first, generator last)."""
        c = self.cfg
        self._port("generator")
        order = []
        if c.forwarding:
            self._port("backend")
            backend = Stage(
                "backend",
                [sys.executable, *self.python_prefix("backend"), "-m", "pipeline.backend",
                 "--port", str(self.ports["backend"]), "--host", "127.0.0.1"],
                f"http://127.0.0.1:{self.ports['backend']}/metrics", self.workdir / "backend.log",
            )  # fmt: skip
            self.stages["backend"] = backend
            order.append(backend)
        if c.topology == "node":
            order.append(
                self._stage(
                    "node",
                    "node",
                    [
                        *self._common(),
                        *self._stream_args(),
                        *self._writer_args(),
                        *self._forwarder_args(),
                        "--workers",
                        str(c.workers),
                    ],
                )
            )
        else:
            fwd = ["--forward-from", c.forward_from] if c.forwarding else []
            if c.forwarding:
                order.append(self._stage("forwarder", "forwarder", [*self._common(), *self._forwarder_args()]))
            for i in range(c.workers):
                wfwd = fwd if c.forward_from == "writer" else []
                order.append(self._stage(f"writer-{i + 1}", "writer",
                                         [*self._common(), *self._writer_args(), "--consumer", f"writer-{i + 1}",
                                          *wfwd]))  # fmt: skip
            ifwd = fwd if c.forward_from == "ingest" else []
            order.append(self._stage("ingest", "ingest", [*self._common(), *self._stream_args(), *ifwd]))
        gen = ["--port", str(self.ports["generator"]), "--seed", str(c.seed)]
        if c.rpc == "seed":  # the seed RPC carries no parameters: the generator's flags set the stream
            gen += ["--rate", str(c.rate), "--sensors", str(c.sensors), "--count", str(c.count),
                    "--duration", str(c.duration)]  # fmt: skip
        order.append(self._stage("generator", "generator", gen))
        return order

    # ----------------------------------------------------------------------------------------------- running
    async def _ready(self, stage: Stage) -> None:
        end = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < end:
            if not stage.alive:
                raise PipelineError(f"{stage.name} exited during start-up:\n{stage.log_tail()}")
            if await self._answers(stage):
                return
            await asyncio.sleep(0.05)
        raise PipelineError(f"{stage.name} not ready after {READY_TIMEOUT_S:.0f} s:\n{stage.log_tail()}")

    async def _answers(self, stage: Stage) -> bool:
        try:
            if stage.name == "generator":
                async with grpc.aio.insecure_channel(f"127.0.0.1:{self.ports['generator']}") as ch:
                    resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            url = (f"http://127.0.0.1:{self.ports['backend']}/healthz" if stage.name == "backend"
                   else stage.metrics_url)  # fmt: skip
            assert url is not None
            return (await self.http.get(url, timeout=1)).status_code == 200
        except (httpx.HTTPError, grpc.RpcError):
            return False

    async def _scrape_all(self) -> None:
        for stage in self.stages.values():
            if stage.alive and stage.metrics_url:
                with contextlib.suppress(httpx.HTTPError):
                    stage.last = await scrape(self.http, stage.metrics_url)

    def _sum(self, stage_names: list[str], counter: str) -> int:
        return sum(self.stages[n].count(counter) for n in stage_names if n in self.stages)

    def snapshot(self) -> dict[str, Any]:
        writers = [n for n in self.stages if n.startswith("writer-") or n == "node"]
        ing = "node" if self.cfg.topology == "node" else "ingest"
        fwd = "node" if self.cfg.topology == "node" else "forwarder"
        return {
            # distinct readings: a resumed stream re-sends none, but the "generated" counter counts every send
            "generated": int(self.stages["generator"].last.get("generator_distinct_readings"))
            or self.stages["generator"].count("generated"),
            "ingested": self._sum([ing], "ingested"),
            "queued": self._sum([ing], "queued"),
            "committed": self._sum(writers, "committed"),
            "forwarded": self._sum([fwd], "forwarded"),
            "received": self._sum(["backend"], "received"),
            "broadcast": self._sum(["backend"], "broadcast"),
            "ws_received": sum(p.received for p in self.probes),
            "streams_completed": int(self.stages["generator"].last.get("generator_streams_total", event="completed")),
            "unsent": self.stages["generator"].count("unsent"),
        }

    async def _poll(self) -> dict[str, Any]:
        await self._scrape_all()
        if self.fault is not None and time.monotonic() - self._db_committed[1] >= 0.5:
            # with a stage killed, its counters die with it: the table is the truth for the drain
            with contextlib.suppress(Exception):
                counts = await asyncio.to_thread(db.table_counts, self.services.pg_dsn, self.schema)
                self._db_committed = (counts.distinct, time.monotonic())
        snap = self.snapshot()
        if self.fault is not None:
            snap["committed"] = self._db_committed[0]
            await self._watch_fault(snap)
        if self.on_progress:
            self.on_progress(snap)
        if self.monitor:
            await self.monitor.sample(self, snap)
        return snap

    def _check_alive(self, names: list[str]) -> None:
        for n in names:
            st = self.stages.get(n)
            if st and not st.alive:
                raise PipelineError(f"{n} exited with status {st.proc.poll() if st.proc else '?'}:\n{st.log_tail()}")

    async def _wait_for(self, what: str, done: Callable[[dict[str, Any]], bool], stall_s: float,
                        alive: list[str]) -> dict[str, Any]:  # fmt: skip
        """Poll until ``done``; give up when nothing moved for ``stall_s`` seconds."""
        snap = await self._poll()
        last, moved = snap, time.monotonic()
        while not done(snap):
            self._check_alive(alive)
            await asyncio.sleep(POLL_S)
            snap = await self._poll()
            if snap != last:
                last, moved = snap, time.monotonic()
            elif time.monotonic() - moved > stall_s:
                log.error("%s: no progress for %.0f s: %s", what, stall_s, snap)
                return snap
        return snap

    # ----------------------------------------------------------------------------------------------- faults
    def _fault_progress(self, snap: dict[str, Any]) -> int:
        kind = self.fault.kind if self.fault else ""
        if kind == "kill_ingest":
            return self._sum(["ingest"], "queued")
        if kind == "drop_grpc":
            return int(snap["ingested"])
        if kind == "kill_backend":
            return int(snap["forwarded"])
        return int(snap["committed"])

    async def _inject(self, snap: dict[str, Any]) -> None:
        f = self.fault
        assert f is not None
        f.injected_at_ns = time.time_ns()
        self._fault_base = self._fault_progress(snap)
        log.warning("fault: %s", f.kind)
        target = {"kill_writer": "writer-1", "kill_ingest": "ingest", "kill_backend": "backend"}.get(f.kind)
        if target is not None:
            stage = self.stages.get(target)
            if stage is None:
                raise PipelineError(f"fault {f.kind}: this topology has no {target} stage (use topology split)")
            await stage.kill_and_restart()
            await self._ready(stage)
            f.restarted_at_ns = time.time_ns()
        elif f.kind == "drop_grpc":
            self.stages["generator"].signal(signal.SIGUSR1)  # the generator aborts its streams (UNAVAILABLE)
        elif f.kind == "restart_redis":
            assert self._own_redis is not None
            own = self._own_redis
            try:
                # writes are paused while the state is read, so the server stops with exactly that state; what
                # it reloads is read on a private socket before the stages can reach it
                before = await asyncio.to_thread(queue_state, own.url, self.queue_key, pause_s=REDIS_DOWN_S + 5)
                after = await asyncio.to_thread(own.restart, REDIS_DOWN_S, lambda url: queue_state(url, self.queue_key))
            except Exception as exc:  # a Redis error, a server that did not come back: this cell fails, not the run
                raise PipelineError(f"fault restart_redis: {type(exc).__name__}: {exc}") from None
            f.restarted_at_ns = time.time_ns()
            if after != before:
                raise PipelineError(f"fault restart_redis: Redis came back with {after}, not {before}")
            kept = "; ".join(f"{k}: {v}" for k, v in before.items()) or "no keys"
            f.detail = f"Redis {own.version} with AOF, down {REDIS_DOWN_S:g} s, came back with every key: {kept}"
        elif f.kind == "restart_postgres":
            if self.services.pg_source != "local":
                source = self.services.pg_source
                f.note = f"not injected: only a local PostgreSQL cluster is restarted (this one is {source})"
                f.injected_at_ns = None
                return
            versions = sorted(Path("/etc/postgresql").iterdir(), key=lambda p: p.name)
            cmd = ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1].name, "main", "restart"]
            proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=60)
            if proc.returncode != 0:
                raise PipelineError(f"fault restart_postgres: {' '.join(cmd)} failed: {proc.stderr.strip()}")
            f.restarted_at_ns = time.time_ns()

    async def _watch_fault(self, snap: dict[str, Any]) -> None:
        f = self.fault
        if f is None or f.injected_at_ns is None or f.resumed_at_ns is not None:
            return
        if f.kind == "drop_grpc" and f.restarted_at_ns is None:
            drops = self.stages["ingest"].last.get("telemetry_errors_total", stage="ingest", kind="stream_dropped")
            if drops >= 1:
                f.restarted_at_ns = time.time_ns()
                self._fault_base = self._fault_progress(snap)
            return
        if f.restarted_at_ns is not None and self._fault_progress(snap) > self._fault_base:
            f.resumed_at_ns = time.time_ns()

    async def run(self, stop_requested: asyncio.Event | None = None) -> RunResult:
        """Run the pipeline once: start, stream, (inject the fault,) drain, stop, account."""
        if self.fault is None or self.fault.kind != "restart_redis":
            return await self._run(stop_requested or asyncio.Event())
        # never the machine's Redis: a private server with an append-only file, which a restart brings back
        # (a short directory: unix socket paths are limited to about 100 bytes)
        root = Path(tempfile.mkdtemp(prefix="tb-redis-"))
        own = self._own_redis = ThrowawayRedis(root, persistent=True)

        def cleanup() -> None:
            own.stop()
            shutil.rmtree(root, ignore_errors=True)

        atexit.register(cleanup)  # should the harness be stopped before the finally below runs
        try:
            await asyncio.to_thread(own.start)
            self.services = dataclasses.replace(self.services, redis_url=own.url, redis_source="embedded")
            log.info("restart_redis: the cell runs on its own Redis %s (AOF on) in %s", own.version, root)
            return await self._run(stop_requested or asyncio.Event())
        finally:
            await asyncio.to_thread(cleanup)
            atexit.unregister(cleanup)

    async def _run(self, stop_requested: asyncio.Event) -> RunResult:
        c = self.cfg
        self.workdir.mkdir(parents=True, exist_ok=True)
        db.apply_schema(self.services.pg_dsn, self.schema, fresh=True, unique=c.dedupe)
        await self._clear_queues()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}  # flags say everything
        if self.api_token:
            env["TELEMETRY_API_TOKEN"] = self.api_token
        order = self.plan()
        failures: list[str] = []
        started = stream_ended = drained = time.time_ns()
        try:
            # consumers start together (the backend first: the forwarder needs it), then the generator
            consumers = [s for s in order if s.name != "generator"]
            for stage in consumers:
                stage.start(env)
            await asyncio.gather(*(self._ready(s) for s in consumers))
            for _ in range(c.ws_clients if c.forwarding else 0):
                token = f"&token={quote(self.api_token)}" if self.api_token else ""
                probe = WsProbe(f"ws://127.0.0.1:{self.ports['backend']}/ws?client_id=probe&batch=1{token}")
                await probe.start()
                self.probes.append(probe)
            generator = self.stages["generator"]
            generator.start(env)
            await self._ready(generator)
            started = time.time_ns()
            log.debug("pipeline running: %s", self.ports)
            everyone = [s.name for s in order if s.name != "ingest"]
            # 1. until the stream has ended (count/duration) or a stop is asked for; a fault cell injects its fault
            while not stop_requested.is_set():
                snap = await self._poll()
                f = self.fault
                due = f is not None and f.injected_at_ns is None and not f.note
                if due and f is not None and time.time_ns() - started >= f.at_s * 1e9:
                    await self._inject(snap)
                    continue
                if snap["streams_completed"] >= 1 and (f is None or f.injected_at_ns is not None or f.note):
                    break
                self._check_alive(everyone)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_requested.wait(), POLL_S)
            # 2. the generator stops first (its streams end cleanly), then each stage drains in flow order
            await self._poll()
            await self.stages["generator"].stop()
            stream_ended = time.time_ns()
            stall = c.flush_interval + 10.0
            ing = "node" if c.topology == "node" else "ingest"
            if c.topology == "split":
                # ingest exits at the end of the stream once it has queued everything (it may wait on the queue's
                # cap while the writers drain): wait as long as it makes progress
                ingest = self.stages["ingest"]
                await self._wait_for("ingest", lambda s: not ingest.alive, stall, [])
                rc = await ingest.wait(0.1)
                if rc is None:
                    failures.append("ingest made no progress and did not finish its stream: stopped")
                    await ingest.stop()
                elif rc != 0:
                    failures.append(f"ingest exited with status {rc}:\n{self.stages['ingest'].log_tail()}")
            else:
                await self._wait_for("ingest", lambda s: s["ingested"] >= s["generated"], stall, [ing])
            generated = self.snapshot()["generated"]
            await self._wait_for("writers", lambda s: s["committed"] >= generated, stall, [])
            if c.forwarding:
                await self._wait_for("forwarder", lambda s: s["forwarded"] >= generated, stall, [])
                await self._wait_for(
                    "broadcast", lambda s: s["ws_received"] >= s["forwarded"] * len(self.probes), 10.0, []
                )
            drained = time.time_ns()
            await self._poll()
            for name in [ing, *[n for n in self.stages if n.startswith("writer-")], "forwarder"]:
                if name in self.stages and name != "ingest":
                    rc = await self.stages[name].stop()
                    if rc not in (0, None):
                        failures.append(f"{name} exited with status {rc}:\n{self.stages[name].log_tail()}")
        except PipelineError as exc:
            failures.append(str(exc))
        finally:
            await self._shutdown()
        acct = self._account()
        if self.fault is not None and self.fault.kind == "kill_backend":
            acct.broadcast_best_effort = True
        failures.extend(acct.problems())
        return RunResult(c, acct, started, stream_ended, drained, failures, dict(self.ports), self.fault)

    async def _clear_queues(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.services.redis_url)
        try:  # the queue, the forward queue, ingest's progress, reliable lists' processing lists
            keys = [k async for k in client.scan_iter(match=f"{self.queue_key}*")]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()

    async def _shutdown(self) -> None:
        for probe in self.probes:
            await probe.stop()
        for stage in reversed(list(self.stages.values())):
            if stage.alive:
                if stage.name == "backend":
                    with contextlib.suppress(Exception):
                        stage.last = await scrape(self.http, stage.metrics_url or "")
                await stage.stop()
        await self.http.aclose()

    def _account(self) -> Accounting:
        snap = self.snapshot()
        try:
            counts = db.table_counts(self.services.pg_dsn, self.schema)
        except Exception as exc:  # the DB itself is gone: say so, account nothing as committed
            log.error("could not count telemetry_data: %s", exc)
            counts = db.TableCounts(0, 0)
        return Accounting(
            generated=snap["generated"], unsent=snap["unsent"], ingested=snap["ingested"], queued=snap["queued"],
            committed_counter=snap["committed"], rows=counts.rows, committed=counts.distinct,
            forwarded=snap["forwarded"], received=snap["received"], broadcast=snap["broadcast"],
            ws_received=snap["ws_received"], ws_clients=len(self.probes), forwarding=self.cfg.forwarding,
        )  # fmt: skip
