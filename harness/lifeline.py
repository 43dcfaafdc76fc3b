"""Nothing left behind: stages die with the harness, a stop signal stops the run in order, and the next run removes
what a killed run left.

Three mechanisms, each for one way a run can end:

- **SIGTERM, SIGINT or SIGHUP to the harness** (``telemetry-bench run`` / ``live``): :func:`graceful_stop_signals`
  turns SIGTERM and SIGHUP into the SIGINT that ``asyncio.run`` already handles (it cancels the main task, so every
  ``finally`` runs: the orchestrator stops its stages and throwaway servers, the runner has written the results so
  far); the command then exits non-zero (130).
- **SIGKILL to the harness** (nothing of it runs any more): every stage is started through :func:`die_with_parent`,
  so the kernel sends it SIGTERM when the harness dies (Linux ``PR_SET_PDEATHSIG``); a stage
  then flushes, acknowledges and exits as on any stop.
- **What a killed run leaves in the services** (queue keys, progress records, its schema): each run writes a
  :class:`RunRecord` (``<tmp>/telemetry-bench-runs/<pid>.json``) naming its harness process, its stage processes,
  its Redis key prefix and its PostgreSQL schema, and removes it when it ends. :func:`reap_leftovers`, called when a
  run starts, handles every record whose harness is gone: stage processes still alive (same pid *and* start time,
  so a reused pid is never touched) get SIGKILL, the key prefix is deleted, a non-``public`` schema is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger("telemetry_bench.lifeline")

SETPRIV = shutil.which("setpriv")  # util-linux: in every Debian
RECORDS = Path(tempfile.gettempdir()) / "telemetry-bench-runs"


def die_with_parent(argv: Sequence[str], sig: int = signal.SIGTERM) -> list[str]:
    """``argv`` so started that the process gets ``sig`` when the process that started it dies.

    ``setpriv --pdeathsig`` (Linux ``PR_SET_PDEATHSIG``) sets the signal and execs ``argv`` in the same process, so
    the pid the caller records is the stage's. No ``preexec_fn``: Python code run between fork and exec in a process
    with gRPC threads crashed the child (SIGSEGV after "Other threads are currently calling into gRPC, skipping
    fork() handlers"), whereas without one ``subprocess`` uses vfork and runs no fork handler at all. Where setpriv
    is missing, ``argv`` as it is: the run records (below) still clean up.
    """
    if SETPRIV is None:
        return list(argv)
    return [SETPRIV, f"--pdeathsig={signal.Signals(sig).name.removeprefix('SIG')}", "--", *argv]


STOP_GRACE_S = 60.0  # an orderly stop after SIGTERM/SIGHUP takes seconds; past this the harness exits regardless


def _last_resort(grace_s: float, signum: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
    """After ``grace_s`` of an orderly stop that has not ended: one line, then exit 130 at once. Every stage and
    throwaway server was started with ``die_with_parent`` and gets SIGTERM as the harness dies; the run's record
    stays, so the next run reaps its queue keys and schema. (A stop signal has been seen to leave ``run`` waiting
    on an await that never ended, in about 1 of 15 CI-like suites; this bounds it while its cause is unknown. A stop
    that is slow but still going — stages that each need their full stop timeout — is cut short too: the results of
    the repeats already finished are on disk, the interrupted one's are not.) Before it exits it writes what was
    still waiting: every thread's stack and, where the stop came during ``loop``, every asyncio task's (``_dump``)."""
    timer = threading.Timer(grace_s, _exit_now, (grace_s, signum, loop))
    timer.daemon = True
    timer.start()


def _exit_now(grace_s: float, signum: int, loop: asyncio.AbstractEventLoop | None = None) -> None:
    name = signal.Signals(signum).name
    os.write(2, f"telemetry-bench: the orderly stop after {name} did not end within {grace_s:g} s: exiting now "
                "(every stage gets SIGTERM from its lifeline; the next run reaps what is left)\n".encode())  # fmt: skip
    with contextlib.suppress(Exception):  # a diagnosis must never keep the process from exiting
        _dump(loop)
    os._exit(130)


def _dump(loop: asyncio.AbstractEventLoop | None) -> None:
    """What the stop was still waiting on, to stderr: every thread's stack, then each unfinished asyncio task's
    (read from another thread: a best-effort snapshot, which is what a hung loop leaves to read)."""
    sys.stderr.write("telemetry-bench: what the stop was waiting on — threads:\n")
    sys.stderr.flush()
    faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
    if loop is None:
        return
    tasks = [t for t in list(asyncio.all_tasks(loop)) if not t.done()]
    sys.stderr.write(f"telemetry-bench: {len(tasks)} asyncio tasks not done:\n")
    for t in tasks:
        sys.stderr.write(f"- {t.get_name()} {t.get_coro()!r}\n")
        t.print_stack(limit=12, file=sys.stderr)
    sys.stderr.flush()


def graceful_stop_signals(grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM and SIGHUP behave as Ctrl-C (SIGINT): ``asyncio.run`` cancels the run and every cleanup runs; if that
    has not ended within ``grace_s``, the process exits anyway (``_last_resort``)."""
    armed: list[bool] = []

    def as_interrupt(signum: int, frame: object) -> None:
        if not armed:
            armed.append(True)
            _last_resort(grace_s, signum, asyncio_loop())
        signal.raise_signal(signal.SIGINT)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, as_interrupt)


def asyncio_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None (a signal handler runs between the loop's bytecodes)."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def raise_if_cancelled() -> None:
    """Raise ``CancelledError`` when the current task has been asked to stop but an ``await`` swallowed the request.

    Python 3.11's ``asyncio.wait_for`` returns its future's result when that future finished in the same loop step
    as the task's cancellation (gh-86296, fixed in 3.12), and some clients' awaits do the same: a Ctrl-C or SIGTERM
    (cancels the run's main task) could then be lost and the run go on to its end. ``Task.cancelling()`` still
    counts the request, so the loops that pace a run (the stream loop, the runner's rounds) call this each turn.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


def _start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


@dataclass
class RunRecord:
    """What one harness process has started and must leave behind it clean (see the module's docstring)."""

    redis_url: str
    pg_dsn: str
    key_prefix: str
    schema: str
    owner: int = field(default_factory=os.getpid)
    owner_started: float | None = None
    children: list[tuple[int, float | None]] = field(default_factory=list)
    brokers: dict[str, str] = field(default_factory=dict)  # broker → URL, for a broker queue (jetstream, rabbitmq)

    def __post_init__(self) -> None:
        if self.owner_started is None:
            self.owner_started = _start_time(self.owner)

    @property
    def path(self) -> Path:
        return RECORDS / f"{self.owner}-{self.key_prefix.replace(':', '_').replace('/', '_')}.json"

    def save(self) -> None:
        RECORDS.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # DSNs may hold a password
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f)
        tmp.replace(self.path)

    def add_child(self, pid: int) -> None:
        self.children.append((pid, _start_time(pid)))
        self.save()

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)

    @property
    def owner_alive(self) -> bool:
        started = _start_time(self.owner)
        return started is not None and (self.owner_started is None or abs(started - self.owner_started) < 1e-3)

    @classmethod
    def load(cls, path: Path) -> RunRecord:
        data: dict[str, Any] = json.loads(path.read_text())
        data["children"] = [tuple(c) for c in data.get("children", [])]
        return cls(**data)


def _kill_children(record: RunRecord) -> int:
    killed = 0
    for pid, started in record.children:
        now = _start_time(pid)
        if now is None or started is None or abs(now - started) > 1e-3:
            continue  # gone, or the pid now belongs to another process
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()
            killed += 1
    return killed


def drop_keys(redis_url: str, prefix: str) -> None:
    """Delete every Redis key of a run (its queue, forward queue, progress record and processing lists)."""
    import redis

    client = redis.Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


def _clear_services(record: RunRecord) -> None:
    import psycopg

    drop_keys(record.redis_url, record.key_prefix)
    if record.brokers:  # the run's broker streams/queues (jetstream, rabbitmq)
        from harness.broker_queues import drop_broker_queues

        drop_broker_queues(dict(record.brokers), record.key_prefix)
    if record.schema != "public":
        from psycopg import sql

        with psycopg.connect(record.pg_dsn, autocommit=True, connect_timeout=2) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(record.schema)))


def reap_leftovers() -> list[str]:
    """Clean up after every run whose harness is gone; returns one line per run cleaned, for the console."""
    done: list[str] = []
    if not RECORDS.is_dir():
        return done
    for path in sorted(RECORDS.glob("*.json")):
        try:
            record = RunRecord.load(path)
        except (OSError, ValueError, TypeError) as exc:
            log.warning("unreadable run record %s (%s): removed", path, exc)
            path.unlink(missing_ok=True)
            continue
        if record.owner_alive:
            continue
        killed = _kill_children(record)
        try:
            _clear_services(record)
        except Exception as exc:  # the services of that run may be gone (a throwaway server): nothing to clear
            log.info("leftovers of run %s: services not reachable (%s)", record.owner, exc)
        path.unlink(missing_ok=True)
        done.append(
            f"cleaned up after a run that did not end (harness pid {record.owner}): {killed} process(es) stopped, "
            f"keys {record.key_prefix}* and schema {record.schema} removed"
        )
    return done
