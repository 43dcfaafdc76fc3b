"""PostgreSQL: connections, the schema (sql/schema.sql, applied by the harness), and the accounting queries."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

SCHEMA_SQL = Path(__file__).resolve().parent.parent / "sql" / "schema.sql"
TABLE = "telemetry_data"


def _search_path(schema: str) -> sql.Composed:
    return sql.SQL("SET search_path TO {}").format(sql.Identifier(schema))


async def connect(dsn: str, schema: str) -> psycopg.AsyncConnection[Any]:
    """An autocommit connection (sinks open their own transaction) with ``search_path`` set to ``schema``."""
    conn = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await conn.execute(_search_path(schema))
    return conn


def connect_sync(dsn: str, schema: str) -> psycopg.Connection[Any]:
    conn = psycopg.connect(dsn, autocommit=True)
    conn.execute(_search_path(schema))
    return conn


UNIQUE_INDEX = "telemetry_data_sensor_seq"


def apply_schema(dsn: str, schema: str = "public", *, fresh: bool = False, unique: bool = False) -> None:
    """Create the schema's enum types and table (``fresh``: drop the table first: a new table per run).

    ``unique`` adds a unique index on (sensor_id, sequence_number), which idempotent writes (``dedupe``) need; the
    seed's table has no index but the primary key, and neither has ours by default."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(_search_path(schema))
        if fresh:
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(sql.Identifier(schema, TABLE)))
        conn.execute(SCHEMA_SQL.read_text())  # our own file: a literal script
        if unique:
            conn.execute(
                sql.SQL("CREATE UNIQUE INDEX IF NOT EXISTS {} ON {} (sensor_id, sequence_number)").format(
                    sql.Identifier(UNIQUE_INDEX), sql.Identifier(TABLE)
                )
            )


def drop_schema(dsn: str, schema: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@dataclass(frozen=True)
class TableCounts:
    rows: int
    distinct: int  # distinct (sensor_id, sequence_number) pairs

    @property
    def duplicated(self) -> int:
        return self.rows - self.distinct


def table_counts(dsn: str, schema: str) -> TableCounts:
    with connect_sync(dsn, schema) as conn:
        row = conn.execute(
            "SELECT count(*), count(DISTINCT (sensor_id, sequence_number)) FROM telemetry_data"
        ).fetchone()
    assert row is not None
    return TableCounts(int(row[0]), int(row[1]))
