"""The Ray actors that live on the nodes: a :class:`StageHost` per stage process and a :class:`NodeAgent` per host.

A ``StageHost`` starts the stage's command (the same ``python -m pipeline.<stage> …`` as a local run,
``harness.argv``) on its node when it is created, and again each time Ray restarts it. It watches the process: when
the process dies with a non-zero status and nobody asked it to stop (a crash, a ``kill_writer`` fault's SIGKILL),
the actor's own process exits, and Ray restarts the actor (``max_restarts``), which starts the command again. A stop
asked for (SIGTERM) is not restarted. The stage gets SIGTERM should the actor's process die
(``die_with_parent``), so a cluster that goes down takes its stages with it.

The incarnation count is kept beside the stage's log on the node (a restarted actor has no memory), so the
controller can tell a restarted process from the one it knew.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from harness.lifeline import die_with_parent
from harness.process import free_port


def node_ip() -> str:
    import ray

    return str(ray.util.get_node_ip_address())


class NodeAgent:
    """One per host: its address, its clock (for the NTP-style offset), free ports on its address."""

    def ip(self) -> str:
        return node_ip()

    def now_ns(self) -> int:
        return time.time_ns()

    def free_port(self) -> int:
        return free_port(node_ip())


class StageHost:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_path: str, cwd: str) -> None:
        self.name, self.argv, self.env, self.cwd = name, argv, env, cwd
        self.log_path = Path(log_path)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        count = self.log_path.with_suffix(".incarnation")
        self.incarnation = int(count.read_text()) + 1 if count.exists() else 0
        count.write_text(str(self.incarnation))
        self.stopping = False
        self.cpu_s = 0.0
        self.rss_peak = 0
        with self.log_path.open("ab" if self.incarnation else "wb") as log:
            self.proc = subprocess.Popen(
                die_with_parent(argv), stdout=log, stderr=subprocess.STDOUT, env=env,
                cwd=cwd if Path(cwd).is_dir() else None, start_new_session=True,
            )  # fmt: skip
        self._ps = psutil.Process(self.proc.pid)
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        rc = self.proc.wait()
        if rc != 0 and not self.stopping:
            os._exit(1)  # Ray restarts this actor (max_restarts), which starts the command again

    def state(self) -> dict[str, Any]:
        """This incarnation's number, its process's pid and exit status (None while it runs), the node's address."""
        return {"incarnation": self.incarnation, "pid": self.proc.pid, "rc": self.proc.poll(), "ip": node_ip()}

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the stage; SIGTERM (and a SIGKILL after it) is a stop asked for: not restarted."""
        if sig == signal.SIGTERM:
            self.stopping = True
        self.usage()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    def usage(self) -> dict[str, float]:
        """CPU seconds and peak resident memory of this incarnation's process (as last seen alive)."""
        with contextlib.suppress(psutil.Error):
            t = self._ps.cpu_times()
            self.cpu_s = t.user + t.system
            self.rss_peak = max(self.rss_peak, self._ps.memory_info().rss)
        return {"cpu_s": self.cpu_s, "rss_bytes": float(self.rss_peak)}

    def read(self, path: str) -> str | None:
        """A file of the stage on this node (its stats file, its log), None if it is not there."""
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return None
