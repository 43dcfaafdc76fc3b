"""Queue variants on a real Redis: order, payloads, acknowledgement, backpressure at the cap."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import SimpleNamespace
from typing import Any

import pytest
import redis.asyncio as aioredis

from harness.services import Services
from pipeline.queues import QUEUES, Queue


def _rows(n: int, start: int = 0) -> list[tuple]:
    return [
        ("2026-01-01T00:00:00.000001Z", "TEMPERATURE", "TEMP_ENG_001", "ENGINE", i, 0, 30.5, "celsius",
         None, None, None, None, None, None, None, None, 10 + i, 20 + i, 30 + i)
        for i in range(start, start + n)
    ]  # fmt: skip


@pytest.fixture
async def client(services: Services, queue_key: str) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(services.redis_url)
    yield r
    await r.delete(queue_key, queue_key + ":x")
    await r.aclose()


@pytest.fixture
async def make(services: Services, client: aioredis.Redis, queue_key: str) -> AsyncIterator[Callable[..., Queue]]:
    """``make(name, **kw)``: a queue of variant ``name`` at the test's key (its broker found first, its connection
    closed after the test; queue_key deletes the broker's stream or queue)."""
    made: list[Queue] = []

    def _make(name: str, **kw: Any) -> Queue:
        variant = QUEUES[name]
        if variant.broker is not None:
            services.broker_url(variant.broker)
        made.append(variant(client, queue_key, **kw))
        return made[-1]

    yield _make
    for q in made:
        await q.close()


@pytest.mark.parametrize("name", list(QUEUES))
@pytest.mark.parametrize("entry", ["reading", "batch"])
async def test_round_trip_in_order(name: str, entry: str, make: Callable[..., Queue]) -> None:
    q = make(name, entry=entry)
    await q.setup()
    await q.put(_rows(5))
    await q.put(_rows(5, start=5))
    got: list[tuple] = []
    while len(got) < 10:
        rows, token = await q.get(100, 1.0)
        assert rows, "queue ran dry"
        got.extend(rows)
        await q.ack(token)
    assert got == _rows(10)
    assert await q.get(100, 0.05) == ([], None)
    assert await q.length() == 0


async def test_list_entry_is_the_seed_json(client: aioredis.Redis, queue_key: str) -> None:
    import json

    q = QUEUES["list"](client, queue_key)
    await q.put(_rows(1))
    raw = await client.rpop(queue_key)
    obj = json.loads(raw)
    assert list(obj)[:16] == [
        "reading_timestamp", "telemetry_type", "sensor_id", "subsystem", "sequence_number", "status_bitmask",
        "temperature", "temp_unit", "pressure", "pressure_unit", "leak_detected", "velocity_x", "velocity_y",
        "velocity_z", "velocity_unit", "vibration_magnitude",
    ]  # fmt: skip
    assert obj["sensor_id"] == "TEMP_ENG_001" and obj["temperature"] == 30.5


async def test_stream_keeps_unacknowledged_entries(client: aioredis.Redis, queue_key: str) -> None:
    q = QUEUES["stream"](client, queue_key, entry="batch", consumer="w1")
    await q.setup()
    await q.put(_rows(3))
    rows, token = await q.get(10, 1.0)
    assert len(rows) == 3
    # not acknowledged: still pending for the group, and still counted in the queue's length
    pending = await client.xpending(queue_key, "writers")
    assert pending["pending"] == 1
    assert await q.length() == 1
    await q.ack(token)
    assert (await client.xpending(queue_key, "writers"))["pending"] == 0
    assert await q.length() == 0


@pytest.mark.parametrize("name", list(QUEUES))
async def test_put_waits_at_the_cap(name: str, make: Callable[..., Queue]) -> None:
    q = make(name, entry="reading", cap=10)
    await q.setup()
    await q.put(_rows(10))
    blocked = asyncio.create_task(q.put(_rows(5, start=10)))
    await asyncio.sleep(0.2)
    assert not blocked.done(), "put must wait while the queue holds more than its cap"
    consumed = 0
    while consumed < 10:
        rows, token = await q.get(1, 1.0)
        consumed += len(rows)
        await q.ack(token)
    await asyncio.wait_for(blocked, 2)


async def test_stream_redelivers_a_dead_consumers_entries(client: aioredis.Redis, queue_key: str) -> None:
    """A writer that read entries and died: restarted under its name it re-reads them; another claims them."""
    q1 = QUEUES["stream"](client, queue_key, entry="batch", consumer="w1")
    await q1.setup()
    await q1.put(_rows(3))
    await q1.put(_rows(3, start=3))
    rows, _token = await q1.get(1, 1.0)  # read one entry, then "die" without acknowledging
    assert rows == _rows(3)
    restarted = QUEUES["stream"](client, queue_key, entry="batch", consumer="w1")
    rows, _token = await restarted.get(100, 1.0)
    assert rows == _rows(3)  # its own pending entry first
    # another consumer claims what w1 leaves pending for claim_idle_s
    other = QUEUES["stream"](client, queue_key, entry="batch", consumer="w2")
    other.claim_idle_s = 0.05
    await asyncio.sleep(0.1)
    got, tok = await other.get(100, 1.0)
    assert got == _rows(3)
    await other.ack(tok)
    got, tok = await other.get(100, 1.0)
    assert got == _rows(3, start=3)
    await other.ack(tok)
    assert await other.length() == 0


async def test_reliable_list_gives_back_what_a_dead_consumer_held(client: aioredis.Redis, queue_key: str) -> None:
    q = QUEUES["list_reliable"](client, queue_key, consumer="w1")
    await q.setup()
    await q.put(_rows(4))
    first, _ = await q.get(1, 1.0)
    second, _ = await q.get(1, 1.0)
    assert first + second == _rows(2)
    assert await q.length() == 4  # two queued + two in processing: nothing is gone until acknowledged
    restarted = QUEUES["list_reliable"](client, queue_key, consumer="w1")
    await restarted.setup()
    got = []
    while True:
        rows, token = await restarted.get(1, 0.1)
        if not rows:
            break
        got.extend(rows)
        await restarted.ack(token)
    assert got == _rows(4)  # redelivered first, in order, then the rest
    assert await restarted.length() == 0
    await client.delete(restarted.processing)


@pytest.mark.parametrize("name", list(QUEUES))
async def test_held_is_what_a_writer_started_on_the_queue_would_get(
    name: str, client: aioredis.Redis, make: Callable[..., Queue]
) -> None:
    """``Queue.held`` (what ``live`` reports as recoverable): the waiting entries, and — reliable variants — what a
    consumer took and never acknowledged; never what was acknowledged, nor what the seed's list let a consumer pop."""
    quick = SimpleNamespace(ack_wait=0.3)  # jetstream: a dead writer's entries come back after 0.3 s
    q = make(name, entry="batch", consumer="writer-1", settings=quick)
    await q.setup()
    for start in (0, 3, 6):
        await q.put(_rows(3, start=start))
    taken, _never_acked = await q.get(3, 1.0)  # one entry, never acknowledged (its consumer dies)
    acked, token2 = await q.get(3, 1.0)
    await q.ack(token2)
    await q.close()  # the consumer dies (rabbitmq: what it was delivered goes back to the queue)
    queue_key = q.key
    held = await QUEUES[name].held(client, queue_key)
    assert held is not None
    reliable = name != "list"
    remaining = [r for r in _rows(9) if r not in taken and r not in acked]
    assert sorted(held) == sorted(remaining + (taken if reliable else []))
    if reliable:  # a writer started on the queue gets exactly those
        fresh = make(name, entry="batch", consumer="writer-1", settings=quick)
        await fresh.setup()
        got: list[tuple] = []
        for _ in range(10):
            rows, token = await fresh.get(100, 0.5)
            if not rows:
                break
            got.extend(rows)
            await fresh.ack(token)
        assert sorted(got) == sorted(held)
    leftover = [k async for k in client.scan_iter(match=f"{queue_key}*")]
    if leftover:
        await client.delete(*leftover)
