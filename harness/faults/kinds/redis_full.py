"""``redis_full``: the cell's own Redis at its ``maxmemory`` (``noeviction``): every write is refused with an OOM
error for ``FULL_S``, reads still answer; then the limit is lifted. Never the machine's Redis. Recovered when
commits move again."""

from typing import Any

from harness.faults.base import Pipeline
from harness.faults.shared import OwnRedis

FULL_S = 2.0  # how long the cell's own Redis refuses writes


class RedisFull(OwnRedis):
    name = "redis_full"
    hold_s = FULL_S
    client: Any = None

    async def strike(self, p: Pipeline) -> None:
        import redis.asyncio as aioredis

        self.client = aioredis.Redis.from_url(p.services.redis_url, socket_timeout=5)
        await self.client.config_set("maxmemory-policy", "noeviction")
        await self.client.config_set("maxmemory", 1)  # below what it uses: any write that could add memory is refused

    async def undo(self, p: Pipeline) -> None:
        if self.client is None:
            return
        try:
            await self.client.config_set("maxmemory", 0)
        finally:
            await self.client.aclose()
        self.fault.detail = f"the cell's own Redis at maxmemory (noeviction) {FULL_S:g} s: writes refused with OOM"
