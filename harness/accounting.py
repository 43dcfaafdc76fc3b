"""The run's accounting (every reading, end to end) and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from harness.faults import Fault
from harness.plan import PipelineConfig


class Accounting(BaseModel):
    """Counts of one run, from the stages' counters and the table itself; ``duplicated`` and ``lost`` are derived
    (in ``results.json`` too: read back, they are recomputed)."""

    model_config = ConfigDict(extra="forbid")

    generated: int = 0
    unsent: int = 0  # scheduled but never sent: the generator fell behind and stopped (not generated, not lost)
    ingested: int = 0
    queued: int = 0
    committed_counter: int = 0  # the writers' own count
    rows: int = 0  # rows in telemetry_data
    committed: int = 0  # distinct (sensor_id, sequence_number) in telemetry_data
    forwarded: int = 0
    received: int = 0  # accepted by the backend
    broadcast: int = 0  # sent to websocket clients, summed over clients
    ws_received: int = 0  # counted by our websocket clients, summed
    ws_clients: int = 0
    forwarding: bool = True
    broadcast_best_effort: bool = False  # the backend was killed: what it broadcast while down is gone by design

    @model_validator(mode="before")
    @classmethod
    def _derived_are_recomputed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if k not in ("duplicated", "lost")}
        return data

    @computed_field  # type: ignore[prop-decorator]
    @property
    def duplicated(self) -> int:
        return self.rows - self.committed

    @computed_field  # type: ignore[prop-decorator]
    @property
    def lost(self) -> int:
        return self.generated - self.committed

    def problems(self) -> list[str]:
        out = []
        if self.lost:
            out.append(f"{self.lost} readings lost: generated {self.generated}, committed {self.committed}")
        if self.duplicated:
            out.append(f"{self.duplicated} duplicated rows in telemetry_data")
        if self.forwarding:
            if self.forwarded != self.generated:
                out.append(f"forwarded {self.forwarded} of {self.generated} readings")
            # our clients must each receive every forwarded reading; other clients (a dashboard someone opened)
            # may add to the backend's broadcast count
            want = self.forwarded * self.ws_clients
            if self.broadcast_best_effort:
                return out
            if self.broadcast < want:
                out.append(f"broadcast {self.broadcast}, expected at least {want} ({self.ws_clients} clients)")
            if self.ws_received != want:
                out.append(f"websocket clients received {self.ws_received}, expected {want}")
        return out

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump()


@dataclass
class RunResult:
    config: PipelineConfig
    accounting: Accounting
    started_ns: int
    stream_ended_ns: int
    drained_ns: int
    failures: list[str]
    ports: dict[str, int]
    fault: Fault | None = None

    @property
    def ok(self) -> bool:
        return not self.failures
