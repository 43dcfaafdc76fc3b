"""What one pipeline run is: topology, variant names and knobs. The matrix's cells and ``live``'s flags are this.

Unknown keys and unknown variant names fail here, before anything starts, naming the valid choices.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pipeline.registry import check_variant

Topology = Literal["split", "node"]


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    topology: Topology = Field("split", description="split: a process per stage; node: the seed's one process")
    # the stream
    rpc: Literal["seed", "batched"] = "batched"
    rate: float = Field(0.0, ge=0, description="offered readings/s, open loop (0: the seed's sensor periods)")
    max_rate: bool = False
    sensors: int = Field(5, ge=1, le=100_000)
    count: int = Field(0, ge=0, description="readings to generate (0: until duration / Ctrl-C)")
    duration: float = Field(0.0, ge=0, description="seconds to generate (0: until count / Ctrl-C)")
    seed: int = Field(1, ge=0)
    readings_per_message: int = Field(1, ge=1, le=100_000)
    # ingest
    decoder: str = "direct"
    queue: str = "stream"
    queue_entry: Literal["reading", "batch"] = "batch"
    queue_cap: int = Field(
        0, ge=0, description="readings the queue may hold before ingest waits (0: auto, see effective_queue_cap)"
    )
    # writer
    sink: str = "copy_binary"
    batch_size: int = Field(1000, ge=1, le=1_000_000)
    flush_interval: float = Field(0.5, gt=0)
    workers: int = Field(1, ge=1, le=16)
    dedupe: bool = Field(False, description="idempotent writes (unique index, staging + ON CONFLICT DO NOTHING)")
    # forwarder / backend
    forwarder: str = "async"
    forward_from: Literal["ingest", "writer"] = "ingest"
    forward_batch: int = Field(100, ge=1, le=10_000, description="readings per POST (backend takes ≤ 10,000)")
    concurrency: int = Field(8, ge=1, le=1024)
    histograms: bool = Field(True, description="stages record histograms (off: counters only)")
    ws_clients: int = Field(1, ge=0, le=64, description="websocket clients the orchestrator runs and counts")

    @field_validator("decoder", "queue", "sink", "forwarder")
    @classmethod
    def _known_variant(cls, v: str, info: ValidationInfo) -> str:
        return check_variant(str(info.field_name), v)

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.rpc == "seed" and (self.max_rate or self.readings_per_message != 1):
            raise ValueError("rpc 'seed' sends one reading per message at the generator's rate: "
                             "use rpc 'batched' for max_rate or readings_per_message > 1")  # fmt: skip
        return self

    @property
    def effective_queue_cap(self) -> int:
        """Bounded in flight: by default 5,000 readings, or two batches per writer if more (a stream entry counts
        until its batch commits, so a smaller cap could never let a writer fill a batch)."""
        need = 2 * self.batch_size * self.workers
        return max(self.queue_cap or 5000, need)

    @property
    def forwarding(self) -> bool:
        return self.forwarder != "none"


SEED = PipelineConfig(
    topology="node", rpc="seed", decoder="dict", queue="list", queue_entry="reading", sink="copy",
    batch_size=20, flush_interval=10.0, forwarder="sync", forward_batch=1, workers=1,
)  # fmt: skip
