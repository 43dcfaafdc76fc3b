"""``lock_table``: an ``ACCESS EXCLUSIVE`` lock on the run's own table, held ``LOCK_S`` from a harness connection:
every COPY, INSERT and SELECT on it waits; then released. Recovered when commits move again."""

import contextlib
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql

from harness.faults.base import FaultKind, Pipeline

LOCK_S = 3.0  # how long the lock is held


class LockTable(FaultKind):
    name = "lock_table"
    in_chaos = True
    hold_s = LOCK_S
    admin = ""  # the harness's own connection (not the cell's role)
    conn: psycopg.AsyncConnection | None = None

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        self.admin = p.services.pg_dsn
        yield

    async def strike(self, p: Pipeline) -> None:
        self.conn = await psycopg.AsyncConnection.connect(self.admin)  # a transaction is open from its first query
        table = sql.Identifier(p.schema, "telemetry_data")
        await self.conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))

    async def undo(self, p: Pipeline) -> None:
        if self.conn is None:
            return
        try:
            await self.conn.commit()
        finally:
            await self.conn.close()
        self.fault.detail = f"ACCESS EXCLUSIVE lock on {p.schema}.telemetry_data held {LOCK_S:g} s"
