"""Stages placed on several hosts through Ray (the optional ``cluster`` extra).

``local`` starts and stops a local multi-node Ray cluster (one loopback address per node) with the ``ray`` command;
``actors`` holds the Ray actors that run on the nodes (a stage process each, a node agent each); ``placement``
connects to a cluster and places a run's stages on its hosts; ``remote`` is the orchestrator's handle on a stage
run by an actor. Only ``placement``, ``remote`` and ``actors`` import ray, and only a run given a cluster imports
them: the single-host default never imports ray.
"""

from __future__ import annotations

PLACED_KINDS = ("generator", "ingest", "writer", "forwarder", "backend", "node")


class PlacementError(ValueError):
    pass


def check_placement(placement: dict[str, list[str]]) -> dict[str, list[str]]:
    """A placement (stage kind → host names) of known stage kinds and non-empty host lists, or a clear error
    naming the bad entry and what would be accepted. Whether the hosts exist is the cluster's to say
    (``harness.cluster.placement.Placement.connect``)."""
    for kind, hosts in placement.items():
        if kind not in PLACED_KINDS:
            raise PlacementError(f"[placement] {kind!r}: not a stage kind; valid: {', '.join(PLACED_KINDS)}")
        if not isinstance(hosts, list) or not hosts or not all(isinstance(h, str) and h for h in hosts):
            raise PlacementError(f"[placement] {kind} = {hosts!r}: must be a non-empty list of host names")
    return placement
