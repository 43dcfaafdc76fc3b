from __future__ import annotations

from pipeline.forwarders.base import Forwarder
from pipeline.rows import Row


class NoForwarder(Forwarder):
    """Forwards nothing: the pipeline ends at PostgreSQL."""

    name = "none"

    async def send(self, rows: list[Row]) -> None:
        return None
