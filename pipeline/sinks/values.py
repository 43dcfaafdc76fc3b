from __future__ import annotations

from functools import cache
from typing import Any

import psycopg
from psycopg import sql

from pipeline.rows import COLUMNS, Row
from pipeline.sinks.base import COLUMN_LIST, Sink

MAX_PARAMS = 65_535  # the protocol's limit on bind parameters per statement
CHUNK = MAX_PARAMS // len(COLUMNS)


@cache
def _statement(table: str, n: int) -> str:
    """The statement for n rows, rendered once per n (composing 65k placeholders costs more than the insert)."""
    one = sql.SQL("({})").format(sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
    values = sql.SQL(", ").join([one] * n)
    stmt = sql.SQL("INSERT INTO {} ({}) VALUES {}").format(sql.Identifier(table), COLUMN_LIST, values)
    return stmt.as_string()


class ValuesSink(Sink):
    """Multi-row ``INSERT ... VALUES (...), (...)``, in chunks that stay under the parameter limit."""

    name = "values"

    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None:
        async with conn.cursor() as cur:
            for start in range(0, len(rows), CHUNK):
                chunk = rows[start : start + CHUNK]
                await cur.execute(_statement(self.table_name, len(chunk)), [v for row in chunk for v in row])
