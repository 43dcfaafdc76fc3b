from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import psycopg
from psycopg import sql

from pipeline.rows import COLUMNS, Row

TABLE = sql.Identifier("telemetry_data")
COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)
INSERT_ONE = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
    TABLE, COLUMN_LIST, sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))
)
COPY_IN = sql.SQL("COPY {} ({}) FROM STDIN").format(TABLE, COLUMN_LIST)
COPY_IN_BINARY = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(TABLE, COLUMN_LIST)


class Sink(ABC):
    """Writes ``rows`` with ``conn``; the writer wraps the call in one transaction and commits."""

    name: str

    @abstractmethod
    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None: ...
