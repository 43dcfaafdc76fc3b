"""The run's accounting (every reading, end to end) and what a run returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, computed_field, model_validator

from harness.faults import Fault
from harness.plan import PipelineConfig


class Uncommitted(BaseModel):
    """Where the readings generated but not committed are, when a run stopped with some (``live`` with a stage
    dead and not restarted): ``in_queue`` still in the writer queue (waiting, or taken by a dead writer and not
    acknowledged) and not in the table — recoverable, a writer started on the queue commits them; ``in_flight``
    sent by the generator but never queued (a resumed stream sends them again); ``lost`` the rest, gone (taken from
    the seed's ``list`` by a writer that died). The three add up to generated − committed."""

    model_config = ConfigDict(extra="forbid")

    in_queue: int = 0
    in_flight: int = 0
    lost: int = 0
    queue_key: str = ""

    @property
    def total(self) -> int:
        return self.in_queue + self.in_flight + self.lost

    def sentence(self) -> str:
        return (f"{self.in_queue:,} in the queue (recoverable: a writer started on {self.queue_key} commits them), "
                f"{self.in_flight:,} in flight (sent, never queued: a resumed stream sends them again), "
                f"{self.lost:,} lost")  # fmt: skip


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
    uncommitted: Uncommitted | None = None  # live, a run stopped with readings uncommitted: where they are

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
        if self.lost and self.uncommitted is not None:
            where = self.uncommitted.sentence()
            out.append(f"{self.lost:,} readings not committed (generated {self.generated:,}, committed "
                       f"{self.committed:,}): {where}")  # fmt: skip
        elif self.lost:
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
    begun_ns: int = 0  # the first stage started
    stopped_ns: int = 0  # every stage stopped

    @property
    def phases_s(self) -> dict[str, float]:
        """Where the repeat's wall time went: stages starting, streaming, draining, stopping (seconds)."""
        marks = [self.begun_ns, self.started_ns, self.stream_ended_ns, self.drained_ns, self.stopped_ns]
        if not all(marks):
            return {}
        names = ("start", "stream", "drain", "stop")
        return {name: (b - a) / 1e9 for name, a, b in zip(names, marks[:-1], marks[1:], strict=True)}

    @property
    def ok(self) -> bool:
        return not self.failures
