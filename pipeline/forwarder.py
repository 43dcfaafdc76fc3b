"""Forwarder stage (split topology): the forwarder's queue → forwarder variant → backend.

    python -m pipeline.forwarder --forwarder async --forward-batch 500 --backend-url http://127.0.0.1:8000

Fed by ingest (``--forward-from ingest``) or by the writer after commit (``--forward-from writer``). On SIGTERM it
stops reading, waits for the POSTs in flight, and exits 0.
"""

from __future__ import annotations

import logging

from pipeline import metrics
from pipeline.config import ForwarderSettings
from pipeline.runtime import stage_main, stop_event
from pipeline.wiring import make_forwarder, make_queue, open_redis

log = logging.getLogger("telemetry_bench.forwarder")

READ_ROWS = 1000
STOP_CHECK_S = 0.2


async def run(settings: ForwarderSettings) -> None:
    stop = stop_event()
    client = await open_redis(settings)
    queue = await make_queue(settings, client, forward=True, consumer=settings.consumer)
    forwarder = await make_forwarder(settings, settings.redis_url)
    port = metrics.serve(settings.metrics_port, settings.host)
    log.info("forwarder %s: metrics on :%d, → %s", settings.forwarder, port, settings.backend_url)
    try:
        while not stop.is_set():
            rows, token = await queue.get(max(READ_ROWS, settings.forward_batch), STOP_CHECK_S)
            if rows:
                await forwarder.deliver(rows)
                await queue.ack(token)
    finally:
        await forwarder.close()
        await client.aclose()


def main(argv: list[str] | None = None) -> int:
    return stage_main("forwarder", ForwarderSettings, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
