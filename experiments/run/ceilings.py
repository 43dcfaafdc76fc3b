"""This machine's raw limits, measured in the same run as the cells (its speed drifts between runs):
binary COPY of pre-built rows into the same table, Redis pipelined push/pop, direct decoding, and the load
generator's own capacity (``generator``: its stage process into a subscriber that reads and discards)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import grpc
import orjson
import psutil
import redis.asyncio as aioredis

from harness.lifeline import die_with_parent
from harness.orchestrator import free_port
from harness.plan import PipelineConfig
from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.proto import GRPC_OPTIONS, pb2
from pipeline.rows import row_to_dict
from pipeline.sinks import SINKS
from pipeline.stream import StreamParams, produce

READINGS = 100_000
BATCH = 10_000
PASSES = 3


async def _messages(n: int) -> list[Any]:
    buf: asyncio.Queue[Any] = asyncio.Queue()
    await produce(StreamParams(max_rate=True, count=n, readings_per_message=1000), buf)
    out = []
    while (item := buf.get_nowait()) is not None:
        out.extend(item[0].readings)
    return out


async def measure(pg_dsn: str, redis_url: str, schema: str, readings: int = READINGS) -> dict[str, Any]:
    msgs = await _messages(readings)
    t = time.perf_counter()
    rows = DECODERS["direct"]().decode_many(msgs, time.time_ns())
    decode_rps = len(rows) / (time.perf_counter() - t)
    copy_passes = []
    sink = SINKS["copy_binary"]()
    for _ in range(PASSES):
        db.apply_schema(pg_dsn, schema, fresh=True)
        conn = await db.connect(pg_dsn, schema)
        try:
            t = time.perf_counter()
            for i in range(0, len(rows), BATCH):
                async with conn.transaction():
                    await sink.write(conn, rows[i : i + BATCH])
            copy_passes.append(len(rows) / (time.perf_counter() - t))
        finally:
            await conn.close()
    db.apply_schema(pg_dsn, schema, fresh=True)
    payloads = [orjson.dumps(row_to_dict(r)) for r in rows]
    client = aioredis.Redis.from_url(redis_url)
    key = f"{schema}:ceiling"
    redis_passes = []
    try:
        for _ in range(PASSES):
            await client.delete(key)
            t = time.perf_counter()
            for i in range(0, len(payloads), 1000):
                await client.lpush(key, *payloads[i : i + 1000])
            got = 0
            while got < len(payloads):
                got += len(await client.rpop(key, 1000) or [])
            redis_passes.append(len(payloads) / (time.perf_counter() - t))
    finally:
        await client.delete(key)
        await client.aclose()
    return {
        "copy_binary_rps": statistics.median(copy_passes),
        "copy_binary_passes": copy_passes,
        "redis_pushpop_rps": statistics.median(redis_passes),
        "redis_pushpop_passes": redis_passes,
        "decode_direct_rps": decode_rps,
        "readings": len(rows),
    }


GENERATOR_WARMUP_S = 0.5  # the stream's first chunk and gRPC's start, not counted
GENERATOR_MEASURE_S = 3.0


async def generator(
    cfg: PipelineConfig,
    seconds: float = GENERATOR_MEASURE_S,
    builder: str = "numpy",
    warmup_s: float = GENERATOR_WARMUP_S,
) -> dict[str, Any]:
    """The load generator's capacity with a cell's stream settings: the generator stage process (``builder``: its
    ``--builder``) streams the batched RPC at max rate with the cell's sensors, readings per message and seed to a
    subscriber in this process that reads each message's bytes and discards them (no parsing: the generator is
    what is measured). Readings/s over ``seconds`` after ``warmup_s``, and the generator's CPU use over the same
    interval (near one core: the generator binds; well under: gRPC, the subscriber or other load on the machine
    does) and its readings per CPU second."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TELEMETRY_")}
    proc = subprocess.Popen(
        die_with_parent([sys.executable, "-m", "pipeline.generator", "--port", str(port), "--metrics-port", "0",
                         "--host", "127.0.0.1", "--builder", builder, "--log-level", "WARNING"]),
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True,
    )  # fmt: skip
    options = [*GRPC_OPTIONS, ("grpc.http2.bdp_probe", 0)]  # as ingest's channel
    request = pb2.StreamRequest(
        max_rate=True, sensors=cfg.sensors, seed=cfg.seed, readings_per_message=cfg.readings_per_message,
        duration_s=warmup_s + seconds + 1.0,
    )  # fmt: skip
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=options) as channel:
            deadline = time.monotonic() + 30
            while True:  # ready, or a clear error if the generator exits (a bad flag) or never answers
                if proc.poll() is not None:
                    raise RuntimeError(f"generator exited with status {proc.returncode}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(channel.channel_ready(), 0.25)
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError("generator not ready after 30 s")
            call = channel.unary_stream("/telemetry.TelemetryService/StreamBatches",
                                        request_serializer=pb2.StreamRequest.SerializeToString)  # fmt: skip
            stream = call(request)
            cpu = psutil.Process(proc.pid)
            messages, start, cpu0 = 0, 0.0, 0.0
            begun = time.perf_counter()
            async for _ in stream:
                now = time.perf_counter()
                if not start:
                    if now - begun < warmup_s:
                        continue
                    start, cpu0 = now, sum(cpu.cpu_times()[:2])
                messages += 1
                if now - start >= seconds:
                    break
            elapsed = time.perf_counter() - start
            cpu_s = sum(cpu.cpu_times()[:2]) - cpu0
            stream.cancel()
    except (grpc.aio.AioRpcError, TimeoutError, RuntimeError) as exc:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
        raise RuntimeError(f"generator ceiling: {exc}\n{err}") from exc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
        if proc.poll() is None:
            proc.kill()
    readings = messages * cfg.readings_per_message  # at max rate every message is full
    return {
        "rps": readings / elapsed if elapsed > 0 else 0.0,
        "readings": readings,
        "seconds": elapsed,
        "cpu_util": cpu_s / elapsed if elapsed > 0 else 0.0,
        "readings_per_cpu_s": readings / cpu_s if cpu_s > 0 else 0.0,  # steadier than rps on a busy machine
        "builder": builder,
        "sensors": cfg.sensors,
        "readings_per_message": cfg.readings_per_message,
    }
