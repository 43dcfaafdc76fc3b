"""``restart_nats``: the cell's own JetStream server (a throwaway ``nats-server -js`` whose store is in a temporary
directory, never the machine's NATS) stopped, down ``NATS_DOWN_S``, started again on the same port and store; the
stream, its durable consumer and every message not yet acknowledged must come back (read before and after). Only
for a ``jetstream`` cell; any other records why it was not injected. Recovered when commits move again."""

import asyncio
import contextlib
import dataclasses
import logging
import shutil
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

from harness.faults.base import Fault, FaultKind, Pipeline
from harness.process import PipelineError
from harness.servers import ThrowawayNats
from harness.services import Brokers
from pipeline.queues import QUEUES

log = logging.getLogger("telemetry_bench.faults")

NATS_DOWN_S = 1.0  # how long the server stays down between its stop and its start


class RestartNats(FaultKind):
    name = "restart_nats"

    def __init__(self, fault: Fault) -> None:
        super().__init__(fault)
        self.own: ThrowawayNats | None = None

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        if QUEUES[p.cfg.queue].broker != "nats":
            yield
            return
        root = Path(tempfile.mkdtemp(prefix="tb-nats-"))
        own = self.own = ThrowawayNats(root)
        try:
            await asyncio.to_thread(own.start)
            brokers = Brokers()
            brokers.found = {**p.services.brokers.found, "nats": (own.url, "embedded")}
            p.services = dataclasses.replace(p.services, brokers=brokers)
            log.info("restart_nats: the cell runs on its own nats-server %s in %s", own.version, root)
            yield
        finally:
            await asyncio.to_thread(own.stop)
            shutil.rmtree(root, ignore_errors=True)

    async def strike(self, p: Pipeline) -> None:
        f, own = self.fault, self.own
        if own is None:
            f.note = (f"not injected: restart_nats restarts a jetstream cell's own server, and this cell's queue is "
                      f"{p.cfg.queue}")  # fmt: skip
            f.injected_at_ns = None
            return
        queue = QUEUES[p.cfg.queue]
        try:
            await asyncio.to_thread(own.restart, NATS_DOWN_S)
            f.restarted_at_ns = time.time_ns()
            after = await queue.summary(None, p.queue_key)  # type: ignore[arg-type]  # the broker's own state
        except Exception as exc:  # a server that did not come back: this cell fails, not the run
            raise PipelineError(f"fault restart_nats: {type(exc).__name__}: {exc}") from None
        if not after or "consumer writers" not in next(iter(after.values())):
            raise PipelineError(f"fault restart_nats: the stream or its consumer did not come back: {after}")
        kept = "; ".join(f"{k}: {v}" for k, v in after.items())
        f.detail = f"nats-server {own.version} (JetStream, file store), down {NATS_DOWN_S:g} s, came back with {kept}"
