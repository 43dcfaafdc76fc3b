"""This machine's raw limits, measured in the same run as the cells (its speed drifts between runs):
binary COPY of pre-built rows into the same table, Redis pipelined push/pop, direct decoding."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

import orjson
import redis.asyncio as aioredis

from pipeline import db
from pipeline.decoders import DECODERS
from pipeline.generator import StreamParams, produce
from pipeline.rows import row_to_dict
from pipeline.sinks import SINKS

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
