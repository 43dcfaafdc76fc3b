"""``refuse_pg``: PostgreSQL refuses the run's connections for ``REFUSE_S``. The cell runs as a throwaway role of its
own (the database is shared with other runs' schemas, so ``ALTER DATABASE … ALLOW_CONNECTIONS false`` would refuse
them too): the role is made ``NOLOGIN`` and its sessions terminated, then allowed again; afterwards what it owns
goes to the harness's user and the role is dropped. Recovered when commits move again."""

import asyncio
import contextlib
import dataclasses
import logging
import uuid
from collections.abc import AsyncIterator

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from harness.faults.base import FaultKind, Pipeline

log = logging.getLogger("telemetry_bench.orchestrator")

REFUSE_S = 2.0  # how long the run's role may not log in


class RefusePg(FaultKind):
    name = "refuse_pg"
    hold_s = REFUSE_S
    admin = ""  # the harness's own connection (not the cell's role)
    role = ""
    killed = 0

    @contextlib.asynccontextmanager
    async def around_run(self, p: Pipeline) -> AsyncIterator[None]:
        admin = self.admin = p.services.pg_dsn
        role = self.role = f"tb_fault_{uuid.uuid4().hex[:12]}"
        ident = sql.Identifier(role)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(ident))
        p.services = dataclasses.replace(p.services, pg_dsn=make_conninfo(admin, user=role))
        log.info("refuse_pg: the cell connects to PostgreSQL as its own role %s", role)
        try:
            yield
        finally:
            p.services = dataclasses.replace(p.services, pg_dsn=admin)
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
                conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
                user = conninfo_to_dict(admin).get("user") or conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
                conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, sql.Identifier(str(user))))
                conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
                conn.execute(sql.SQL("DROP ROLE {}").format(ident))

    async def strike(self, p: Pipeline) -> None:
        self.killed = await asyncio.to_thread(_refuse, self.admin, self.role, False)

    async def undo(self, p: Pipeline) -> None:
        await asyncio.to_thread(_refuse, self.admin, self.role, True)
        self.fault.detail = (
            f"the run's role {self.role} refused logins for {REFUSE_S:g} s; {self.killed} of its sessions terminated"
        )


def _refuse(admin: str, role: str, allow: bool) -> int:
    """Allow or refuse the role's logins; when refusing, terminate its sessions (returns how many)."""
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("ALTER ROLE {} " + ("LOGIN" if allow else "NOLOGIN")).format(sql.Identifier(role)))
        if allow:
            return 0
        cur = conn.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = %s",
            (role,),
        )
        row = cur.fetchone()
        return int(row[0]) if row else 0
