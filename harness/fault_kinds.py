"""The timed faults the pipeline meets in production, each held for a while and then undone: PostgreSQL refusing the
run's connections (``refuse_pg``), a table lock that stalls every write (``lock_table``), a writer paused past the
stream's claim timeout (``pause_writer``), Redis at its ``maxmemory`` refusing writes (``redis_full``), the backend
answering 503 (``backend_503``).
``harness.faults.Injection`` starts one as a task and watches for the affected path to move again once it is undone.

Each touches only what the run owns: ``refuse_pg`` runs the cell as its own PostgreSQL role (the database is shared
with other runs' schemas, so ``ALTER DATABASE … ALLOW_CONNECTIONS false`` would refuse them too): the role is made
``NOLOGIN`` and its sessions terminated, then allowed again; ``lock_table`` locks the run's own table from a
harness connection; ``pause_writer`` stops one of the run's writer processes; ``redis_full`` lowers the maxmemory
of the cell's own throwaway Redis; ``backend_503`` switches the run's own backend's fault hook (the one fake: a real
backend can't be made to answer 503 from outside; ``pipeline/backend/fault_hook.py``, on only with ``--fault-hook``,
which the orchestrator passes only to a run with this fault)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import signal
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import httpx
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from harness.process import PipelineError
from pipeline.queues.stream import StreamQueue

if TYPE_CHECKING:
    from harness.faults import Fault, Pipeline

log = logging.getLogger("telemetry_bench.orchestrator")

REFUSE_S = 2.0  # refuse_pg: how long the run's role may not log in
LOCK_S = 3.0  # lock_table: how long the ACCESS EXCLUSIVE lock is held
PAUSE_S = StreamQueue.claim_idle_s + 2.0  # pause_writer: past the claim timeout, so another writer claims its entries
PAUSED = "writer-1"
FULL_S = 2.0  # redis_full: how long the cell's own Redis refuses writes (maxmemory reached)
UNAVAILABLE_S = 2.0  # backend_503: how long the backend answers 503 to every POST of readings
# backend_503: the backend's fault hook's signals (pipeline.backend.fault_hook.ON / OFF, checked by a test; not
# imported: importing the backend package costs the harness a second of FastAPI imports at the fault's moment)
HOOK_ON, HOOK_OFF = signal.SIGUSR1, signal.SIGUSR2


def _dsn_as(dsn: str, user: str) -> str:
    return make_conninfo(dsn, user=user)


@contextlib.asynccontextmanager
async def own_role(p: Pipeline) -> AsyncIterator[str]:
    """refuse_pg: the cell connects as a throwaway superuser role of its own (its schema and table are created by
    it), so refusing that role's logins refuses exactly this run. Afterwards what it owns goes to the harness's
    user and the role is dropped."""
    admin = p.services.pg_dsn
    role = f"tb_fault_{uuid.uuid4().hex[:12]}"
    ident = sql.Identifier(role)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER").format(ident))
    p.services = dataclasses.replace(p.services, pg_dsn=_dsn_as(admin, role))
    log.info("refuse_pg: the cell connects to PostgreSQL as its own role %s", role)
    try:
        yield role
    finally:
        p.services = dataclasses.replace(p.services, pg_dsn=admin)
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN").format(ident))
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s", (role,))
            user = conninfo_to_dict(admin).get("user") or conn.execute("SELECT current_user").fetchone()[0]  # type: ignore[index]
            conn.execute(sql.SQL("REASSIGN OWNED BY {} TO {}").format(ident, sql.Identifier(str(user))))
            conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
            conn.execute(sql.SQL("DROP ROLE {}").format(ident))


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


async def refuse_pg(p: Pipeline, f: Fault, admin: str, role: str) -> None:
    killed = await asyncio.to_thread(_refuse, admin, role, False)
    try:
        await asyncio.sleep(REFUSE_S)
    finally:
        await asyncio.to_thread(_refuse, admin, role, True)
    f.detail = f"the run's role {role} refused logins for {REFUSE_S:g} s; {killed} of its sessions terminated"


async def lock_table(p: Pipeline, f: Fault, admin: str, schema: str) -> None:
    """An ``ACCESS EXCLUSIVE`` lock on the run's table, held ``LOCK_S`` from a harness connection: every COPY,
    INSERT and SELECT on it waits."""
    conn = await psycopg.AsyncConnection.connect(admin)
    try:
        async with conn.transaction():
            table = sql.Identifier(schema, "telemetry_data")
            await conn.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table))
            await asyncio.sleep(LOCK_S)
    finally:
        await conn.close()
    f.detail = f"ACCESS EXCLUSIVE lock on {schema}.telemetry_data held {LOCK_S:g} s"


async def pause_writer(p: Pipeline, f: Fault) -> None:
    """SIGSTOP a writer past the stream's claim timeout (another writer claims what it held), then SIGCONT: two
    writers have believed they owned the same entries; dedupe makes the second commit harmless."""
    stage = p.stages.get(PAUSED)
    if stage is None or "writer-2" not in p.stages:
        raise PipelineError(f"fault {f.kind}: needs writers {PAUSED} and writer-2 (set workers = 2, topology split)")
    stream = p.cfg.queue == "stream"
    stage.signal(signal.SIGSTOP)
    try:
        held = await _pending(p) if stream else 0
        await asyncio.sleep(PAUSE_S)
        left = await _pending(p) if stream else 0  # what no other writer claimed meanwhile
    finally:
        stage.signal(signal.SIGCONT)
    # recovered when the paused writer runs again (its metrics answer): it may have nothing left to commit, since
    # the other writer claimed what it held and the stream may be over, so its own commits can't be the sign
    await _answers_again(stage.metrics_url)
    if f.resumed_at_ns is None:
        f.resumed_at_ns = time.time_ns()
    f.detail = f"{PAUSED} paused (SIGSTOP) {PAUSE_S:g} s, past the {StreamQueue.claim_idle_s:g} s claim timeout"
    if stream:
        f.detail += f", holding {held} pending stream entries, {held - left} of them claimed by another writer"


async def _answers_again(url: str | None, timeout_s: float = 30.0) -> None:
    """Wait until a resumed stage's ``/metrics`` answers (at most ``timeout_s``)."""
    if not url:
        return
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=1.0) as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.05)


async def _pending(p: Pipeline) -> int:
    """How many stream entries the paused writer has read and not acknowledged (another writer will claim them;
    "writers" is the consumer group every writer joins, ``pipeline.queues.base``)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(p.services.redis_url, socket_timeout=5)
    try:
        entries = await client.xpending_range(
            p.queue_key, "writers", min="-", max="+", count=100_000, consumername=PAUSED
        )
        return len(entries)
    finally:
        await client.aclose()


async def redis_full(p: Pipeline, f: Fault) -> None:
    """The cell's own Redis at its ``maxmemory`` (``noeviction``): every write is refused with an OOM error for
    ``FULL_S``, reads still answer; then the limit is lifted. Never the machine's Redis (``around_run``)."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(p.services.redis_url, socket_timeout=5)
    try:
        await client.config_set("maxmemory-policy", "noeviction")
        await client.config_set("maxmemory", 1)  # below what it uses: any write that could add memory is refused
        try:
            await asyncio.sleep(FULL_S)
        finally:
            await client.config_set("maxmemory", 0)
    finally:
        await client.aclose()
    f.detail = f"the cell's own Redis at maxmemory (noeviction) {FULL_S:g} s: writes refused with OOM"


async def backend_503(p: Pipeline, f: Fault) -> None:
    """The backend answers ``503 Service Unavailable`` to every POST of readings for ``UNAVAILABLE_S``: SIGUSR1 to
    its fault hook, then SIGUSR2 (``pipeline.backend.fault_hook``). What happens to the readings is the forwarder
    variant's own behaviour (both retry a 5xx for ``RETRY_FOR_S``: nothing lost)."""
    stage = p.stages.get("backend")
    if stage is None:
        raise PipelineError(f"fault {f.kind}: this run forwards nothing, so it has no backend (set forwarder)")
    stage.signal(HOOK_ON)
    try:
        await asyncio.sleep(UNAVAILABLE_S)
    finally:
        stage.signal(HOOK_OFF)
    f.detail = f"the backend answered 503 to every POST of readings for {UNAVAILABLE_S:g} s (its fault hook)"
