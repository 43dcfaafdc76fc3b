"""Per-stage ceilings: each stage of the pipeline measured alone, on this machine, with the run's settings.

One *pass* measures every stage once; the runner takes a pass before the cells and one between rounds (round-robin,
like the cells), so each ceiling comes with its spread and drifts with the machine as the cells do:

| stage | alone means |
|---|---|
| ``generator`` | the generator process at max rate into a subscriber that reads and discards (``ceilings``) |
| ``ingest`` | the run's decoder over pre-built stream messages (no queue, no network) |
| ``queue`` | the run's queue variant: ``put`` of whole messages' rows, then ``get`` + ``ack`` until empty (one Redis) |
| ``queue_NAME`` | every queue variant (``list`` … ``jetstream``, ``rabbitmq``: each broker alone), the same |
| ``writer_1`` | the run's sink and batch size, one connection, pre-built rows, a transaction per batch |
| ``writer_N`` | the same with N connections at once (N: the most writers any cell runs, at least 2) |
| ``forward`` | the forwarder variant (``async`` if the cell forwards nothing) POSTing pre-built rows to a backend |
| | process (the cell's behaviour and POST size) until one websocket client has received every one |
| ``forward@…`` | the same with the forwarding settings of the matrix's forwarding cells, one per distinct setting |
| | (``forward_key``: variant, POST size, concurrency, backend): a cell's forward ceiling is its own settings' |
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from experiments.run import ceilings as machine
from harness.lifeline import die_with_parent
from harness.plan import PipelineConfig
from harness.probes import WsProbe
from harness.process import free_port
from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.forwarders import FORWARDERS
from pipeline.queues import QUEUES
from pipeline.rows import Row
from pipeline.sinks import SINKS
from pipeline.stream import StreamParams, produce

log = logging.getLogger("telemetry_bench.ceilings")

READINGS = 50_000  # per stage and pass: about a second each at today's speeds
STAGES = ("generator", "ingest", "queue", "writer_1", "writer_N", "forward")
FORWARD_READINGS = 20_000
FORWARD_S = 2.0  # at most this long sending, per forward pass


async def _messages(cfg: PipelineConfig, n: int) -> list[Any]:
    buf: asyncio.Queue[Any] = asyncio.Queue()
    per = max(1, cfg.readings_per_message)
    await produce(StreamParams(max_rate=True, count=n, readings_per_message=per, sensors=cfg.sensors), buf)
    out = []
    while (item := buf.get_nowait()) is not None:
        out.append(item[0])
    return out


def _timed(n: int, t0: float) -> float:
    return n / max(time.perf_counter() - t0, 1e-9)


async def ingest(cfg: PipelineConfig, messages: list[Any]) -> tuple[float, list[Row]]:
    decoder = DECODERS[cfg.decoder]()
    t0 = time.perf_counter()
    rows: list[Row] = []
    now = time.time_ns()
    for msg in messages:
        rows.extend(decoder.decode_many(msg.readings, now))
    return _timed(len(rows), t0), rows


async def queue(cfg: PipelineConfig, redis_url: str, key: str, rows: list[Row]) -> float:
    client = aioredis.Redis.from_url(redis_url)
    q = None
    try:
        await client.delete(key)
        q = QUEUES[cfg.queue](client, key, entry=cfg.queue_entry, cap=10 * len(rows), group="ceiling",
                              consumer="ceiling-1", settings=cfg)  # fmt: skip
        await q.setup()
        per = max(1, cfg.readings_per_message)
        t0 = time.perf_counter()
        for i in range(0, len(rows), per):
            await q.put(rows[i : i + per], wait=False)
        got = 0
        while got < len(rows):
            batch, token = await q.get(cfg.batch_size, timeout=1.0)
            if not batch:
                break
            await q.ack(token)
            got += len(batch)
        return _timed(got, t0)
    finally:
        if q is not None:  # a broker variant (jetstream, rabbitmq): its connection, stream or queue
            await q.close()
            await QUEUES[cfg.queue].drop(client, key)
        keys = [k async for k in client.scan_iter(match=f"{key}*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def writers(cfg: PipelineConfig, pg_dsn: str, schema: str, rows: list[Row], connections: int) -> float:
    """Rows/s of ``connections`` writers at once, each a connection writing its share in batch_size transactions."""
    db.apply_schema(pg_dsn, schema, fresh=True, unique=False)
    sink = SINKS[cfg.sink]()
    share = [rows[i::connections] for i in range(connections)]
    conns = [await db.connect(pg_dsn, schema) for _ in range(connections)]

    async def write(conn: Any, part: list[Row]) -> None:
        for i in range(0, len(part), cfg.batch_size):
            async with conn.transaction():
                await sink.write(conn, part[i : i + cfg.batch_size])

    try:
        t0 = time.perf_counter()
        await asyncio.gather(*(write(c, p) for c, p in zip(conns, share, strict=True)))
        return _timed(len(rows), t0)
    finally:
        for c in conns:
            await c.close()


async def forward(cfg: PipelineConfig, rows: list[Row], redis_url: str, key: str, max_s: float = FORWARD_S) -> float:
    """Readings/s from the forwarder through a backend process to one websocket client (all of them received); a
    forwarder through Redis pub/sub (``via_pubsub``) publishes on a channel of this pass that the backend subscribes
    to. Sending stops after ``max_s`` (a slow setting, one reading per POST, would take minutes over every row): the
    rate is then over what was sent and received."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    name = cfg.forwarder if cfg.forwarding else "async"
    channel = f"{key}:pubsub:ceiling" if FORWARDERS[name].via_pubsub else None
    sub = ["--redis-url", redis_url, "--pubsub-channel", channel] if channel else []
    backend = subprocess.Popen(
        die_with_parent([sys.executable, "-m", "pipeline.backend", "--port", str(port), "--host", "127.0.0.1",
                         "--log-level", "WARNING", "--backend-behaviour", cfg.backend_behaviour, *sub]),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    probe = WsProbe(f"ws://127.0.0.1:{port}/ws?client_id=ceiling&batch=1", keep=0)
    try:
        async with httpx.AsyncClient() as http:
            deadline = time.monotonic() + 30
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(f"http://127.0.0.1:{port}/healthz", timeout=1.0)).status_code == 200:
                        break
                if backend.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"backend did not start (status {backend.poll()})")
                await asyncio.sleep(0.1)
        await probe.start()
        fwd = FORWARDERS[name](f"http://127.0.0.1:{port}", batch=cfg.forward_batch, concurrency=cfg.concurrency,
                               redis_url=redis_url, channel=channel)  # fmt: skip
        await fwd.start()
        per = max(1, cfg.readings_per_message)
        t0 = time.perf_counter()
        sent = 0
        for i in range(0, len(rows), per):
            await fwd.send(rows[i : i + per])
            sent += len(rows[i : i + per])
            if time.perf_counter() - t0 > max_s:
                break
        await fwd.close()
        deadline = time.monotonic() + 60
        while probe.received < sent and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        return _timed(probe.received, t0)
    finally:
        await probe.stop()
        backend.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            backend.wait(10)
        if backend.poll() is None:
            backend.kill()


def forward_key(cfg: PipelineConfig) -> str:
    """The forward ceiling measured with ``cfg``'s forwarding settings: ``forward@async/1000/8/fast``."""
    return f"forward@{cfg.forwarder}/{cfg.forward_batch}/{cfg.concurrency}/{cfg.backend_behaviour}"


async def one_pass(
    cfg: PipelineConfig, pg_dsn: str, redis_url: str, schema: str, key: str, n_writers: int,
    readings: int = READINGS, forwarding: list[PipelineConfig] | None = None,
) -> dict[str, float]:  # fmt: skip
    """Every stage once, alone, with ``cfg``'s settings: stage → readings/s; the forward stage also with each of
    ``forwarding``'s settings (``forward_key``)."""
    out: dict[str, float] = {}
    gen = await machine.generator(cfg, seconds=1.5, builder=cfg.builder, warmup_s=0.3)
    out["generator"] = gen["rps"]
    messages = await _messages(cfg, readings)
    out["ingest"], rows = await ingest(cfg, messages)
    out["queue"] = await queue(cfg, redis_url, key, rows)
    for name in QUEUES:  # each queue variant alone, the brokers' included: their put/get/ack round trips compared
        try:
            out[f"queue_{name}"] = await queue(cfg.model_copy(update={"queue": name}), redis_url, key, rows)
        except Exception as exc:  # a broker no cell used and none answers: that ceiling is left out
            log.info("queue ceiling of %s left out: %s", name, exc)
    out["writer_1"] = await writers(cfg, pg_dsn, schema, rows, 1)
    out["writer_N"] = await writers(cfg, pg_dsn, schema, rows, max(2, n_writers))
    out["forward"] = await forward(cfg, rows[:FORWARD_READINGS], redis_url, key)
    own = forward_key(cfg) if cfg.forwarding else None  # measured just above, as "forward"
    for other in {forward_key(c): c for c in forwarding or [] if c.forwarding and forward_key(c) != own}.values():
        out[forward_key(other)] = await forward(other, rows[:FORWARD_READINGS], redis_url, key)
    return out


def summarize(passes: list[dict[str, float]], n_writers: int) -> dict[str, dict[str, Any]]:
    """stage → {median, min, max, passes}: the ``ceilings.stages`` of results.json."""
    out: dict[str, dict[str, Any]] = {}
    keyed = sorted({k for p in passes for k in p if k.startswith("forward@")})
    for stage in (*STAGES, *(f"queue_{name}" for name in QUEUES), *keyed):
        vals = [p[stage] for p in passes if stage in p]
        if vals:
            out[stage] = {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "passes": vals}
            if stage == "writer_N":
                out[stage]["connections"] = max(2, n_writers)
    return out


# the stage whose ceiling a verdict's stage compares with (a writer verdict: the writer with the cell's connections)
def binding_stage(verdict_stage: str | None, workers: int) -> str | None:
    return {
        "generator": "generator", "ingest": "ingest", "writer": "writer_N" if workers > 1 else "writer_1",
        "redis": "queue", "postgresql": "writer_N" if workers > 1 else "writer_1", "forwarder": "forward",
        "nats": "queue", "rabbitmq": "queue",
    }.get(verdict_stage or "")  # fmt: skip


def binding_ceiling(
    stages: dict[str, dict[str, Any]], throughput: float | None, verdict_stage: str | None, workers: int, *,
    forwarding: bool = False, forward: str = "forward",
) -> dict[str, Any] | None:  # fmt: skip
    """Which ceiling binds a cell and how close it came: the verdict's stage where it has a ceiling, else the lowest
    ceiling on the cell's path (the stage that would bind first). ``forward``: the cell's own forward ceiling (its
    settings' ``forward_key``) where it was measured, else the stage-ceilings cell's."""
    if not throughput or not stages:
        return None
    forward = forward if forward in stages else "forward"  # the stage-ceilings cell's own settings, or unmeasured
    path = [
        "generator",
        "ingest",
        "queue",
        "writer_N" if workers > 1 else "writer_1",
        *([forward] if forwarding else []),
    ]
    named = binding_stage(verdict_stage, workers)
    named = forward if named == "forward" else named
    stage = named if named in stages else min((s for s in path if s in stages), key=lambda s: stages[s]["median"])
    ceiling = stages[stage]["median"]
    return {
        "stage": stage, "ceiling_rps": ceiling, "fraction": throughput / ceiling if ceiling else None,
        "why": "the verdict's stage" if named == stage else "the lowest ceiling on the cell's path",
    }  # fmt: skip
