"""A local multi-node Ray cluster for tests and trials: every node a ``ray start`` of its own on its own loopback
address (127.0.0.2, 127.0.0.3, …: all of 127.0.0.0/8 is this machine), named by a custom resource (``host-a``,
``host-b``, …) that pins a stage's actor to it.

Ray turns a node address of 127.0.0.1 into the machine's outward address (``ray._private.services.
resolve_ip_for_localhost``), so the nodes start at 127.0.0.2. The dashboard is off, usage statistics are off, the
object store is small. ``ray start`` runs in a session of its own, and every daemon it starts (GCS, raylet, agents,
workers) stays in its process group: :meth:`LocalCluster.down` signals those groups — the processes this cluster
started, never another Ray on the machine. ``telemetry-bench cluster up`` writes the cluster's state to
``<tmp>/telemetry-bench-cluster.json`` for ``cluster down``; :class:`LocalCluster` is also a context manager (tests:
``attached``, each node's ``ray start --block`` dies with the test process, SIGKILL included, and takes its node's
processes with it).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from harness.lifeline import die_with_parent
from harness.process import free_port

STATE = Path(tempfile.gettempdir()) / "telemetry-bench-cluster.json"
HOST_NAMES = "abcdefghijklmnopqrstuvwxyz"
OBJECT_STORE_BYTES = 80 * 1024 * 1024  # Ray's minimum is 75 MiB; the stages pass nothing through it
# no telemetry to Ray's servers, no dashboard
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}
STARTED = "Ray runtime started."  # what `ray start` prints once its node runs


class ClusterError(RuntimeError):
    pass


def host_resource(host: str) -> str:
    """The custom resource that names a host (``a`` → ``host-a``): a stage's actor asks for a sliver of it."""
    return f"host-{host}"


def ray_command() -> str:
    """The ``ray`` executable of this interpreter's environment (the ``cluster`` extra), else on PATH."""
    here = Path(sys.executable).parent / "ray"
    found = str(here) if here.exists() else shutil.which("ray")
    if found is None:
        raise ClusterError("the ray command is not installed: pip install 'telemetry-bench[cluster]'")
    return found


@dataclass
class Node:
    host: str  # its name (the custom resource host-<name>)
    ip: str
    pgid: int  # the process group of its ray start (every daemon of the node)


@dataclass
class LocalCluster:
    nodes_wanted: int = 3
    first_ip: int = 2  # 127.0.0.<first_ip> is the head
    temp_dir: str = field(default_factory=lambda: f"/tmp/tbray-{uuid.uuid4().hex[:8]}")  # short: socket paths
    port: int = 0  # the head's GCS port (0: a free one)
    # True (tests): each `ray start --block` dies with this process (PR_SET_PDEATHSIG) and takes its node with it,
    # however this process ends; False (`cluster up`): the nodes outlive the command until `cluster down`
    attached: bool = False
    nodes: list[Node] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"{self.nodes[0].ip}:{self.port}" if self.nodes else ""

    def _spawn(self, host: str, ip: str, head: bool) -> subprocess.Popen[bytes]:
        cmd = [ray_command(), "start", "--node-ip-address", ip, "--num-cpus", "1",
               "--resources", json.dumps({host_resource(host): 1000}), "--object-store-memory",
               str(OBJECT_STORE_BYTES), "--temp-dir", self.temp_dir, "--disable-usage-stats"]  # fmt: skip
        if head:
            cmd += ["--head", "--port", str(self.port), "--include-dashboard=false",
                    "--ray-client-server-port", str(free_port())]  # fmt: skip
        else:
            cmd += ["--address", self.address]
        if self.attached:
            cmd.append("--block")
        Path(self.temp_dir).mkdir(parents=True, exist_ok=True)
        with self._log(host).open("wb") as out:
            proc = subprocess.Popen(
                die_with_parent(cmd) if self.attached else cmd, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True, env={**os.environ, **RAY_ENV},
            )  # fmt: skip
        # the group outlives a detached `ray start` (it exits once the node is up)
        self.nodes.append(Node(host, ip, proc.pid))
        return proc

    def _log(self, host: str) -> Path:
        return Path(self.temp_dir) / f"ray-start-{host}.log"

    def _started(self, proc: subprocess.Popen[bytes], host: str, timeout: float = 120.0) -> None:
        """Detached: `ray start` exited 0. Attached: `ray start --block` said the node runs, and still runs."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            rc = proc.poll()
            if rc is not None and (rc != 0 or self.attached):
                break
            if rc == 0 or (self.attached and STARTED in self._log(host).read_text(errors="replace")):
                return
            time.sleep(0.1)
        tail = self._log(host).read_text(errors="replace")[-2000:]
        raise ClusterError(f"ray start for host {host} failed (exit status {proc.poll()}):\n{tail}")

    def up(self) -> LocalCluster:
        """Start the head (host ``a``), then the other nodes; on any failure, stop what started."""
        if not 1 <= self.nodes_wanted <= len(HOST_NAMES) or self.first_ip + self.nodes_wanted > 255:
            raise ClusterError(f"--nodes {self.nodes_wanted}: must be 1 … {len(HOST_NAMES)}")
        self.port = self.port or free_port()
        try:
            # one at a time: nodes of one machine starting together share a session directory and time out
            for i in range(self.nodes_wanted):
                host = HOST_NAMES[i]
                self._started(self._spawn(host, f"127.0.0.{self.first_ip + i}", head=i == 0), host)
        except BaseException:
            self.down()
            raise
        return self

    def down(self, timeout: float = 3.0) -> None:
        """SIGTERM to every node's process group, SIGKILL to what is left after ``timeout``; the temp dir goes."""
        groups = [n.pgid for n in reversed(self.nodes)]
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGTERM)
        end = time.monotonic() + timeout
        while time.monotonic() < end and any(_group_alive(g) for g in groups):
            time.sleep(0.1)
        for pgid in groups:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        end = time.monotonic() + 5.0  # SIGKILL is not instant: until the kernel has removed them
        while time.monotonic() < end and any(_group_alive(g) for g in groups):
            time.sleep(0.05)
        self.nodes = []
        shutil.rmtree(self.temp_dir, ignore_errors=True)

    def hosts(self) -> dict[str, str]:
        """Host name → node address."""
        return {n.host: n.ip for n in self.nodes}

    def save(self, path: Path = STATE) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path = STATE) -> LocalCluster:
        data = json.loads(path.read_text())
        data["nodes"] = [Node(**n) for n in data["nodes"]]
        return cls(**data)

    def __enter__(self) -> LocalCluster:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # zombies of the group (reparented to init, not yet reaped) answer too: look for a live member
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            stat = Path(f"/proc/{pid}/stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


def real_hosts_help(address: str) -> str:
    """How to add real hosts to a cluster whose head is at ``address`` (printed by ``cluster up``)."""
    return (
        "On each real host (same Python environment, pip install 'telemetry-bench[cluster]'):\n"
        f"  ray start --address {address} --node-ip-address <this host's address> "
        "--resources '{\"host-<name>\": 1000}' --disable-usage-stats\n"
        "then name those hosts in the matrix's [placement] and pass --cluster "
        f"{address} to telemetry-bench run / live (docs/cluster.md)."
    )
