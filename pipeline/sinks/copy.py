from __future__ import annotations

from typing import Any

import psycopg

from pipeline.rows import Row
from pipeline.sinks.base import Sink


class CopySink(Sink):
    """The seed's write: text ``COPY ... FROM STDIN`` with ``write_row`` per row."""

    name = "copy"

    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with conn.cursor() as cur, cur.copy(self.copy_in) as copy:
            for row in rows:
                await copy.write_row(row)
