"""The results schema: ``reports/<run-id>/results.json`` is a ``Results``. Documented in ARCHITECTURE.md.

Results are data: the HTML report is derived from this file and can be rebuilt at any time. The file is rewritten
after every repeat, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from harness.accounting import Accounting
from harness.faults import Fault
from harness.plan import PipelineConfig

SCHEMA_VERSION = 1


class _M(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Latency(_M):
    """Milliseconds, exact (percentile_disc over every reading in the window)."""

    p50: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    n: int = 0


class StageResources(_M):
    cpu_s: float  # CPU seconds (user + system) over the repeat
    cpu_util_window: float | None  # cores busy during the measured window (1.0 = one core)
    peak_rss_bytes: int
    series: list[list[float]] = Field(default_factory=list)  # [t_since_start_s, cpu_s, rss_bytes]


class PgDeltas(_M):
    wal_bytes: int | None
    wal_bytes_per_reading: float | None
    table_bytes: int | None
    checkpoints: int | None


class Bottleneck(_M):
    stage: str
    reason: str
    evidence: dict[str, Any]


class Repeat(_M):
    index: int
    ok: bool
    failures: list[str]
    throughput_rps: float | None  # committed readings/s over the measured window
    window_s: float | None  # length of the measured window actually available
    window_complete: bool  # False: the run ended before warmup + measure elapsed
    latency_ms: Latency  # intended → inserted
    latency_sent_ms: Latency  # sent (generated) → inserted
    e2e_latency_ms: Latency = Field(default_factory=Latency)  # intended → received by our websocket client
    e2e_throughput_rps: float | None = None  # readings received by our websocket client per second, in the window
    accounting: Accounting  # generated, committed, rows, duplicated, lost, forwarded, broadcast, ...
    resources: dict[str, StageResources]
    queue_len: dict[str, list[list[float]]]  # key → [t_since_start_s, length]
    pg: PgDeltas
    prometheus: dict[str, dict[str, dict[str, float]]]  # stage → histogram name → {le: cumulative count}
    prometheus_quantiles_ms: dict[str, dict[str, float | None]]  # "stage/metric" → p50/p95/p99 (PromQL way)
    duration_s: float
    drain_s: float
    bottleneck: Bottleneck | None
    fault: Fault | None = None  # kind, at_s, injected, recovery_s (fault → the affected path moves again)
    expected_failures: list[str] = Field(default_factory=list)  # a lossy design's loss (expect_loss cells)


class Summary(_M):
    throughput_rps: float | None  # median over repeats
    throughput_min_rps: float | None
    throughput_max_rps: float | None
    cv: float | None  # coefficient of variation of throughput over repeats (stdev / mean)
    unstable: bool  # cv > 10 %
    fraction_of_ceiling: float | None  # throughput_rps / ceilings.copy_binary_rps
    readings_generated: int
    readings_committed: int
    lost: int
    duplicated: int
    forwarded: int
    broadcast: int
    unsent: int = 0  # scheduled but never sent (the generator fell behind its schedule and stopped), summed
    latency_ms: Latency  # median over repeats of each percentile (max: the max)
    latency_sent_ms: Latency
    e2e_latency_ms: Latency = Field(default_factory=Latency)  # forwarding cells: to the websocket client
    e2e_throughput_rps: float | None = None  # median over repeats
    cpu_s_per_reading: float | None  # all stages summed, median over repeats
    bottleneck: Bottleneck | None
    failed: bool


class Profile(_M):
    profiler: str
    files: dict[str, dict[str, str]]  # stage → kind (cprofile | yappi_pstat | yappi_callgrind | yappi_text) → path
    failures: list[str]


class CellResult(_M):
    id: str
    title: str
    groups: list[str]
    varied: dict[str, Any]
    params: PipelineConfig  # every run-plan knob (pipeline/knobs.py)
    repeats: list[Repeat]
    summary: Summary | None = None
    profile: Profile | None = None


class Ceilings(_M):
    copy_binary_rps: float  # binary COPY of pre-built rows, 10k-row batches, median of passes
    copy_binary_passes: list[float]
    redis_pushpop_rps: float  # LPUSH 1,000 values + RPOP 1,000, per-reading JSON payloads
    redis_pushpop_passes: list[float]
    decode_direct_rps: float  # direct field reads, one process
    readings: int


class Target(_M):
    name: str
    target: str
    measured: str
    passed: bool | None  # None: not measured in this run
    detail: str
    cells: list[str]


class Results(_M):
    schema_version: int = SCHEMA_VERSION
    run_id: str
    created: str
    finished: str | None = None
    git: dict[str, Any]
    machine: dict[str, Any]
    software: dict[str, Any]
    services: dict[str, Any]
    matrix: dict[str, Any]
    settings: dict[str, Any]  # repeats, profile, warmup_s, measure_s, command line
    ceilings: Ceilings | None = None
    cells: list[CellResult] = Field(default_factory=list)
    failed_cells: list[str] = Field(default_factory=list)
    targets: list[Target] = Field(default_factory=list)  # matrices with `targets = "perf"` (experiments/targets.py)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)
