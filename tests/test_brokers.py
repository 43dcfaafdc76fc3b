"""The broker queue variants on the real servers (NATS JetStream, RabbitMQ): redelivery of what a dead consumer held,
and how the harness finds or starts a broker. (Round trips, the cap and ``held`` run for every variant in
test_queues; a writer killed mid-stream, with the accounting exact, in test_faults' jetstream/rabbitmq cells.)"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
import redis.asyncio as aioredis

from harness.servers import ServiceError, ThrowawayNats, nats_jetstream
from harness.services import Brokers, Services
from pipeline.queues import QUEUES, Queue


def _rows(n: int, start: int = 0) -> list[tuple]:
    return [
        ("2026-01-01T00:00:00.000001Z", "TEMPERATURE", "TEMP_ENG_001", "ENGINE", i, 0, 30.5, "celsius",
         None, None, None, None, None, None, None, None, 10 + i, 20 + i, 30 + i)
        for i in range(start, start + n)
    ]  # fmt: skip


@pytest.fixture
async def client(services: Services) -> AsyncIterator[aioredis.Redis]:
    r = aioredis.Redis.from_url(services.redis_url)
    yield r
    await r.aclose()


async def _drain(q: Queue, timeout: float) -> list[tuple]:
    got: list[tuple] = []
    while True:
        rows, token = await q.get(100, timeout)
        if not rows:
            return got
        got.extend(rows)
        await q.ack(token)


async def test_jetstream_redelivers_after_ack_wait(services: Services, client: aioredis.Redis, queue_key: str) -> None:
    """A writer fetched an entry and died: the entry stays in the stream and comes back after ack_wait; what was
    acknowledged never does."""
    services.broker_url("nats")
    knobs = SimpleNamespace(ack_wait=0.5, max_deliver=-1, max_ack_pending=100)
    dead = QUEUES["jetstream"](client, queue_key, entry="batch", settings=knobs)
    await dead.setup()
    await dead.put(_rows(3))
    await dead.put(_rows(3, start=3))
    taken, _never_acked = await dead.get(1, 1.0)  # one entry
    assert taken == _rows(3)
    await dead.close()  # dies without acknowledging
    assert await QUEUES["jetstream"].depth(client, queue_key) == 2  # both still in the stream
    alive = QUEUES["jetstream"](client, queue_key, entry="batch", settings=knobs)
    try:
        first = await _drain(alive, 0.1)
        assert first == _rows(3, start=3)  # the waiting one at once; the taken one not before ack_wait
        await asyncio.sleep(0.6)
        again, token = await alive.get(100, 1.0)
        assert again == _rows(3)  # redelivered
        summary = await QUEUES["jetstream"].summary(client, queue_key)
        assert list(summary.values()) == ["stream of 1 (consumer writers 1 pending 1 redelivered)"]
        await alive.ack(token)
        assert await alive.length() == 0
    finally:
        await alive.close()


async def test_rabbitmq_requeues_a_dead_consumers_deliveries(
    services: Services, client: aioredis.Redis, queue_key: str
) -> None:
    """Deliveries a consumer never acknowledged go back to the queue when its connection closes."""
    services.broker_url("rabbitmq")
    dead = QUEUES["rabbitmq"](client, queue_key, entry="batch", settings=SimpleNamespace(prefetch=1))
    await dead.setup()
    for start in (0, 3, 6):
        await dead.put(_rows(3, start=start))
    taken, _never_acked = await dead.get(3, 1.0)
    assert taken == _rows(3)
    await dead.close()  # dies without acknowledging
    alive = QUEUES["rabbitmq"](client, queue_key, entry="batch")
    await alive.setup()
    try:
        assert sorted(await _drain(alive, 0.5)) == _rows(9)
        assert await alive.length() == 0
    finally:
        await alive.close()


def test_throwaway_nats_keeps_its_store_across_a_restart_and_stops(tmp_path: Path) -> None:
    """``nats-server -js`` on a free port, its store in the directory: a stream's entries survive a restart."""
    nats = ThrowawayNats(tmp_path)
    nats.start()
    try:
        assert nats_jetstream(nats.url) == nats.version
        pid = nats.pid
        from pipeline.queues.base import BROKER_URLS

        before = BROKER_URLS.get("nats")
        BROKER_URLS["nats"] = nats.url
        try:

            async def put_then_count(put: bool) -> int:
                r = aioredis.Redis()  # the jetstream queue keeps no Redis key without a progress position
                q = QUEUES["jetstream"](r, "test:restart", entry="batch")
                await q.setup()
                if put:
                    await q.put(_rows(3), wait=False)
                n = await q.length()
                await q.close()
                await r.aclose()
                return n

            assert asyncio.run(put_then_count(True)) == 1
            nats.restart(down_s=0.1)
            assert nats.pid != pid
            assert asyncio.run(put_then_count(False)) == 1
        finally:
            if before is None:
                BROKER_URLS.pop("nats", None)
            else:
                BROKER_URLS["nats"] = before
        pid = nats.pid
    finally:
        nats.stop()
    assert pid is not None and not psutil.pid_exists(pid)


def test_brokers_found_locally_or_started_and_stopped(monkeypatch: pytest.MonkeyPatch) -> None:
    """Forced throwaways: a nats-server is started for the run and gone when the brokers close; RabbitMQ has no
    throwaway, and an unreachable explicit URL is a one-line error naming it."""
    brokers = Brokers(force_embedded=True)
    try:
        url = brokers.url("nats")
        assert brokers.found["nats"][1] == "embedded" and nats_jetstream(url) is not None
        assert brokers.throwaways is not None and brokers.throwaways.nats is not None
        pid = brokers.throwaways.nats.pid
        assert "NATS: embedded (nats-server)" in brokers.describe()
    finally:
        brokers.close()
    assert pid is not None and not psutil.pid_exists(pid)
    monkeypatch.setenv("TELEMETRY_AMQP_URL", "amqp://guest:secret@127.0.0.1:1/")
    with pytest.raises(ServiceError, match=r"RabbitMQ at amqp://guest:\*\*\*@127.0.0.1:1/ \(explicit URL\)"):
        Brokers().url("rabbitmq")
    with pytest.raises(ServiceError, match="unknown broker 'kafka'; known brokers: nats, rabbitmq"):
        Brokers().url("kafka")


async def test_a_dead_runs_broker_queues_are_reaped(
    services: Services, client: aioredis.Redis, queue_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A harness killed outright left its stream and quorum queue: the next run's reaper deletes them too."""
    from harness import lifeline

    monkeypatch.setattr(lifeline, "RECORDS", tmp_path / "runs")
    urls = {b: services.broker_url(b) for b in ("nats", "rabbitmq")}
    for name in ("jetstream", "rabbitmq"):
        q = QUEUES[name](client, queue_key, entry="batch")
        await q.setup()
        await q.put(_rows(3), wait=False)
        await q.close()
    record = lifeline.RunRecord(services.redis_url, services.pg_dsn, queue_key, "public", owner=1, brokers=urls)
    record.owner_started = 1.0  # a dead owner
    record.save()
    assert len(await asyncio.to_thread(lifeline.reap_leftovers)) == 1
    assert await QUEUES["jetstream"].summary(client, queue_key) == {}
    assert await QUEUES["rabbitmq"].summary(client, queue_key) == {}
