"""``restart_redis``: the cell's own Redis (with an append-only file) stopped, down ``REDIS_DOWN_S``, started again;
it must come back with exactly the queue's state it had (``queue_state``, read while writes are paused). Never the
machine's Redis. Recovered when commits move again."""

import asyncio
import time

from harness.faults.base import Pipeline
from harness.faults.shared import OwnRedis, queue_state
from harness.process import PipelineError

REDIS_DOWN_S = 1.0  # how long the server stays down between its stop and its start


class RestartRedis(OwnRedis):
    name = "restart_redis"
    persistent = True

    async def strike(self, p: Pipeline) -> None:
        f, own = self.fault, self.own_redis
        assert own is not None
        try:
            # writes are paused while the state is read, so the server stops with exactly that state; what
            # it reloads is read on a private socket before the stages can reach it
            q = p.cfg.queue
            before = await asyncio.to_thread(queue_state, own.url, p.queue_key, q, pause_s=REDIS_DOWN_S + 5)
            after = await asyncio.to_thread(own.restart, REDIS_DOWN_S, lambda url: queue_state(url, p.queue_key, q))
        except Exception as exc:  # a Redis error, a server that did not come back: this cell fails, not the run
            raise PipelineError(f"fault restart_redis: {type(exc).__name__}: {exc}") from None
        f.restarted_at_ns = time.time_ns()
        if after != before:
            raise PipelineError(f"fault restart_redis: Redis came back with {after}, not {before}")
        kept = "; ".join(f"{k}: {v}" for k, v in before.items()) or "no keys"
        f.detail = f"Redis {own.version} with AOF, down {REDIS_DOWN_S:g} s, came back with every key: {kept}"
