"""The results schema: ``reports/<run-id>/results.json`` is a ``Results``. Documented in ARCHITECTURE.md.

Results are data: the HTML report is derived from this file and can be rebuilt at any time. The file is rewritten
after every repeat, so an interrupted run keeps what it finished.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from harness.accounting import Accounting
from harness.faults import Fault, Recovery
from harness.plan import PipelineConfig

SCHEMA_VERSION = 2  # 2: intervals, adaptive repeats, loop labels, windowed Prometheus buckets, headline


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
    # CPU seconds inside the measured window: its cumulative CPU interpolated at the window's opening and closing
    # commits (None: the process did not span the window, or an older file)
    cpu_s_window: float | None = None
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


class Sampled(_M):
    """A repeat sampled by py-spy during its stream (``experiments.sampling``)."""

    rate_hz: int
    files: dict[str, str]  # stage → this repeat's collapsed stacks (profiles/<run>/<cell>/repeat-<n>/<stage>.collapsed)
    views: dict[str, dict[str, str]] = Field(default_factory=dict)  # stage → collapsed | speedscope | svg: the
    # cell's views merged over its sampled repeats so far (profiles/<run>/<cell>/<stage>.*)
    problem: str | None = None  # why sampling failed (py-spy missing, ptrace refused): the run went on without it
    native: bool | None = None  # native frames (py-spy --native, pausing the process); False: --nonblocking,
    # Python frames only; None: recorded before this field (those runs sampled with --native)
    cpu_s: float | None = None  # py-spy's own CPU seconds (every stage's sampler), read as it was stopped
    # … inside the measured window: its cumulative CPU, read at every poll, interpolated at the window's two commits
    # (py-spy starts at the first commit, so its start-up falls in the warm-up); None: not measured
    cpu_s_window: float | None = None


# What a repeat is for. `timed`: one of a cell's measured repeats (its figures come from these); `profiled`: the
# stages under cProfile/yappi; `memory`: one stage under memray; `capacity`: a probe of the capacity search at an
# offered rate; `whatif`: a repeat of the what-if experiment (a stage slowed on purpose, or undelayed beside them,
# or a faster variant). Only timed repeats are kept in `cells[].repeats` and counted; the others are separate runs (a
# profiler or tracer changes what it measures).
RepeatKind = Literal["timed", "profiled", "memory", "capacity", "whatif"]
# files written before `kind` marked the other kinds with a negative index: −1 profiled, −2 memory, −100−n probe n
_OLD_KIND_INDEX: dict[int, RepeatKind] = {-1: "profiled", -2: "memory"}


class ClusterHost(_M):
    ip: str  # the node's own address (its stages bind and advertise it)
    stages: list[str]  # the stage processes it ran
    cpu_s: float  # CPU seconds of those processes, every incarnation, as last seen alive by their actors
    rss_peak_bytes: int  # the sum of their peak resident memory
    # readings its stages handled, by each stage's own counter (generator: generated, ingest: queued, writer:
    # committed, forwarder: forwarded), every incarnation
    readings: dict[str, int]
    per_s: dict[str, float]  # those ÷ the stream's length (start of stream → generator stopped)


class ClockOffset(_M):
    offset_ns: float  # the host's clock − the controller's: t_host − (t_send + t_receive) / 2, shortest round trip
    uncertainty_ns: float  # ± half that round trip: the offset is known no better
    rtt_ns: float  # the shortest of the round trips to the host's agent


class GeneratorClock(_M):
    host: str  # where the generator ran
    # ns added to its readings' latencies: its host's clock offset − PostgreSQL's (intended and sent are stamped by
    # the generator's clock, inserted_at by PostgreSQL's)
    shift_ns: int
    uncertainty_ns: float  # the two offsets' uncertainties added


class LatencyClock(_M):
    """A cluster repeat's latency clock correction (``experiments.run.repeat._clock_shifts``)."""

    corrected: bool  # the repeat's latencies are shifted, per generator, by its shift
    postgresql: ClockOffset  # PostgreSQL's clock (clock_timestamp(), which stamps inserted_at) − the controller's
    generators: dict[str, GeneratorClock]
    before_ms: dict[str, float | None] | None = None  # intended → inserted p50/p99/max before the correction
    # generators whose shift is uncertain by more than clock_uncertainty_share of the p50 latency: suspect
    flagged: list[str] = Field(default_factory=list)


class ClusterStage(_M):
    host: str  # the host (Ray node resource host-<name>) its actor was pinned to
    ip: str  # that node's address
    restarts: int  # times Ray restarted its actor (the process died unasked: a crash, a kill fault)
    cpu_s: float  # CPU seconds, every incarnation
    rss_peak_bytes: int  # peak resident memory over its incarnations


class ClusterFigures(_M):
    """A repeat whose stages ran on the hosts of a Ray cluster (``--cluster``; harness/cluster/, docs/cluster.md)."""

    address: str  # the cluster's GCS address
    head: str  # the head's host: stages of a kind the placement does not list run there
    placement: dict[str, list[str]]  # stage kind → hosts (the matrix's [placement])
    hosts: dict[str, ClusterHost]  # per host: CPU, memory, throughput
    stages: dict[str, ClusterStage]  # per stage process: where it ran, its restarts
    clock: dict[str, ClockOffset]  # per host: its clock's offset to the controller's, measured before the run
    clock_uncertainty_share: float  # a host is flagged when its clock's uncertainty exceeds this share of p50 latency
    clock_flagged: list[
        str
    ]  # hosts whose clock uncertainty is a large share of the latency: cross-host figures suspect
    latency_clock: LatencyClock | None = None  # the latencies' clock correction (None: an older file)


class UslCoefficient(_M):
    value: float  # the least-squares estimate
    ci95: list[float] | None  # ± t(df) × its standard error (from the fit's covariance); None: not estimable


class UslFit(_M):
    """X(N) = λN / (1 + σ(N−1) + κN(N−1)), fitted over every counted repeat of every step."""

    points: int  # (N, throughput) points fitted: every counted repeat of every step
    df: int  # points − 3
    lam: UslCoefficient  # λ: one process's throughput (readings/s)
    sigma: UslCoefficient  # σ: contention, the share of the work that queues for something shared
    kappa: UslCoefficient  # κ: coherency, the cost of keeping N processes in agreement
    peak_n: float | None  # N* = √((1 − σ)/κ), where throughput peaks; None when κ = 0
    rmse: float  # root mean square of the residuals (readings/s)
    curve: list[list[float]]  # [N, X(N)] along the fitted curve, for the report's plot


class ScalingStep(_M):
    n: int  # processes in this step (writers: the scaled key)
    cell: str  # its cell
    median: float | None  # median throughput over its counted repeats
    ci95: list[float] | None  # its 95 % interval (Student's t over the repeats); None with one repeat
    repeats: int  # counted repeats


class Scaling(_M):
    group: str  # the matrix group that varies only the scaled key
    key: str  # the scaled key (workers)
    steps: list[ScalingStep]  # throughput per step, N ascending
    fit: UslFit | None  # None: too few points (≥ 4 over ≥ 3 distinct N) or scipy not installed (the cluster extra)


class Repeat(_M):
    kind: RepeatKind = "timed"  # what the repeat is for (timed, profiled, memory, capacity); only timed ones count
    index: int  # 0-based within its kind (the n-th timed repeat of the cell, the n-th capacity probe)
    ok: bool  # accounting exact and every stage healthy
    failures: list[str]  # what failed, one line each
    throughput_rps: float | None  # rows of whole commits in the measured window ÷ its length (commit to commit)
    window_s: float | None  # length of the measured window actually available
    window_complete: bool  # False: the run ended before warmup + measure elapsed
    window_commits: int = 0  # commits inside the window (after the one opening it)
    measure_s: float | None = None  # the window this repeat was planned with (sized per cell from its pilot)
    pilot: bool = False  # a first repeat whose window held too few commits: it sized the window, not counted
    latency_ms: Latency  # intended → inserted
    latency_sent_ms: Latency  # sent (generated) → inserted
    e2e_latency_ms: Latency = Field(default_factory=Latency)  # intended → received by our websocket client
    e2e_throughput_rps: float | None = None  # readings received by our websocket client per second, in the window
    accounting: Accounting  # generated, committed, rows, duplicated, lost, forwarded, broadcast, ...
    resources: dict[str, StageResources]
    queue_len: dict[str, list[list[float]]]  # key → [t_since_start_s, length]
    pg: PgDeltas
    prometheus: dict[str, dict[str, dict[str, float]]]  # stage → histogram → {le: cumulative count in the window}
    prometheus_quantiles_ms: dict[str, dict[str, float | None]]  # "stage/metric" → p50/p95/p99 (PromQL, window)
    duration_s: float
    drain_s: float
    phases_s: dict[str, float] = Field(default_factory=dict)  # start, stream, drain, stop: where the time went
    bottleneck: Bottleneck | None
    fault: Fault | None = None  # kind, at_s, injected, recovery_s (fault → the affected path moves again)
    expected_failures: list[str] = Field(default_factory=list)  # a lossy design's loss (expect_loss cells)
    sampled: Sampled | None = None  # py-spy sampled this repeat (matrix `sampling`); None: not sampled
    # a sampled repeat left out of its cell's figures: the run's sampling cost was shown beyond 2 % (sampling = "one")
    excluded: bool = False
    # seconds every stage process spent recording histograms, timed in place (pipeline.metrics._Timed and
    # observe_many; summed over the stages' final scrapes); None: an older file
    instrumentation_s: float | None = None
    commit_gap_s: float | None = None  # median time between commits after warm-up (sizes the cell's later windows)
    cluster: ClusterFigures | None = None  # stages on the hosts of a Ray cluster: per host, per stage, clocks

    @model_validator(mode="before")
    @classmethod
    def _kind_of_old_files(cls, data: Any) -> Any:
        """Files without ``kind`` marked the other kinds by a negative index; they load as that kind, 0-based."""
        if isinstance(data, dict) and "kind" not in data and isinstance(i := data.get("index"), int):
            if i in _OLD_KIND_INDEX:
                data = {**data, "kind": _OLD_KIND_INDEX[i], "index": 0}
            elif i <= -101:
                data = {**data, "kind": "capacity", "index": -101 - i}
        return data


Loop = Literal["open", "closed"]
StopReason = Literal["running", "converged", "max_repeats", "budget", "fixed", "failed", "no_data"]


class Summary(_M):
    throughput_rps: float | None  # median over the counted repeats
    throughput_min_rps: float | None
    throughput_max_rps: float | None
    cv: float | None  # coefficient of variation of throughput over repeats (stdev / mean), for information
    # the resolution: the smallest relative throughput difference from a cell of the same noise and repeats this
    # cell could tell from noise (minimum detectable effect, α = 0.05 two-sided, power 0.8; stats.mde)
    resolution: float | None = None
    unstable: bool  # the interval's half-width is above the cell's target (or unknown): flagged, with its interval
    throughput_ci95: list[float] | None = None  # [lo, hi], Student's t over repeats (experiments/stats.py)
    half_width: float | None = None  # (hi − lo) / 2 / median
    ci_target: float | None = None  # the half-width this cell aimed for
    repeats_taken: int = 0  # counted timed repeats (pilots excluded)
    stop_reason: StopReason = "running"  # why no further repeat was run
    # the repeats its noise calls for to reach ci_target (None: more than its cap, or unknown; analysis/planning.py)
    repeats_needed: int | None = None
    stop_detail: str | None = None  # why in words, where the round plan stopped it early or it ended short of target
    loop: Loop = "closed"  # "open": offered rate (intended times fixed); "closed": max rate (bounded in flight)
    latency_p99_ci95: list[float] | None = None  # [lo, hi] of the exact p99 over repeats
    measure_s: float | None = None  # the measured window the cell's counted repeats used
    # the stage ceiling that binds the cell ({stage, ceiling_rps, fraction, why}; experiments/stage_ceilings.py)
    binding_ceiling: dict[str, Any] | None = None
    # the maximum sustainable open-loop rate under the SLO ({rps, p99_ms, slo_ms, probes, ...}; capacity.py)
    capacity: dict[str, Any] | None = None
    fraction_of_ceiling: float | None  # throughput_rps / ceilings.copy_binary_rps
    readings_generated: int  # sums over every timed repeat (pilots included)
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
    recovery: Recovery | None = None  # fault cells: recovery time over the counted repeats (median, max, each)


class Profile(_M):
    profiler: str  # cprofile | yappi
    files: dict[str, dict[str, str]]  # stage → kind (cprofile | yappi_pstat | yappi_callgrind | yappi_text) → path
    failures: list[str]  # stages whose profile could not be written


class Load(_M):
    """What an open-loop cell offered as a share of another cell's measured rate (``rate_of``)."""

    of: str  # the cell whose rate it is a share of
    basis: Literal["capacity", "throughput"]  # capacity: the highest rate sustained at p99 ≤ slo_ms (the search);
    # throughput: the closed-loop max-rate throughput (no capacity searched for that cell)
    reference_rps: float  # that cell's capacity or throughput
    fraction: float  # the share offered (a fault cell: the matrix's fault_load)
    offered_rps: float  # fraction × reference, the cell's rate


class CellResult(_M):
    id: str  # the cell's id in the matrix (`--cells` selects by it)
    title: str  # what it varies, in words
    groups: list[str]  # the comparisons it belongs to
    varied: dict[str, Any]  # the keys its groups vary, with this cell's values
    params: PipelineConfig  # every run-plan knob (pipeline/knobs.py)
    repeats: list[Repeat]  # every repeat, pilots and uncounted kinds included
    summary: Summary | None = None  # over the counted repeats
    profile: Profile | None = None  # the cProfile/yappi repeat (profile_cells)
    load: Load | None = None  # a cell offered a share of another's rate (rate_of): of what, on which basis


class Ceilings(_M):
    copy_binary_rps: float  # binary COPY of pre-built rows, 10k-row batches, median of passes
    copy_binary_passes: list[float]  # every pass (rows/s)
    redis_pushpop_rps: float  # LPUSH 1,000 values + RPOP 1,000, per-reading JSON payloads
    redis_pushpop_passes: list[float]  # every pass
    decode_direct_rps: float  # direct field reads, one process
    readings: int  # readings per pass
    # each stage alone with the run's settings, measured between rounds: stage → {median, min, max, passes}
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)
    stages_cell: str | None = None  # whose settings


TargetStatus = Literal["pass", "fail", "cannot_tell"]


class Target(_M):
    name: str  # what is targeted
    target: str  # the bound, in words
    measured: str  # the figure with its 95 % interval
    status: TargetStatus = "cannot_tell"  # decided on intervals: cannot_tell when one straddles the bound
    passed: bool | None  # status as a boolean: None for cannot_tell (or not measured)
    detail: str  # how it was measured
    cells: list[str]  # the cells it was measured on

    @model_validator(mode="before")
    @classmethod
    def _status_of_old_files(cls, data: Any) -> Any:
        """Schema 1 files have ``passed`` only: their status follows from it."""
        if isinstance(data, dict) and "status" not in data:
            passed = data.get("passed")
            data = {**data, "status": "pass" if passed is True else "fail" if passed is False else "cannot_tell"}
        return data


class RatioCI(_M):
    """A ÷ B with its 95 % interval (stats.ratio)."""

    ratio: float | None
    ci95: list[float] | None
    numerator: str | None  # cell ids
    denominator: str | None
    label: str


class Headline(_M):
    full_job_vs_seed: RatioCI | None = None  # fastest cell doing the seed's whole job (commit, POST, broadcast)
    db_only_vs_seed: RatioCI | None = None  # fastest cell overall, committing only (labelled database-only)


class WhatIfRun(_M):
    """One repeat of a what-if experiment (experiments/run/whatif_runs.py)."""

    order: int  # its place in the run (delayed repeats are compared with the undelayed ones next to them)
    stage: str  # the stage slowed ("baseline": none; "variant": the real faster variant)
    fraction: float  # added time ÷ the stage's own time per reading (0 for baseline and variant)
    delay_us: float  # the delay knob's value (delay_<stage>_us), µs per reading
    throughput_rps: float | None  # the repeat's throughput (its measured window)
    p99_ms: float | None  # exact p99, intended → committed
    ok: bool  # accounting exact and every stage healthy
    failures: list[str] = Field(default_factory=list)
    duration_s: float | None = None  # wall time of the repeat
    cpu_us_per_reading: dict[str, float] = Field(default_factory=dict)  # stage → CPU µs per committed reading
    verdict: str | None = None  # the static rules' stage for this repeat


class StageFit(_M):
    """A stage's sensitivity: the fraction of the pipeline's time per reading added per fraction of the stage's time
    added (experiments/analysis/whatif.py): ≈ 1 binds, ≈ 0 slack."""

    stage: str
    words: str  # what its delay knob slows, in words
    time_us: float | None  # the stage's own time per reading (CPU µs, undelayed repeats): the amounts' unit
    s: float  # at x = 0 (what a speed-up sees)
    ci95: list[float] | None  # [lo, hi]
    sensitive: bool  # the whole interval above 0
    knee: float | None = None  # ≈ 0 up to +knee of its time, then beyond …
    beyond: float | None = None
    beyond_ci95: list[float] | None = None
    repeats: int = 0  # delayed repeats
    max_fraction: float = 0.0  # the largest amount tried
    text: str = ""  # "0.97 [0.85, 1.09]" or "≈ 0 up to +25 %, then 0.9 [0.7, 1.1]"


class WhatIfPrediction(_M):
    """Prediction from a stage's sensitivity beside a real faster variant measured in the same experiment."""

    stage: str
    variant: dict[str, Any]  # the knobs the variant changes, e.g. {"sink": "copy_binary"}
    k: float | None  # how much less stage time per reading the variant measured (1 − variant ÷ baseline CPU)
    predicted: float | None  # relative throughput change (or p99 change) predicted from s and k
    predicted_ci95: list[float] | None  # from s's interval (k's own noise not propagated)
    cap: float | None = None  # the gain where the next stage binds
    capped_by: str | None = None
    measured: float | None = None  # the variant ÷ the undelayed repeats − 1 (stats.ratio)
    measured_ci95: list[float] | None = None
    agree: bool | None = None  # the two intervals overlap (None: an interval is missing)
    text: str = ""


class WhatIf(_M):
    """A what-if experiment on one cell (`telemetry-bench whatif`, matrix key `whatif_cells`; issue 20)."""

    cell: str
    metric: Literal["throughput", "p99"]  # closed loop: throughput; open loop: p99 at the fixed offered rate
    seed: int  # the run order's shuffle
    fractions: list[float]  # amounts tried, as fractions of each stage's own time per reading
    planned_s: float  # the time it was expected to take, said before it started
    took_s: float | None = None  # the time it took
    stage_time_us: dict[str, float] = Field(default_factory=dict)  # stage → its time per reading (CPU µs)
    skipped: dict[str, str] = Field(default_factory=dict)  # stage → why it was not slowed
    runs: list[WhatIfRun] = Field(default_factory=list)  # every repeat, in run order
    fits: list[StageFit] = Field(default_factory=list)  # most sensitive first
    bottleneck: str | None = None  # the most sensitive stage beyond noise; "none": none was
    what_binds: str | None = None  # when no stage is sensitive: what else sets the pace, with its evidence
    static_verdict: str | None = None  # the static rules' stage over the undelayed repeats
    agreement: str | None = None  # the two verdicts side by side, and which one the evidence supports
    sentence: str | None = None  # what a speed-up would win, in one sentence
    predictions: list[WhatIfPrediction] = Field(default_factory=list)
    virtual_speedup: str = (
        "not built: the prediction comes from the sensitivities (a Coz-style virtual speed-up, delaying every "
        "other stage in proportion, is not run)"
    )
    command: str = ""  # the command that runs it again


class Results(_M):
    schema_version: int = SCHEMA_VERSION  # this file's schema; older files load (derived fields recomputed)
    run_id: str  # UTC time + short commit, e.g. 20261128T080340Z-fc1881c5
    created: str  # ISO time the run started
    finished: str | None = None  # ISO time it ended (None: interrupted or still running)
    git: dict[str, Any]  # {commit, short, dirty}
    # {hostname, cpu_model, cpu_logical, cpu_physical, cpu_mhz, memory_bytes, os, kernel, load_avg, ...}
    machine: dict[str, Any]
    software: dict[str, Any]  # {python, python_implementation, telemetry_bench, packages{...}}
    services: dict[str, Any]  # {postgresql{source, dsn (password masked)}, redis{...}, versions{...}}
    # the matrix as run: name, path, source (the TOML text), its keys, groups[{name, title, keys, cells}]
    matrix: dict[str, Any]
    settings: dict[str, Any]  # repeats, max_repeats, ci_target, profile, warmup_s, measure_s, tail_s, argv (masked)
    ceilings: Ceilings | None = None  # this machine's limits, measured in the same run
    cells: list[CellResult] = Field(default_factory=list)  # one per cell, in the matrix's order
    # cells that lost or duplicated a reading, forwarded or broadcast fewer than they should, or had a stage fail
    # (the run exits 1); expect_loss cells report their loss under repeats[].expected_failures instead
    failed_cells: list[str] = Field(default_factory=list)
    # matrices with `targets = "perf"` (experiments/analysis/targets.py)
    targets: list[Target] = Field(default_factory=list)
    headline: Headline = Field(default_factory=Headline)  # like with like against the seed
    # the run's resolution: {median, best, worst (relative MDE over the cells with an interval), cells, text}
    resolution: dict[str, Any] | None = None
    # py-spy's cost measured in this run (experiments/analysis/sampling_cost.py): ratio, ci95, status, cells, ...
    sampling_cost: dict[str, Any] | None = None
    # `run --memory-profile`: one extra repeat with a stage under memray (experiments.run.memory_profile)
    memory_profile: dict[str, Any] | None = None
    # a scaling comparison (a group varying `workers` only) and its Universal Scalability Law fit (analysis/usl.py)
    scaling: Scaling | None = None
    # what-if experiments (issue 20): cell id → the stages slowed on purpose, their sensitivities, the prediction
    whatif: dict[str, WhatIf] = Field(default_factory=dict)

    @property
    def ceiling_rps(self) -> float | None:
        """This run's binary-COPY ceiling (rows/s), the one every "% of ceiling" divides by."""
        return self.ceilings.copy_binary_rps if self.ceilings else None

    def cell(self, cid: str) -> CellResult | None:
        return next((c for c in self.cells if c.id == cid), None)

    def write(self, path: Path) -> None:
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(self.model_dump_json(indent=1))
        tmp.replace(path)


# ------------------------------------------------------------------------------------- reading cells (one place)
def counted(cell: CellResult) -> list[Repeat]:
    """The timed repeats a cell's figures come from: every timed repeat but the pilots and the excluded sampled
    repeats."""
    return [r for r in cell.repeats if r.kind == "timed" and not r.pilot and not r.excluded]


def throughputs(cell: CellResult) -> list[float]:
    return [r.throughput_rps for r in counted(cell) if r.throughput_rps is not None]


def cpu_per_reading(rep: Repeat, only: str | None = None) -> float | None:
    """CPU seconds per committed reading of a repeat: every stage process and the servers (PostgreSQL, Redis, a
    broker) summed — the cost a change adds, whatever else the cores are doing; ``only``: that one process's."""
    committed = rep.accounting.committed
    procs = [s for n, s in rep.resources.items() if only is None or n == only]
    return sum(s.cpu_s for s in procs) / committed if committed and procs else None


def instrumentation_cost(rep: Repeat) -> float | None:
    """What the histograms added to a repeat's CPU, as "on ÷ off − 1" would state it: their own seconds, timed in
    place, ÷ every other CPU second of the repeat (every stage and server). A wall-clock figure over CPU seconds:
    a recording call preempted midway counts its wait too, so the figure errs high, never low."""
    if rep.instrumentation_s is None or not rep.resources:
        return None
    rest = sum(s.cpu_s for s in rep.resources.values()) - rep.instrumentation_s
    return rep.instrumentation_s / rest if rest > 0 else None


def p99s(cell: CellResult) -> list[float]:
    return [r.latency_ms.p99 for r in counted(cell) if r.latency_ms.p99 is not None]


def failed(cell: CellResult) -> bool:
    return bool(cell.summary.failed) if cell.summary else any(not r.ok for r in cell.repeats)


def loop_of(params: PipelineConfig) -> Loop:
    """ "closed" at max rate (the generator sends as fast as the pipeline takes), "open" at an offered rate."""
    return "closed" if params.max_rate else "open"


def full_job(cell: CellResult) -> bool:
    """Does the cell do the seed's whole job: every reading committed, POSTed to the backend and broadcast to at
    least one websocket client?"""
    if not cell.params.forwarding:
        return False
    reps = counted(cell)
    return bool(reps) and all(r.accounting.ws_clients >= 1 for r in reps)


def is_seed(cell: CellResult) -> bool:
    return cell.id == "seed"


def best(cells: list[CellResult], group: str | None = None) -> CellResult | None:
    """The highest median throughput among cells that did not fail (of ``group`` when given)."""
    ok = [c for c in cells if (group is None or group in c.groups) and c.summary and c.summary.throughput_rps]
    ok = [c for c in ok if not failed(c)]
    return max(ok, key=lambda c: c.summary.throughput_rps or 0.0 if c.summary else 0.0, default=None)
