"""A run's stages placed on the hosts of a Ray cluster (``--cluster ADDRESS``, a matrix's ``[placement]``).

Hosts are named by their nodes' custom resources (``host-a`` → host ``a``; ``telemetry-bench cluster up`` starts
them so, a real host joins with ``ray start --resources '{"host-<name>": 1000}'``). ``[placement]`` lists hosts per
stage kind, e.g. ``writer = ["b", "c"]``: the i-th process of a kind goes to its list's host i (round robin), so
``writer-1`` runs on ``b`` and ``writer-2`` on ``c``. A stage kind not listed runs on the head's host.

Each stage process is run by an actor on its host (``harness.cluster.actors.StageHost``, pinned by the host's
resource, restarted by Ray up to ``max_restarts`` times); each stage binds and advertises its node's own address.
Each host's clock offset to the controller is measured NTP-style: a few round trips to the host's agent
(``NodeAgent.now_ns``), the one with the shortest round trip kept: offset = t_host − (t_send + t_receive) / 2,
uncertainty = ± round trip / 2 (``harness.clocks.offset``).
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from harness import clocks
from harness.cluster import PlacementError, check_placement
from harness.cluster.actors import NodeAgent
from harness.cluster.local import RAY_ENV, host_resource
from harness.cluster.remote import RemoteStage

log = logging.getLogger("telemetry_bench.cluster")

# a cross-host latency is flagged when its clock's uncertainty is more than this share of it
UNCERTAINTY_SHARE = 0.1
# the counter that says how many readings a stage of each kind handled (pipeline.metrics.STAGES)
ROLE_COUNTER = {"generator": "generated", "ingest": "queued", "writer": "committed", "node": "committed",
                "forwarder": "forwarded", "backend": "broadcast"}  # fmt: skip


def _answers(address: str) -> None:
    """A clear error at once where no cluster answers (ray.init would retry for minutes)."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise PlacementError(f"--cluster {address!r}: expected HOST:PORT, the head's GCS address (e.g. 127.0.0.2:6379)")
    try:
        socket.create_connection((host, int(port)), timeout=3).close()
    except OSError as exc:
        raise PlacementError(
            f"--cluster {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
            "with telemetry-bench cluster up, or ray start --head (docs/cluster.md)"
        ) from None


@dataclass
class Placement:
    address: str  # the cluster's GCS address (host:port)
    stages: dict[str, list[str]] = field(default_factory=dict)  # stage kind → hosts
    max_restarts: int = 3
    hosts: dict[str, str] = field(default_factory=dict)  # host → node address (from the cluster)
    head: str = ""
    clock: dict[str, dict[str, float]] = field(default_factory=dict)  # host → offset, uncertainty, rtt (ns)
    _agents: dict[str, Any] = field(default_factory=dict)
    placed: list[RemoteStage] = field(default_factory=list)

    def connect(self) -> Placement:
        """Join the cluster as a driver (on the node whose address is the head's), find its hosts, check the
        placement names only hosts it has, start an agent per host and measure the clocks."""
        check_placement(self.stages)
        _answers(self.address)
        os.environ.update(RAY_ENV)
        if not ray.is_initialized():
            head_ip = self.address.rsplit(":", 1)[0]
            ray.init(address=self.address, _node_ip_address=head_ip, log_to_driver=False,
                     logging_level=logging.WARNING, namespace="telemetry-bench")  # fmt: skip
        for node in ray.nodes():
            if not node.get("Alive"):
                continue
            for res in node.get("Resources", {}):
                if res.startswith("host-"):
                    self.hosts[res.removeprefix("host-")] = node["NodeManagerAddress"]
        if not self.hosts:
            raise PlacementError(f"the cluster at {self.address} has no node with a host-<name> resource "
                                 "(start nodes with --resources '{\"host-a\": 1000}')")  # fmt: skip
        head_ip = self.address.rsplit(":", 1)[0]
        self.head = next((h for h, ip in sorted(self.hosts.items()) if ip == head_ip), sorted(self.hosts)[0])
        for kind, wanted in self.stages.items():
            unknown = [h for h in wanted if h not in self.hosts]
            if unknown:
                raise PlacementError(f"[placement] {kind}: host {unknown[0]!r} is not in the cluster at "
                                     f"{self.address}; its hosts: {', '.join(sorted(self.hosts))}")  # fmt: skip
        agent = ray.remote(NodeAgent)
        for host in self.hosts:
            self._agents[host] = agent.options(resources={host_resource(host): 0.001}, num_cpus=0).remote()
        self.measure_clocks()
        return self

    def host_of(self, stage_name: str) -> str:
        """``writer-2`` → the second host listed for writers; a kind not listed → the head's host."""
        kind, _, index = stage_name.partition("-")
        hosts = self.stages.get(kind)
        if not hosts:
            return self.head
        i = int(index) - 1 if index.isdigit() else 0
        return hosts[i % len(hosts)]

    def ip_of(self, stage_name: str) -> str:
        return self.hosts[self.host_of(stage_name)]

    def free_port(self, stage_name: str) -> int:
        return int(ray.get(self._agents[self.host_of(stage_name)].free_port.remote(), timeout=30))

    def stage(self, name: str, argv: list[str], metrics_url: str | None, log_path: Path,
              stats_path: Path | None) -> RemoteStage:  # fmt: skip
        host = self.host_of(name)
        st = RemoteStage(name, argv, metrics_url, log_path, stats_path, host=host, ip=self.hosts[host],
                         resource=host_resource(host), max_restarts=self.max_restarts, cwd=os.getcwd())  # fmt: skip
        self.placed.append(st)
        return st

    def measure_clocks(self, rounds: int = clocks.ROUNDS) -> dict[str, dict[str, float]]:
        """Each host's clock minus the controller's, from the round trip with the shortest time (NTP's choice)."""
        for host, agent in self._agents.items():
            ray.get(agent.now_ns.remote(), timeout=60)  # the actor is up before timing
            self.clock[host] = clocks.offset(functools.partial(_read_clock, agent), rounds)
        return self.clock

    def figures(self, placed: list[RemoteStage], window_s: float, latency_p50_ns: float | None) -> dict[str, Any]:
        """results.json's ``cluster``: the hosts (address, stages, CPU seconds, peak memory, the readings their
        stages handled — generated, queued, committed, forwarded, by each stage's own counter — and that per second
        of the stream), each stage's host and restarts, the clock offsets, and whether a clock's uncertainty is a
        large share of the run's median latency."""
        per_host: dict[str, dict[str, Any]] = {
            h: {"ip": ip, "stages": [], "cpu_s": 0.0, "rss_peak_bytes": 0, "readings": {}, "per_s": {}}
            for h, ip in sorted(self.hosts.items())
        }
        stages = {}
        for st in placed:
            f = st.figures()
            stages[st.name] = f
            h = per_host[st.host]
            h["stages"].append(st.name)
            h["cpu_s"] = round(h["cpu_s"] + f["cpu_s"], 3)
            h["rss_peak_bytes"] += f["rss_peak_bytes"]
            counter = ROLE_COUNTER.get(st.name.partition("-")[0])
            if counter:
                h["readings"][counter] = h["readings"].get(counter, 0) + st.count(counter)
        for h in per_host.values():
            h["per_s"] = {c: round(n / window_s, 1) for c, n in h["readings"].items()} if window_s > 0 else {}
        flagged = []
        if latency_p50_ns:
            flagged = [h for h, c in self.clock.items() if c["uncertainty_ns"] > UNCERTAINTY_SHARE * latency_p50_ns]
        return {"address": self.address, "head": self.head, "placement": self.stages, "hosts": per_host,
                "stages": stages, "clock": self.clock, "clock_uncertainty_share": UNCERTAINTY_SHARE,
                "clock_flagged": flagged}  # fmt: skip

    def release_stages(self) -> None:
        """Every stage actor of the run goes (the run ended; a stage that exited by itself has one still)."""
        for st in self.placed:
            st.release()
        self.placed = []

    def close(self) -> None:
        self.release_stages()
        for agent in self._agents.values():
            ray.kill(agent, no_restart=True)
        self._agents.clear()


def _read_clock(agent: Any) -> int:
    """A host's clock, read through its agent (ns since the epoch)."""
    return int(ray.get(agent.now_ns.remote(), timeout=30))
