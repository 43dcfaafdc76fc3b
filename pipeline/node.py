"""The ``node`` topology: the seed's processing node, one process and one event loop.

    python -m pipeline.node --decoder dict --queue list --sink copy --batch-size 20 --flush-interval 10 \
        --forwarder sync --rpc seed

Coroutines, as in the seed: the stream reader (ingest) pushes to the queue; ``--workers`` queue readers pop,
batch and write (the same ``Writer`` as the writer stage), and each popped reading is handed straight to the
forwarder — with the ``sync`` forwarder that is a blocking POST which stalls every coroutine, the seed's open bug.
``--seed-prints`` adds the seed stream reader's two ``print`` lines per reading, to stdout (the node's log).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from pipeline import delay, metrics
from pipeline.config import NodeSettings
from pipeline.decoders import DECODERS
from pipeline.ingest import ingest_loop
from pipeline.queues import Queue
from pipeline.rows import Row, row_to_dict
from pipeline.runtime import stage_main, stop_event
from pipeline.wiring import make_forwarder, make_queue, make_sink, open_pg, open_redis
from pipeline.writer import Writer

log = logging.getLogger("telemetry_bench.node")


def stream_writer(
    queue: Queue, *, seed_prints: bool = False, loop_delay: delay.Delay | None = None
) -> tuple[Callable[[list[Row]], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """The stream reader's ``put`` (rows onto the queue, its length into ``redis_queue_len``) and ``room``
    (backpressure). With ``seed_prints``, ``put`` also prints the seed's two lines per reading to stdout (the
    node's log): the reading received, before it is pushed, and the queue's length, after."""
    queued = metrics.readings().labels("queued")
    qlen = metrics.redis_queue_len()
    length = 0

    async def put(rows: list[Row]) -> None:
        nonlocal length
        if loop_delay is not None:  # delay_node_us: the node's own loop, per stream message
            await loop_delay(len(rows))
        if seed_prints:
            for row in rows:
                print(f"Received: {row_to_dict(row)}")
        length = await queue.put(rows, wait=False)
        qlen.set(length)
        queued.inc(len(rows))
        if seed_prints:
            for _ in rows:
                print(f"Queue length: {length}")

    async def room() -> None:
        await queue.wait_below_cap(length)

    return put, room


async def run(settings: NodeSettings) -> None:
    stop = stop_event()
    client = await open_redis(settings)
    queue = await make_queue(settings, client)
    await open_pg(settings)
    forwarder = await make_forwarder(settings, settings.redis_url)
    put, room = stream_writer(
        queue, seed_prints=settings.seed_prints, loop_delay=delay.make(settings.delay_node_us, settings.delay_kind)
    )

    writers = []
    for i in range(settings.workers):
        q = queue if i == 0 else await make_queue(settings, client, consumer=f"writer-{i + 1}")
        writers.append(
            Writer(
                q,
                make_sink(settings),
                lambda: open_pg(settings),
                batch_size=settings.batch_size,
                flush_interval=settings.flush_interval,
                on_dequeued=None if settings.forwarder == "none" else forwarder.deliver,
                dedupe=settings.dedupe,
                delay=delay.make(settings.delay_writer_us, settings.delay_kind),
            )
        )
    port = metrics.serve(settings.metrics_port, settings.host)
    log.info("node: metrics on :%d", port)
    try:
        # the stream ending does not stop the queue readers: they drain until SIGTERM
        await asyncio.gather(
            ingest_loop(settings, DECODERS[settings.decoder](), put, stop, room=room), *(w.run(stop) for w in writers)
        )
    finally:
        await forwarder.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    return stage_main("node", NodeSettings, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
