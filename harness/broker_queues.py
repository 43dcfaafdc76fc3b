"""Deleting a run's broker streams and queues (JetStream, RabbitMQ): at a run's end (``Brokers.drop_queues``) and
by the reaper of a run whose harness is gone (``harness.lifeline``), which knows only the broker URLs it recorded."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging

log = logging.getLogger("telemetry_bench.services")


def drop_broker_queues(urls: dict[str, str], key: str) -> None:
    """Delete the streams/queues of the queue at ``key`` and its forward queue on each broker in ``urls`` (broker
    name → URL); a broker that went away has nothing left to drop (logged)."""
    from pipeline.queues import QUEUES
    from pipeline.wiring import FORWARD_SUFFIX

    variants = [q for q in QUEUES.values() if q.broker in urls]

    async def drop() -> None:
        for variant in variants:
            url = urls[str(variant.broker)]
            for k in (key, key + FORWARD_SUFFIX):
                try:
                    await variant.drop(None, k, url)  # type: ignore[arg-type]  # the broker variants need no Redis
                except Exception as exc:
                    log.info("could not drop %s queue %s: %s", variant.name, k, f"{type(exc).__name__}: {exc}"[:160])

    if variants:  # on a loop of its own, in a thread: the caller may be inside a running loop
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(lambda: asyncio.run(drop())).result()
