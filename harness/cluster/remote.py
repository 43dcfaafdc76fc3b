"""The orchestrator's handle on a stage whose process a :class:`~harness.cluster.actors.StageHost` actor runs on its
host: the same interface as a local :class:`~harness.process.Stage` (start, alive, signal, wait, stop, restart,
its counters), so ``harness.orchestrator`` and ``harness.faults`` drive it unchanged.

Ray restarts the actor when the process dies unasked (``max_restarts``); the handle notices the new incarnation at
its next look, carries the dead incarnation's counters over (as ``Stage.restart`` does) and counts the restart. A
fault's ``kill_and_restart`` (SIGKILL, then ``restart``) therefore waits for Ray's restart instead of starting the
command itself. CPU seconds and peak memory are summed over the incarnations, as last seen alive.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from dataclasses import dataclass, field
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError

from harness.process import PipelineError, Stage
from harness.scrape import Scrape, parse
from pipeline.metrics import STAGES

CALL_TIMEOUT_S = 60.0  # an actor call waits out a restart (a worker process starting: seconds on 2 busy cores)
RESTART_TIMEOUT_S = 60.0


class RemoteProc:
    """What the orchestrator reads of ``Stage.proc``: ``poll()`` and ``pid``."""

    def __init__(self, stage: RemoteStage) -> None:
        self.stage = stage

    def poll(self) -> int | None:
        return self.stage.poll()

    @property
    def pid(self) -> int:
        return self.stage.remote_pid

    def send_signal(self, sig: int) -> None:
        self.stage.signal(sig)


@dataclass
class RemoteStage(Stage):
    host: str = "a"
    ip: str = "127.0.0.1"
    resource: str = ""
    max_restarts: int = 3
    cwd: str = "."
    actor: Any = None
    incarnation: int = 0
    remote_pid: int = 0
    rc: int | None = None
    cpu_s: float = 0.0  # earlier incarnations
    rss_peak: float = 0.0
    usage_now: dict[str, float] = field(default_factory=dict)
    _killed_at: int = -1
    _gone: bool = False

    def start(self, env: dict[str, str]) -> None:
        from harness.cluster.actors import StageHost

        self.env = env
        cls = ray.remote(StageHost).options(
            resources={self.resource: 0.001}, num_cpus=0, max_restarts=self.max_restarts, max_task_retries=-1,
        )  # fmt: skip
        self.actor = cls.remote(self.name, self.argv, env, str(self.log_path), self.cwd)
        self.proc = RemoteProc(self)
        self._look()

    def _call(self, method: str, *args: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return ray.get(getattr(self.actor, method).remote(*args), timeout=timeout)

    def _look(self) -> dict[str, Any] | None:
        """The actor's state now, a restart by Ray acknowledged; None once the actor is gone for good."""
        if self._gone or self.actor is None:
            return None
        try:
            s: dict[str, Any] = self._call("state")
        except (RayActorError, GetTimeoutError):
            self._gone = True
            self.rc = self.rc if self.rc is not None else -9
            return None
        if s["incarnation"] > self.incarnation:  # Ray restarted it: a new process, counters from zero
            for c in STAGES:
                self.carry[c] = self.carry.get(c, 0) + self.last.readings(c)
            self.last = Scrape()
            self.cpu_s += self.usage_now.get("cpu_s", 0.0)
            self.restarts += s["incarnation"] - self.incarnation
            self.incarnation = s["incarnation"]
        self.remote_pid, self.rc, self.ip = s["pid"], s["rc"], s["ip"]
        with contextlib.suppress(RayActorError, GetTimeoutError):
            self.usage_now = self._call("usage", timeout=5)
            self.rss_peak = max(self.rss_peak, self.usage_now["rss_bytes"])
        return s

    def poll(self) -> int | None:
        self._look()
        return self.rc

    @property
    def alive(self) -> bool:
        return self.actor is not None and self._look() is not None and self.rc is None

    @property
    def pid(self) -> int | None:
        """Its pid where it is a process of this machine (a node on a loopback address): the local resource
        monitor samples it; on another host its figures come from its actor (``figures``)."""
        return (self.remote_pid or None) if self.ip.startswith("127.") else None

    @property
    def cpu_seconds(self) -> float:
        return self.cpu_s + self.usage_now.get("cpu_s", 0.0)

    def signal(self, sig: int) -> None:
        if self.actor is None or self._gone:
            return
        if sig == signal.SIGKILL:
            self._killed_at = self.incarnation
        with contextlib.suppress(RayActorError, GetTimeoutError):
            self._call("signal", int(sig))

    async def wait(self, timeout: float) -> int | None:
        end = time.monotonic() + timeout
        while self.alive and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.rc is not None and self.stats_path is not None and not self._gone:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                text = self._call("read", str(self.stats_path))
                if text:
                    self.last = parse(text)
        return self.rc

    async def kill_and_restart(self) -> None:
        self.signal(signal.SIGKILL)
        self.restart()

    def restart(self) -> None:
        """After a SIGKILL: Ray restarts the actor, which starts the same command; wait for that incarnation."""
        end = time.monotonic() + RESTART_TIMEOUT_S
        while self.incarnation <= self._killed_at or self.rc is not None:
            if self._look() is None:
                raise PipelineError(f"{self.name} on host {self.host}: its actor is gone (past max_restarts?)")
            if time.monotonic() > end:
                raise PipelineError(f"{self.name} on host {self.host}: not restarted by Ray within "
                                    f"{RESTART_TIMEOUT_S:.0f} s")  # fmt: skip
            time.sleep(0.05)

    def log_tail(self, lines: int = 15) -> str:
        text = None
        if self.actor is not None and not self._gone:
            with contextlib.suppress(RayActorError, GetTimeoutError):
                text = self._call("read", str(self.log_path), timeout=10)
        if text is None:
            return super().log_tail(lines)
        return "\n".join(text.splitlines()[-lines:])

    async def stop(self, timeout: float = 15.0) -> int | None:
        rc = await super().stop(timeout)
        self.release()
        return rc

    def release(self) -> None:
        """The actor goes (its stage has stopped): no restart."""
        if self.actor is not None and not self._gone:
            with contextlib.suppress(Exception):
                ray.kill(self.actor, no_restart=True)
            self._gone = True

    def figures(self) -> dict[str, Any]:
        return {"host": self.host, "ip": self.ip, "restarts": self.restarts, "cpu_s": round(self.cpu_seconds, 3),
                "rss_peak_bytes": int(self.rss_peak)}  # fmt: skip
