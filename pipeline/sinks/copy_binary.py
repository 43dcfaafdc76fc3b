from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from pipeline.rows import IDX, PG_TYPES, Row
from pipeline.sinks.base import Sink

_TS = IDX["reading_timestamp"]


class CopyBinarySink(Sink):
    """Binary ``COPY`` with declared column types (the timestamp string is parsed here, not by the server)."""

    name = "copy_binary"

    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        parse = datetime.fromisoformat
        async with conn.cursor() as cur, cur.copy(self.copy_in_binary) as copy:
            copy.set_types(list(PG_TYPES))
            for row in rows:
                ts = row[_TS]
                await copy.write_row((parse(ts) if isinstance(ts, str) else ts, *row[1:]))
