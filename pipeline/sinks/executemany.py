from __future__ import annotations

from typing import Any

import psycopg

from pipeline.rows import Row
from pipeline.sinks.base import Sink


class ExecutemanySink(Sink):
    """``cursor.executemany``: psycopg 3 pipelines the statements (no round trip per row)."""

    name = "executemany"

    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with conn.cursor() as cur:
            await cur.executemany(self.insert_one, rows)
