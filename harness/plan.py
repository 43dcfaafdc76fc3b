"""What one pipeline run is: topology, variant names and knobs. The matrix's cells and ``live``'s flags are this.

Unknown keys and unknown variant names fail here, before anything starts, naming the valid choices.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator, model_validator

from pipeline.knobs import (
    VARIANT_KINDS,
    BackendBehaviour,
    Builder,
    DelayKind,
    ForwardFrom,
    QueueEntry,
    Rpc,
    Topology,
    check_fields,
    plan_knob,
)
from pipeline.registry import check_variant


class PipelineConfig(BaseModel):
    """A run plan. Every field is a run-plan knob of ``pipeline/knobs.py`` (type, run default, bounds, help, the
    stages it is passed to: declared there once); ``harness.argv`` turns a plan into each stage's flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    topology: Topology = plan_knob("topology")
    # the stream
    rpc: Rpc = plan_knob("rpc")
    rate: float = plan_knob("rate")
    max_rate: bool = plan_knob("max_rate")
    sensors: int = plan_knob("sensors")
    generators: int = plan_knob("generators")
    count: int = plan_knob("count")
    duration: float = plan_knob("duration")
    seed: int = plan_knob("seed")
    readings_per_message: int = plan_knob("readings_per_message")
    builder: Builder = plan_knob("builder")
    buffer_readings: int = plan_knob("buffer_readings")
    # ingest
    decoder: str = plan_knob("decoder")
    queue: str = plan_knob("queue")
    queue_entry: QueueEntry = plan_knob("queue_entry")
    queue_cap: int = plan_knob("queue_cap")
    ack_wait: float = plan_knob("ack_wait")
    max_deliver: int = plan_knob("max_deliver")
    max_ack_pending: int = plan_knob("max_ack_pending")
    prefetch: int = plan_knob("prefetch")
    # writer
    sink: str = plan_knob("sink")
    batch_size: int = plan_knob("batch_size")
    flush_interval: float = plan_knob("flush_interval")
    workers: int = plan_knob("workers")
    dedupe: bool = plan_knob("dedupe")
    # forwarder / backend
    forwarder: str = plan_knob("forwarder")
    forward_from: ForwardFrom = plan_knob("forward_from")
    forward_batch: int = plan_knob("forward_batch")
    concurrency: int = plan_knob("concurrency")
    histograms: bool = plan_knob("histograms")
    ws_clients: int = plan_knob("ws_clients")
    drain_stall_s: float = plan_knob("drain_stall_s")
    backend_behaviour: BackendBehaviour = plan_knob("backend_behaviour")
    seed_prints: bool = plan_knob("seed_prints")
    # deliberate delays (the what-if experiment): µs per reading per stage, and their kind
    delay_kind: DelayKind = plan_knob("delay_kind")
    delay_generator_us: float = plan_knob("delay_generator_us")
    delay_ingest_us: float = plan_knob("delay_ingest_us")
    delay_queue_us: float = plan_knob("delay_queue_us")
    delay_writer_us: float = plan_knob("delay_writer_us")
    delay_forwarder_us: float = plan_knob("delay_forwarder_us")
    delay_backend_us: float = plan_knob("delay_backend_us")
    delay_node_us: float = plan_knob("delay_node_us")

    @field_validator(*VARIANT_KINDS)
    @classmethod
    def _known_variant(cls, v: str, info: ValidationInfo) -> str:
        return check_variant(str(info.field_name), v)

    @model_validator(mode="after")
    def _consistent(self) -> PipelineConfig:
        if self.rpc == "seed" and (self.max_rate or self.readings_per_message != 1):
            raise ValueError("rpc 'seed' sends one reading per message at the generator's rate: "
                             "use rpc 'batched' for max_rate or readings_per_message > 1")  # fmt: skip
        if self.generators > 1 and self.topology != "split":
            raise ValueError(f"generators = {self.generators}: several generators need topology 'split' (one "
                             "ingest each); the node reads one stream")  # fmt: skip
        if self.generators > self.sensors:
            raise ValueError(f"generators = {self.generators} > sensors = {self.sensors}: each generator simulates "
                             "at least one sensor of its own")  # fmt: skip
        return self

    def streams(self) -> list[tuple[str, str]]:
        """(generator, ingest) stage names, one pair per generator; the first pair keeps the plain names."""
        return [("generator", "ingest")] + [(f"generator-{g}", f"ingest-{g}") for g in range(2, self.generators + 1)]

    def stream_share(self, g: int) -> dict[str, int | float]:
        """What generator ``g`` (0-based) of ``generators`` streams, and its ingest asks for: a contiguous share of
        the run's sensors (from ``sensor_offset``), the rate and the count in proportion to it (the counts add up
        exactly). One generator: the whole stream."""
        n, k = self.sensors, self.generators
        lo, hi = g * n // k, (g + 1) * n // k
        return {"sensor_offset": lo, "sensors": hi - lo, "rate": self.rate * (hi - lo) / n,
                "count": self.count * hi // n - self.count * lo // n}  # fmt: skip

    @property
    def effective_queue_cap(self) -> int:
        """Bounded in flight: by default 5,000 readings, or two batches per writer if more (a stream entry counts
        until its batch commits, so a smaller cap could never let a writer fill a batch)."""
        need = 2 * self.batch_size * self.workers
        return max(self.queue_cap or 5000, need)

    @property
    def forwarding(self) -> bool:
        return self.forwarder != "none"


check_fields(PipelineConfig, plan=True)  # every field a run-plan knob, of the catalogue's type

SEED = PipelineConfig(
    topology="node", rpc="seed", decoder="dict", queue="list", queue_entry="reading", sink="copy",
    batch_size=20, flush_interval=10.0, forwarder="sync", forward_batch=1, workers=1,
    backend_behaviour="seed", seed_prints=True,  # the seed's backend and node do this work per reading too
    # the seed's generator builds each reading when it is due and holds none ahead: a slow node pushes back on the
    # schedule at once (late sends, then unsent after the schedule's end) rather than after 5,000 buffered readings
    buffer_readings=100,
)  # fmt: skip
