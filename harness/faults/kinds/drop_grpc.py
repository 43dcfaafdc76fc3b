"""``drop_grpc``: a generator aborts its gRPC streams (SIGUSR1: UNAVAILABLE) and reconnects; it took effect when
the ingest it feeds counted a dropped stream — or when that ingest was restarted since (in chaos, a kill_ingest: the
new incarnation opens a new stream and never counts the old one's drop) —, recovered when that ingest ingests again.
Which generator: the first, the fault's ``stage`` ("generator-2") or ``any`` (``FaultKind.target``)."""

import signal
from typing import Any

from harness.faults.base import FaultKind, Pipeline


class DropGrpc(FaultKind):
    name = "drop_grpc"
    in_chaos = True
    stage = "generator"

    def _ingest(self, p: Pipeline) -> str:
        """The ingest the struck generator feeds (one per generator, ``PipelineConfig.streams``; the node in the
        seed's topology)."""
        gen = getattr(self, "_struck", None) or self.target(p)
        ingest = dict(p.cfg.streams()).get(gen, "ingest")
        return ingest if ingest in p.stages else "node"

    async def strike(self, p: Pipeline) -> None:
        self._struck = self.target(p)
        if self.fault.stage:
            self.fault.detail = f"dropped {self._struck}'s streams"
        self._ingest_restarts = p.stages[self._ingest(p)].restarts
        p.stages[self._struck].signal(signal.SIGUSR1)

    def took_effect(self, p: Pipeline, snap: dict[str, Any]) -> bool:
        name = self._ingest(p)
        ingest = p.stages[name]
        drops = ingest.last.get("telemetry_errors_total", stage="ingest", kind="stream_dropped")
        return drops >= 1 or ingest.restarts > getattr(self, "_ingest_restarts", ingest.restarts)

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        return p.total([self._ingest(p)], "ingested")
