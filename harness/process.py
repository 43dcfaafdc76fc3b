"""A stage as a child process: its command, its log, start/stop/kill, and its counters as last scraped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from harness.lifeline import RunRecord, die_with_parent
from harness.scrape import Scrape, parse
from pipeline.metrics import STAGES

log = logging.getLogger("telemetry_bench.orchestrator")

READY_TIMEOUT_S = 30.0
POLL_S = 0.25
STOP_TIMEOUT_S = 15.0


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on ``host`` that is free now and stays free until a stage binds it.

    Not the kernel's ``bind(0)``: that port comes from the ephemeral range, from which the kernel also picks the
    source port of every outgoing connection (to Redis, PostgreSQL, a stage's metrics), so between this call and
    the stage's own bind another connection could take it (``Address already in use``, seen on a busy 2-core CI).
    Ports are drawn at random *below* the ephemeral range, above Ray's worker ports (10002–19999), where the kernel
    never hands one out by itself; a port already handed out by this process is not drawn again.
    """
    lo = 20000
    hi = _ephemeral_range()[0] - 1
    if hi - lo < 1000:  # an unusual ephemeral range: the kernel's pick is the best there is
        lo, hi = 0, 0
    for _ in range(200):
        want = random.randint(lo, hi) if hi else 0
        if want in _handed_out:
            continue
        with socket.socket() as s:
            try:
                s.bind((host, want))
            except OSError:
                continue
            port = int(s.getsockname()[1])
        _handed_out.add(port)
        return port
    raise PipelineError(f"no free port on {host} in {lo}-{hi} after 200 tries")


class PipelineError(RuntimeError):
    pass


class Proc(Protocol):
    """What a stage's handle reads of its process: a local ``subprocess.Popen``, or a process a Ray actor runs on
    another host (``harness.cluster.remote.RemoteProc``)."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...


@dataclass
class Stage:
    name: str
    argv: list[str]
    metrics_url: str | None
    log_path: Path
    stats_path: Path | None = None  # final counters, written by the stage on exit
    proc: Proc | None = None
    last: Scrape = field(default_factory=Scrape)
    carry: dict[str, int] = field(default_factory=dict)  # counters of earlier incarnations (killed, restarted)
    restarts: int = 0
    record: RunRecord | None = None  # the run's record of what it started (harness.lifeline)

    def start(self, env: dict[str, str]) -> None:
        """Start the process in its own session (Ctrl-C reaches only the harness); it gets SIGTERM should the
        harness die, and its pid joins the run's record."""
        self.env = env
        self.log_file = self.log_path.open("ab" if self.restarts else "wb")
        self.proc = subprocess.Popen(
            die_with_parent(self.argv), stdout=self.log_file, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        if self.record is not None:
            self.record.add_child(self.proc.pid)

    def count(self, counter: str) -> int:
        """``telemetry_readings_total{stage=counter}`` over every incarnation of this stage (as last scraped)."""
        return self.last.readings(counter) + self.carry.get(counter, 0)

    async def kill_and_restart(self) -> None:
        """SIGKILL (no flush, no goodbye), then the same command again."""
        self.signal(signal.SIGKILL)
        await self.wait(10)
        self.restart()

    def restart(self) -> None:
        """A dead stage started again with the same command (a fault cell's kill, ``live``'s supervisor); the
        counters of the dead incarnation, as last scraped (or as it wrote them on exit), are carried over."""
        for c in STAGES:
            self.carry[c] = self.carry.get(c, 0) + self.last.readings(c)
        self.last = Scrape()
        self.restarts += 1
        with contextlib.suppress(Exception):
            self.log_file.close()
        self.start(self.env)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.alive and self.proc is not None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    async def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.alive and time.monotonic() < end:
            await asyncio.sleep(0.05)
        rc = self.proc.poll() if self.proc else None
        if rc is not None and self.stats_path is not None and self.stats_path.exists():
            self.last = parse(self.stats_path.read_text())
        return rc

    async def stop(self, timeout: float = STOP_TIMEOUT_S) -> int | None:
        """SIGTERM, wait for a clean exit, SIGKILL after ``timeout``."""
        self.signal(signal.SIGTERM)
        rc = await self.wait(timeout)
        if self.alive:
            log.error("%s did not stop within %.0f s of SIGTERM: killed", self.name, timeout)
            self.signal(signal.SIGKILL)
            rc = await self.wait(5)
        with contextlib.suppress(Exception):
            self.log_file.close()
        return rc
