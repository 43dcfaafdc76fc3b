"""``drop_grpc``: the generator aborts its gRPC streams (SIGUSR1: UNAVAILABLE) and reconnects; it took effect when
ingest counted a dropped stream, recovered when readings are ingested again."""

import signal
from typing import Any

from harness.faults.base import FaultKind, Pipeline


class DropGrpc(FaultKind):
    name = "drop_grpc"
    in_chaos = True

    async def strike(self, p: Pipeline) -> None:
        p.stages["generator"].signal(signal.SIGUSR1)

    def took_effect(self, p: Pipeline, snap: dict[str, Any]) -> bool:
        drops = p.stages["ingest"].last.get("telemetry_errors_total", stage="ingest", kind="stream_dropped")
        return drops >= 1

    def progress(self, p: Pipeline, snap: dict[str, Any]) -> int:
        return int(snap["ingested"])
