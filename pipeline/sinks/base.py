from __future__ import annotations

from abc import ABC, abstractmethod
from functools import cached_property
from typing import Any

import psycopg
from psycopg import sql

from pipeline.rows import COLUMNS, Row

TABLE_NAME = "telemetry_data"
COLUMN_LIST = sql.SQL(", ").join(sql.Identifier(c) for c in COLUMNS)


class Sink(ABC):
    """Writes ``rows`` into ``table`` with ``conn``; the writer wraps the call in one transaction and commits.

    ``table`` is ``telemetry_data``, or the writer's staging table when writes are made idempotent (``dedupe``).
    """

    name: str

    def __init__(self, table: str = TABLE_NAME) -> None:
        self.table_name = table
        self.table = sql.Identifier(table)

    @abstractmethod
    async def write(self, conn: psycopg.AsyncConnection[Any], rows: list[Row]) -> None: ...

    @cached_property
    def insert_one(self) -> sql.Composed:
        placeholders = sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS))
        return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(self.table, COLUMN_LIST, placeholders)

    @cached_property
    def copy_in(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN").format(self.table, COLUMN_LIST)

    @cached_property
    def copy_in_binary(self) -> sql.Composed:
        return sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(self.table, COLUMN_LIST)
