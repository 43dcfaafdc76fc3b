"""A stage as a child process: its command, its log, start/stop/kill, and its counters as last scraped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
            self.argv, stdout=self.log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True,
            preexec_fn=die_with_parent(),
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
