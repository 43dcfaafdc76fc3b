from __future__ import annotations

from typing import Any

import psycopg

from pipeline.rows import Row
from pipeline.sinks.base import Sink


class InsertSink(Sink):
    """One INSERT statement per row: one round trip per reading."""

    name = "insert"

    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with conn.cursor() as cur:
            for row in rows:
                await cur.execute(self.insert_one, row, prepare=True)
