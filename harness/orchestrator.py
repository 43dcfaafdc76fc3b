"""Starts a pipeline as real processes, watches it, drains it in flow order, and accounts for every reading.

The runner and ``telemetry-bench live`` both use this. Order: consumers first (backend, forwarder, writers,
ingest — or the one ``node`` process), the generator last; at the end the generator stops first and every stage
drains in flow order before it is stopped. Ports are free ones chosen here and passed down as flags (built by
``harness.argv``). Each child runs in its own session, so a Ctrl-C reaches only the orchestrator, which then stops
the children in order. Process handles: ``harness.process``; faults: ``harness.faults``; the accounting:
``harness.accounting``; the websocket probe: ``harness.probes``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc

from harness import argv
from harness.accounting import Accounting, RunResult, Uncommitted
from harness.faults import FAULTS, Fault, Injection
from harness.lifeline import RunRecord, raise_if_cancelled
from harness.plan import PipelineConfig
from harness.probes import WsProbe
from harness.process import POLL_S, READY_TIMEOUT_S, PipelineError, Stage, free_port
from harness.scrape import Scrape, scrape
from harness.services import Services
from harness.supervisor import Supervisor
from pipeline import db
from pipeline.config import BackendSettings
from pipeline.knobs import Stage as StageKind
from pipeline.queues import QUEUES
from pipeline.registry import PLUGINS_ENV
from pipeline.rows import COLUMNS
from pipeline.wiring import FORWARD_SUFFIX

if TYPE_CHECKING:  # imports ray: only a run given a cluster loads it
    from harness.cluster.placement import Placement

__all__ = ["FAULTS", "Accounting", "Fault", "Monitor", "Orchestrator", "PipelineError", "RunResult", "Stage"]

log = logging.getLogger("telemetry_bench.orchestrator")

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
        supervisor: Supervisor | None = None,
        placement: Placement | None = None,
    ) -> None:
        self.cfg, self.services, self.workdir, self.schema = cfg, services, workdir, schema
        self.queue_key = queue_key
        self.python_prefix = python_prefix or (lambda stage: [])
        self.on_progress = on_progress
        self.monitor = monitor
        self.fault = fault  # its kind is checked by Fault itself
        self.injection = Injection(fault) if fault is not None else None
        # live: a stage that dies is restarted (harness.supervisor); without one, a dead stage ends the run
        self.supervisor = supervisor
        # stages on the hosts of a Ray cluster (harness.cluster); None: local processes, as always
        self.placement = placement
        self._generator_stopped = False
        # the backend's token, as the stages would read it (TELEMETRY_API_TOKEN or .env) unless given: the backend
        # and forwarder get it explicitly, and our websocket clients present it
        self.api_token = api_token if api_token is not None else BackendSettings().api_token
        self._db_committed = (0, 0.0)  # (count, when): the table's distinct readings, polled while a fault runs
        self.ports: dict[str, int] = {}
        self.preferred_ports = preferred_ports or {}
        self.stages: dict[str, Stage] = {}
        self.record: RunRecord | None = None  # written when the run starts (harness.lifeline)
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
            if self.placement is not None:  # a free port on the stage's host
                want = self.placement.free_port(name.removesuffix("_metrics"))
            self.ports[name] = want if want is not None else free_port()
        return self.ports[name]

    def host(self, name: str) -> str:
        """The address stage ``name`` binds and is reached at: its node's own address on a cluster."""
        return self.placement.ip_of(name) if self.placement is not None else "127.0.0.1"

    def _new_stage(self, name: str, cmd: list[str], metrics_url: str, stats: Path | None) -> Stage:
        log_path = self.workdir / f"{name}.log"
        if self.placement is not None:
            return self.placement.stage(name, cmd, metrics_url, log_path, stats)
        return Stage(name, cmd, metrics_url, log_path, stats)

    def _stage(self, name: str, stage: StageKind, wiring: dict[str, object]) -> Stage:
        """A pipeline stage's process: its plan knobs and ``wiring`` as flags (``harness.argv``)."""
        port = self._port(f"{name}_metrics")
        stats = self.workdir / f"{name}.prom"
        wiring = {**wiring, "metrics_port": port, "host": self.host(name), "stats_file": str(stats)}
        cmd = [sys.executable, *self.python_prefix(name), "-m", f"pipeline.{stage}",
               *argv.stage_argv(self.cfg, stage, wiring)]  # fmt: skip
        st = self._new_stage(name, cmd, f"http://{self.host(name)}:{port}/metrics", stats)
        st.record = self.record
        self.stages[name] = st
        return st

    def _services(self) -> dict[str, object]:
        return {"pg_dsn": self.services.pg_dsn, "redis_url": self.services.redis_url, "db_schema": self.schema,
                "queue_key": self.queue_key, **self.services.queue_wiring(self.cfg.queue)}  # fmt: skip

    def _pubsub(self, *, with_redis: bool = False) -> dict[str, object]:
        """A forwarder that reaches the backend through Redis pub/sub (the variant says so: ``via_pubsub``): the run's
        channel for it and the backend, and the backend's Redis."""
        from pipeline.forwarders import FORWARDERS

        if not (self.cfg.forwarding and FORWARDERS[self.cfg.forwarder].via_pubsub):
            return {}
        wiring: dict[str, object] = {"pubsub_channel": self.queue_key + ":pubsub"}
        if with_redis:
            wiring["redis_url"] = self.services.redis_url
        return wiring

    def plan(self) -> list[Stage]:
        """The stages in start order (consumers first, generator last)."""
        c = self.cfg
        generator = f"{self.host('generator')}:{self._port('generator')}"
        shares = [c.stream_share(g) for g in range(c.generators)]
        backend_url = f"http://{self.host('backend')}:{self._port('backend')}" if c.forwarding else ""
        order = []
        if c.forwarding:
            wiring: dict[str, object] = {"port": self.ports["backend"], "host": self.host("backend")}
            if self.injection is not None and self.injection.backend_hook:  # the backend_503 fault's one fake
                wiring["fault_hook"] = True
            wiring.update(self._pubsub(with_redis=True))
            backend = self._new_stage(
                "backend",
                [sys.executable, *self.python_prefix("backend"), "-m", "pipeline.backend",
                 *argv.stage_argv(c, "backend", wiring)],
                f"{backend_url}/metrics", None,
            )  # fmt: skip
            self.stages["backend"] = backend
            order.append(backend)
        if c.topology == "node":
            wiring = {**self._services(), "generator": generator, "backend_url": backend_url or None, **self._pubsub()}
            order.append(self._stage("node", "node", wiring))
        else:
            if c.forwarding:
                wiring = {**self._services(), "backend_url": backend_url, **self._pubsub()}
                order.append(self._stage("forwarder", "forwarder", wiring))
            for i in range(c.workers):
                order.append(
                    self._stage(f"writer-{i + 1}", "writer", {**self._services(), "consumer": f"writer-{i + 1}"})
                )
            for (gen, ing), share in zip(c.streams(), shares, strict=True):
                wiring = {**self._services(), "generator": f"{self.host(gen)}:{self._port(gen)}"}
                if c.generators > 1:  # its generator's share of the stream, and its own saved position
                    wiring.update(sensors=share["sensors"], rate=share["rate"], count=share["count"],
                                  progress_key=self._progress_key(ing))  # fmt: skip
                order.append(self._stage(ing, "ingest", wiring))
        for gen, share in zip((g for g, _ in c.streams()), shares, strict=True):
            wiring = {"port": self._port(gen)}
            if c.generators > 1:
                wiring.update(share)
            order.append(self._stage(gen, "generator", wiring))
        return order

    def _progress_key(self, ingest: str) -> str:
        """Where ingest ``ingest`` saves its stream position (with each put: a restarted ingest resumes there)."""
        return f"{self.queue_key}:progress" + ("" if ingest == "ingest" else ingest.removeprefix("ingest"))

    @property
    def generator_names(self) -> list[str]:
        return [g for g, _ in self.cfg.streams()]

    @property
    def generators(self) -> list[Stage]:
        return [self.stages[g] for g in self.generator_names if g in self.stages]

    @property
    def ingests(self) -> list[str]:
        """The stage names that read the stream: the node, or one ingest per generator."""
        return ["node"] if self.cfg.topology == "node" else [i for _, i in self.cfg.streams()]

    # ----------------------------------------------------------------------------------------------- running
    async def ready(self, stage: Stage) -> None:
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
            if stage.name in self.generator_names:
                async with grpc.aio.insecure_channel(f"{self.host(stage.name)}:{self.ports[stage.name]}") as ch:
                    resp = await health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
                    return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
            url = (f"http://{self.host('backend')}:{self.ports['backend']}/healthz" if stage.name == "backend"
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

    def total(self, stage_names: list[str], counter: str) -> int:
        return sum(self.stages[n].count(counter) for n in stage_names if n in self.stages)

    def pids(self) -> dict[str, int]:
        """Stage name → pid of each stage process alive now (a restarted stage: its new process)."""
        return {n: st.pid for n, st in self.stages.items() if st.alive and st.pid is not None}

    def scrapes(self) -> dict[str, Scrape]:
        """Stage name → its /metrics as last scraped (after the run: its final counters and histograms)."""
        return {n: st.last for n, st in self.stages.items()}

    def snapshot(self) -> dict[str, Any]:
        writers = [n for n in self.stages if n.startswith("writer-") or n == "node"]
        fwd = "node" if self.cfg.topology == "node" else "forwarder"
        gens = self.generators
        return {
            # distinct readings: a resumed stream re-sends none, but the "generated" counter counts every send
            "generated": sum(int(g.last.get("generator_distinct_readings")) or g.count("generated") for g in gens),
            "ingested": self.total(self.ingests, "ingested"),
            "queued": self.total(self.ingests, "queued"),
            "committed": self.total(writers, "committed"),
            "forwarded": self.total([fwd], "forwarded"),
            "received": self.total(["backend"], "received"),
            "broadcast": self.total(["backend"], "broadcast"),
            "ws_received": sum(p.received for p in self.probes),
            "streams_completed": sum(int(g.last.get("generator_streams_total", event="completed")) for g in gens),
            "unsent": sum(g.count("unsent") for g in gens),
        }

    async def _poll(self) -> dict[str, Any]:
        await self._scrape_all()
        if self._counts_from_table and time.monotonic() - self._db_committed[1] >= 0.5:
            # with a stage killed, its counters die with it: the table is the truth for the drain
            with contextlib.suppress(Exception):
                counts = await asyncio.to_thread(db.table_counts, self.services.pg_dsn, self.schema)
                self._db_committed = (counts.distinct, time.monotonic())
        snap = self.snapshot()
        if self._counts_from_table:
            snap["committed"] = self._db_committed[0]
        if self.injection is not None:
            await self.injection.watch(self, snap)
        if self.on_progress:
            self.on_progress(snap)
        if self.monitor:
            await self.monitor.sample(self, snap)
        return snap

    @property
    def _counts_from_table(self) -> bool:
        """A stage was killed (a fault) or died and was restarted: its counters died with it, the table counts."""
        return (
            self.fault is not None
            or (self.supervisor is not None and self.supervisor.any)
            or any(st.restarts for st in self.stages.values())
        )  # e.g. restarted by Ray on its host

    async def _watch(self, names: list[str]) -> None:
        """Without a supervisor: a stage of ``names`` that died ends the run (``PipelineError``). With ``live``'s
        supervisor, every stage that should be running is watched instead: a dead one is started again with the
        same command (``Stage.restart``, as the fault cells do) while the supervisor allows it, else the run ends."""
        sup = self.supervisor
        if sup is None:
            self._check_alive(names)
            return
        for name, st in list(self.stages.items()):
            if st.alive or st.proc is None:
                continue
            rc = st.proc.poll()
            generator, ingest = name in self.generator_names, name in self.ingests and name != "node"
            if (generator and self._generator_stopped) or (ingest and rc == 0):
                continue  # stopped on purpose; ingest (split) exits 0 once it queued its whole stream
            if ingest and self._generator_stopped:  # its stream is over: nothing to resume from
                raise PipelineError(f"{name} exited with status {rc} after the stream ended: not restarted, the "
                                    f"generator has stopped\n{st.log_tail()}")  # fmt: skip
            if not sup.allows(name):
                raise PipelineError(f"{name} exited with status {rc}{sup.why_not(name)}:\n{st.log_tail()}")
            await st.wait(0)  # its final counters, if it wrote them
            st.restart()
            sup.restarted(name, rc)
            await self.ready(st)

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
            await self._watch(alive)
            await asyncio.sleep(POLL_S)
            snap = await self._poll()
            if snap != last:
                last, moved = snap, time.monotonic()
            elif time.monotonic() - moved > stall_s:
                log.error("%s: no progress for %.0f s: %s", what, stall_s, snap)
                return snap
        return snap

    async def run(self, stop_requested: asyncio.Event | None = None) -> RunResult:
        """Run the pipeline once: start, stream, (inject the fault,) drain, stop, account."""
        if self.injection is None:
            return await self._run(stop_requested or asyncio.Event())
        async with self.injection.around_run(self):
            return await self._run(stop_requested or asyncio.Event())

    async def _run(self, stop_requested: asyncio.Event) -> RunResult:
        c = self.cfg
        self.workdir.mkdir(parents=True, exist_ok=True)
        # what this run starts and where it writes, so that a next run can clean up should this one be killed
        record = self.record = RunRecord(
            self.services.redis_url,
            self.services.pg_dsn,
            self.queue_key,
            self.schema,
            brokers={b: u for b, (u, _) in self.services.brokers.found.items()},
        )
        record.save()
        db.apply_schema(self.services.pg_dsn, self.schema, fresh=True, unique=c.dedupe)
        await self._clear_queues()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}  # flags say everything
        if self.api_token:
            env["TELEMETRY_API_TOKEN"] = self.api_token
        if os.environ.get(PLUGINS_ENV):  # variants from plugin modules: every stage imports them too
            env[PLUGINS_ENV] = os.environ[PLUGINS_ENV]
        order = self.plan()
        failures: list[str] = []
        begun = started = stream_ended = drained = time.time_ns()
        generator_stop: asyncio.Task[list[int | None]] | None = None
        try:
            # consumers start together (the backend first: the forwarder needs it), then the generator — together
            # with them when no websocket client must connect before the first reading and no fault is timed from
            # the start (ingest then connects the moment the generator listens: ~0.5 s less per repeat)
            generators = self.generators
            probes = c.ws_clients if c.forwarding else 0
            together = probes == 0 and self.fault is None
            starting = order if together else [s for s in order if s.name not in self.generator_names]
            for stage in starting:
                stage.start(env)
            await asyncio.gather(*(self.ready(s) for s in starting))
            for _ in range(probes):
                token = f"&token={quote(self.api_token)}" if self.api_token else ""
                probe = WsProbe(
                    f"ws://{self.host('backend')}:{self.ports['backend']}/ws?client_id=probe&batch=1{token}"
                )
                await probe.start()
                self.probes.append(probe)
            if not together:
                for generator in generators:
                    generator.start(env)
                await asyncio.gather(*(self.ready(g) for g in generators))
            started = time.time_ns()
            log.debug("pipeline running: %s", self.ports)
            everyone = [s.name for s in order if s.name == "node" or s.name not in self.ingests]
            # 1. until the stream has ended (count/duration) or a stop is asked for; a fault cell injects its fault
            while not stop_requested.is_set():
                raise_if_cancelled()
                snap = await self._poll()
                inj = self.injection
                if inj is not None and inj.due(started):
                    await inj.inject(self, snap)
                    continue
                if snap["streams_completed"] >= len(generators) and (inj is None or inj.settled):
                    break
                await self._watch(everyone)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop_requested.wait(), POLL_S)
            # 2. the generator stops first (its streams end cleanly), then each stage drains in flow order; its
            # exit (a graceful gRPC shutdown, the interpreter's teardown: ~0.5 s) overlaps the drain
            if self.supervisor is not None and stop_requested.is_set():  # first: no restart of what the user stops
                self.supervisor.stop()
            await self._poll()
            self._generator_stopped = True
            generator_stop = asyncio.create_task(self._stop_generators())
            stream_ended = time.time_ns()
            stall = c.flush_interval + c.drain_stall_s
            if c.topology == "split":
                # ingest exits at the end of the stream once it has queued everything (it may wait on the queue's
                # cap while the writers drain): wait as long as it makes progress
                ingests = [self.stages[n] for n in self.ingests]
                # supervised, an ingest that died is restarted (by _watch) and resumes: wait for its clean exit
                supervised = self.supervisor is not None

                def ingest_ended(_snap: dict[str, Any]) -> bool:
                    rcs = [i.proc.poll() if i.proc is not None else None for i in ingests]
                    return all(rc is not None and (rc == 0 or not supervised) for rc in rcs)

                await self._wait_for("ingest", ingest_ended, stall, [])
                for ingest in ingests:
                    rc = await ingest.wait(0.1)
                    if rc is None:
                        failures.append(f"{ingest.name} made no progress and did not finish its stream: stopped")
                        await ingest.stop()
                    elif rc != 0:
                        failures.append(f"{ingest.name} exited with status {rc}:\n{ingest.log_tail()}")
            else:
                await self._wait_for("ingest", lambda s: s["ingested"] >= s["generated"], stall, ["node"])
            generated = self.snapshot()["generated"]
            await self._wait_for("writers", lambda s: s["committed"] >= generated, stall, [])
            if c.forwarding:
                await self._wait_for("forwarder", lambda s: s["forwarded"] >= generated, stall, [])
                await self._wait_for(
                    "broadcast", lambda s: s["ws_received"] >= s["forwarded"] * len(self.probes), c.drain_stall_s, []
                )
            drained = time.time_ns()
            for gen, rc in zip(generators, await generator_stop, strict=True):
                if rc not in (0, None):
                    failures.append(f"{gen.name} exited with status {rc}:\n{gen.log_tail()}")
            await self._poll()
            for name in ["node", *[n for n in self.stages if n.startswith("writer-")], "forwarder"]:
                if name in self.stages:
                    rc = await self.stages[name].stop()
                    if rc not in (0, None):
                        failures.append(f"{name} exited with status {rc}:\n{self.stages[name].log_tail()}")
        except PipelineError as exc:
            failures.append(str(exc))
        finally:
            if generator_stop is not None:
                with contextlib.suppress(Exception):
                    await generator_stop
            await self._shutdown()
            record.remove()  # every process stopped (a failed stop leaves the record, for the next run to reap)
        stopped = time.time_ns()
        acct = self._account()
        restarted_backend = self.supervisor is not None and "backend" in self.supervisor.restarts
        if (self.injection is not None and self.injection.broadcast_best_effort) or restarted_backend:
            acct.broadcast_best_effort = True
        if self.supervisor is not None and acct.lost > 0:
            try:
                acct.uncommitted = await self._uncommitted(acct)
            except Exception as exc:  # Redis or PostgreSQL gone: the readings are then just "lost", as before
                log.error("could not tell where the uncommitted readings are: %s", exc)
        failures.extend(acct.problems())
        return RunResult(c, acct, started, stream_ended, drained, failures, dict(self.ports), self.fault,
                         begun_ns=begun, stopped_ns=stopped)  # fmt: skip

    async def _uncommitted(self, acct: Accounting) -> Uncommitted | None:
        """Where the readings generated and not committed are (a run that stopped with a stage dead): still held by
        the writer queue and not in the table (recoverable); sent and never queued (ingest's saved stream position,
        written with each put, or its counter); the rest is lost. The queue keeps them after the run. None if the
        queue variant can't say what it holds (``Queue.held``)."""
        import psycopg
        import redis.asyncio as aioredis
        from psycopg import sql

        client = aioredis.Redis.from_url(self.services.redis_url)
        try:
            held = await QUEUES[self.cfg.queue].held(client, self.queue_key)
            positions = [await client.hget(self._progress_key(i), "next") for _, i in self.cfg.streams()]
        finally:
            await client.aclose()
        if held is None:
            return None
        sid, seq = COLUMNS.index("sensor_id"), COLUMNS.index("sequence_number")
        keys = sorted({(str(r[sid]), int(r[seq])) for r in held})
        in_queue = 0
        if keys:
            query = sql.SQL(
                "SELECT count(*) FROM unnest(%s::text[], %s::int[]) AS h(s, q) WHERE NOT EXISTS "
                "(SELECT 1 FROM {} t WHERE t.sensor_id = h.s AND t.sequence_number = h.q)"
            ).format(sql.Identifier(self.schema, "telemetry_data"))
            async with await psycopg.AsyncConnection.connect(self.services.pg_dsn) as conn:
                cur = await conn.execute(query, ([k[0] for k in keys], [k[1] for k in keys]))
                row = await cur.fetchone()
                in_queue = int(row[0]) if row else 0
        queued = sum(int(p) for p in positions if p is not None) if None not in positions else acct.queued
        in_flight = max(0, acct.generated - queued)
        lost = acct.generated - acct.committed - in_queue - in_flight
        return Uncommitted(in_queue=in_queue, in_flight=in_flight, lost=lost, queue_key=self.queue_key)

    async def _stop_generators(self) -> list[int | None]:
        return list(await asyncio.gather(*(g.stop() for g in self.generators)))

    async def _clear_queues(self) -> None:
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.services.redis_url)
        try:  # the queue, the forward queue, ingest's progress, reliable lists' processing lists
            keys = [k async for k in client.scan_iter(match=f"{self.queue_key}*")]
            if keys:
                await client.delete(*keys)
            queue = QUEUES[self.cfg.queue]
            if queue.broker is not None:  # a broker's stream or queue (jetstream, rabbitmq)
                self.services.broker_url(queue.broker)
                for key in (self.queue_key, self.queue_key + FORWARD_SUFFIX):
                    await queue.drop(client, key)
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
        if self.placement is not None:  # the stages' actors on their hosts go too (a stage that exited by itself)
            self.placement.release_stages()
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
