"""``drop_grpc``: the generator aborts its gRPC streams (SIGUSR1: UNAVAILABLE) and reconnects; it took effect when
ingest counted a dropped stream — or when ingest was restarted since (in chaos, a kill_ingest: the new incarnation
opens a new stream and never counts the old one's drop) —, recovered when readings are ingested again."""

import signal
from typing import Any

from harness.faults.base import FaultKind, Pipeline


class DropGrpc(FaultKind):
    name = "drop_grpc"
    in_chaos = True

    async def strike(self, p: Pipeline) -> None:
        self._ingest_restarts = p.stages["ingest"].restarts
        p.stages["generator"].signal(signal.SIGUSR1)

    def took_effect(self, p: Pipeline, snap: dict[str, Any]) -> bool:
        ingest = p.stages["ingest"]
        drops = ingest.last.get("telemetry_errors_total", stage="ingest", kind="stream_dropped")
        return drops >= 1 or ingest.restarts > getattr(self, "_ingest_restarts", ingest.restarts)

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        return int(snap["ingested"])
