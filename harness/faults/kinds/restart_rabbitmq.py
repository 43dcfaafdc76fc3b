"""``restart_rabbitmq``: the machine's own RabbitMQ restarted (``rabbitmqctl stop_app``, down ``RABBIT_DOWN_S``,
``start_app``: every connection dropped, the quorum queue recovered from its log on disk); only a local RabbitMQ
is, any other run records why it was not injected. The clients reconnect (aio-pika's robust connection), publishes
and declares retry, acks on the dead channel are lost and those deliveries come back (``dedupe``). Recovered when
commits move again."""

import asyncio
import subprocess
import time

from harness.faults.base import FaultKind, Pipeline
from harness.process import PipelineError
from pipeline.queues import QUEUES

RABBIT_DOWN_S = 1.0  # how long the broker stays down between its stop and its start


class RestartRabbitMQ(FaultKind):
    name = "restart_rabbitmq"

    async def strike(self, p: Pipeline) -> None:
        f = self.fault
        queue = QUEUES[p.cfg.queue]
        found = p.services.brokers.found.get("rabbitmq")
        if queue.broker != "rabbitmq" or found is None or found[1] != "local":
            where = f"{found[1]} RabbitMQ" if found else f"a {p.cfg.queue} queue"
            f.note = (
                f"not injected: restart_rabbitmq restarts the machine's own RabbitMQ under a rabbitmq cell ({where})"
            )
            f.injected_at_ns = None
            return
        for cmd in (["rabbitmqctl", "-q", "stop_app"], None, ["rabbitmqctl", "-q", "start_app"]):
            if cmd is None:
                await asyncio.sleep(RABBIT_DOWN_S)
                continue
            proc = await asyncio.to_thread(subprocess.run, cmd, capture_output=True, text=True, timeout=120)
            if proc.returncode != 0:
                raise PipelineError(f"fault restart_rabbitmq: {' '.join(cmd)} failed: {proc.stderr.strip()}")
        f.restarted_at_ns = time.time_ns()
        after = await queue.summary(None, p.queue_key)  # type: ignore[arg-type]  # the broker's own state
        if not after:
            raise PipelineError("fault restart_rabbitmq: the run's queue did not come back")
        f.detail = f"RabbitMQ (stop_app, down {RABBIT_DOWN_S:g} s, start_app) came back with " + "; ".join(
            f"{k}: {v}" for k, v in after.items()
        )
