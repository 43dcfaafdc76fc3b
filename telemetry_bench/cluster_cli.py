"""``telemetry-bench cluster up|down``: a local multi-node Ray cluster (harness/cluster/local.py; docs/cluster.md)."""

from __future__ import annotations

import argparse
import sys

from harness.cluster.local import STATE, ClusterError, LocalCluster, real_hosts_help


def cmd_cluster(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="telemetry-bench cluster",
        description="Start (up) or stop (down) a local multi-node Ray cluster: one node per loopback address "
        "(127.0.0.2, 127.0.0.3, …), hosts a, b, c, … named by their node resources host-a, host-b, …",
    )
    sub = parser.add_subparsers(dest="action", required=True)
    up = sub.add_parser("up", help="start the nodes; print the address to pass as --cluster")
    up.add_argument("--nodes", type=int, default=3, help="how many nodes (default: 3)")
    sub.add_parser("down", help="stop every process of the cluster started by cluster up")
    args = parser.parse_args(argv)
    if args.action == "up":
        if STATE.exists():
            print(f"cluster: one is already up ({STATE}); telemetry-bench cluster down first", file=sys.stderr)
            return 1
        try:
            cluster = LocalCluster(nodes_wanted=args.nodes).up()
        except ClusterError as exc:
            print(f"cluster: {exc}", file=sys.stderr)
            return 1
        cluster.save()
        for node in cluster.nodes:
            print(f"host {node.host}: {node.ip} (resource host-{node.host})")
        print(f"address: {cluster.address}\n  telemetry-bench run --matrix cluster --cluster {cluster.address}")
        print(real_hosts_help(cluster.address))
        print("stop it with: telemetry-bench cluster down")
        return 0
    if not STATE.exists():
        print("cluster: none is up (no state file)", file=sys.stderr)
        return 1
    LocalCluster.load().down()
    STATE.unlink()
    print("cluster: stopped")
    return 0
