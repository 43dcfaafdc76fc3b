"""Stages on the hosts of a local 3-node Ray cluster (harness/cluster/): every reading accounted for, and a writer
SIGKILLed on a remote host restarted by Ray with nothing lost; the cluster talks to loopback addresses only.

The cluster is started once for the module (127.0.0.2, .3, .4 — Ray maps a node address of 127.0.0.1 to the
machine's outward address, so the nodes start at .2) and stopped at its end, every process of it with it. Skipped
only where Ray cannot be imported (the ``cluster`` extra is not installed)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'telemetry-bench[cluster]'")

from harness.cluster.local import LocalCluster  # noqa: E402
from harness.cluster.placement import Placement, PlacementError  # noqa: E402
from harness.cluster.remote import RemoteStage  # noqa: E402
from harness.faults import Fault  # noqa: E402
from harness.orchestrator import Orchestrator  # noqa: E402
from harness.plan import PipelineConfig  # noqa: E402
from harness.services import Services  # noqa: E402

pytestmark = pytest.mark.timeout(240)

# load from two hosts: a generator on a and one on c, each read by its own ingest (on b and on a)
PLACEMENT = {"generator": ["a", "c"], "ingest": ["b", "a"], "writer": ["b", "c"]}


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    with LocalCluster(nodes_wanted=3, attached=True) as c:  # dies with this process however it ends
        try:
            yield c
        finally:
            ray.shutdown()  # this process's driver leaves before the nodes go
    assert not any(c.temp_dir in " ".join(p.info["cmdline"] or []) for p in psutil.process_iter(["cmdline"])), (
        "a process of the local cluster survived cluster down"
    )


def test_stages_on_hosts_kill_writer_restarted_by_ray(
    cluster: LocalCluster, services: Services, pg_schema: str, queue_key: str, tmp_path: Path
) -> None:
    import asyncio

    assert cluster.hosts() == {"a": "127.0.0.2", "b": "127.0.0.3", "c": "127.0.0.4"}
    placement = Placement(cluster.address, PLACEMENT).connect()
    assert set(placement.clock) == {"a", "b", "c"}
    for c in placement.clock.values():  # one machine: the offset is within its own uncertainty (plus a little)
        assert abs(c["offset_ns"]) <= c["uncertainty_ns"] + 1_000_000
    cfg = PipelineConfig(
        topology="split", rate=4000, count=12_000, sensors=10, generators=2, readings_per_message=100, queue="stream",
        queue_entry="batch", sink="copy_binary", batch_size=500, flush_interval=0.2, dedupe=True, workers=2,
        forwarder="none", ws_clients=0,
    )  # fmt: skip
    fault = Fault("kill_writer", 1.0)  # writer-1, on host b
    orch = Orchestrator(cfg, services, tmp_path, schema=pg_schema, queue_key=queue_key, fault=fault,
                        placement=placement)  # fmt: skip
    result = asyncio.run(orch.run())
    a = result.accounting
    assert result.failures == [], "\n".join(result.failures)
    assert fault.injected_at_ns is not None and fault.restarted_at_ns is not None
    assert a.generated == cfg.count and a.committed == cfg.count and a.lost == 0 and a.duplicated == 0
    stages = {n: st for n, st in orch.stages.items() if isinstance(st, RemoteStage)}
    assert {n: st.ip for n, st in stages.items()} == {
        "generator": "127.0.0.2", "generator-2": "127.0.0.4", "ingest": "127.0.0.3", "ingest-2": "127.0.0.2",
        "writer-1": "127.0.0.3", "writer-2": "127.0.0.4",
    }  # fmt: skip
    assert stages["writer-1"].restarts == 1 and stages["writer-2"].restarts == 0
    assert "--host 127.0.0.3" in " ".join(stages["writer-1"].argv)
    for ingest, host in (("ingest", "127.0.0.2:"), ("ingest-2", "127.0.0.4:")):  # each reads its own generator
        argv = orch.stages[ingest].argv
        assert argv[argv.index("--generator") + 1].startswith(host)
    window = (result.stream_ended_ns - result.started_ns) / 1e9
    figures = placement.figures(list(stages.values()), window, latency_p50_ns=None)
    hosts = figures["hosts"]
    assert sorted(hosts) == ["a", "b", "c"] and hosts["b"]["stages"] == ["writer-1", "ingest"]
    # half the sensors, rate and count from each generator's host; each ingest queued its own generator's
    assert hosts["a"]["readings"]["generated"] == hosts["c"]["readings"]["generated"] == cfg.count // 2
    assert hosts["a"]["readings"]["queued"] == hosts["b"]["readings"]["queued"] == cfg.count // 2
    # the writers' counters (a SIGKILLed incarnation's as last scraped: the table is the exact count, above)
    assert hosts["b"]["readings"]["committed"] > 0 and hosts["c"]["per_s"]["committed"] > 0
    assert all(figures["stages"][n]["cpu_s"] > 0 for n in stages)
    assert not any(st.alive for st in stages.values())
    _latencies_are_corrected_per_generator(cfg, orch, placement, services, pg_schema)
    assert _peers(cluster) and all(_loopback(ip) for ip in _peers(cluster)), _peers(cluster)
    placement.close()


def _latencies_are_corrected_per_generator(
    cfg: PipelineConfig, orch: Orchestrator, placement: Placement, services: Services, schema: str
) -> None:
    """Each generator's readings are shifted by its host's clock offset minus PostgreSQL's (NTP-style, each
    within its uncertainty on one machine); a stated shift moves exactly the readings of the sensors it names."""
    from experiments.measure import window as measure
    from experiments.run.repeat import _clock_shifts

    clocks = _clock_shifts(cfg, orch, placement, services.pg_dsn, schema)
    gens = clocks["generators"]
    assert {n: g["host"] for n, g in gens.items()} == {"generator": "a", "generator-2": "c"}
    ids1, ids2 = gens["generator"]["sensor_ids"], gens["generator-2"]["sensor_ids"]
    assert len(ids1) == len(ids2) == 5 and not set(ids1) & set(ids2)
    for g in gens.values():  # one machine: a shift is within its uncertainty (plus a little)
        assert abs(g["shift_ns"]) <= g["uncertainty_ns"] + 1_000_000
    every = (0, 2**62)
    raw = measure.latencies(services.pg_dsn, schema, *every)["intended"]
    assert raw["n"] == cfg.count
    both = measure.latencies(services.pg_dsn, schema, *every, [(ids1, 10**9), (ids2, 10**9)])["intended"]
    assert all(both[k] == pytest.approx(raw[k] + 1000.0) for k in ("p50", "p99", "max"))
    half = measure.latencies(services.pg_dsn, schema, *every, [(ids2, 10**12)])["intended"]  # +1,000 s, half the run
    assert half["p50"] < 100_000 < 1_000_000 < half["p95"]


def _loopback(ip: str) -> bool:
    return ip.removeprefix("::ffff:").startswith("127.") or ip == "::1"


def _peers(cluster: LocalCluster) -> set[str]:
    """Every address the cluster's processes (and this driver) are connected to or listen on by name. Ray 2.60's
    GCS and raylets listen on the wildcard address (docs/cluster.md): a listener on a named address must be
    loopback, and every connection's peer too."""
    groups = {n.pgid for n in cluster.nodes}
    procs = [psutil.Process()]
    for p in psutil.process_iter():
        with contextlib.suppress(psutil.Error):
            if os.getpgid(p.pid) in groups:
                procs.append(p)
    found: set[str] = set()
    for p in procs:
        with contextlib.suppress(psutil.Error):
            for conn in p.net_connections(kind="inet"):
                if conn.raddr:
                    found.add(conn.raddr.ip)
                elif conn.laddr and conn.laddr.ip not in ("0.0.0.0", "::"):
                    found.add(conn.laddr.ip)
    return found


def test_placement_names_only_known_hosts_and_kinds(cluster: LocalCluster) -> None:
    with pytest.raises(PlacementError, match="host 'z' is not in the cluster"):
        Placement(cluster.address, {"writer": ["z"]}).connect()
    with pytest.raises(PlacementError, match="'writers': not a stage kind"):
        Placement(cluster.address, {"writers": ["a"]}).connect()
    assert os.environ.get("RAY_USAGE_STATS_ENABLED") == "0"


def test_run_with_no_cluster_at_the_address_fails_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from telemetry_bench.cli import main

    assert main(["run", "--matrix", "cluster", "--cluster", "127.0.0.9:1", "--out", str(tmp_path)]) == 2
    said = " ".join((lambda c: c.out + c.err)(capsys.readouterr()).split())
    assert "--cluster 127.0.0.9:1: no Ray cluster answers there" in said
