"""Experiment matrices (TOML in ``experiments/matrices/``): a baseline, explicit cells, and comparison groups.

    name = "default"
    repeats = 3            # timed repeats per cell
    warmup_s = 1.0         # discarded from the start of each repeat
    measure_s = 3.0        # the measured window
    interleave = true      # repeats round-robin over the cells (the default), so drift spreads over all of them
    ci_target = 0.05       # add rounds until each cell's 95 % interval half-width is ≤ 5 % of its median …
    max_repeats = 10       # … up to this many repeats per cell (then it is flagged with its interval)
    min_commits = 20       # a measured window spans ≥ 20 commits (sized per cell from its first repeat) …
    max_measure_s = 60.0   # … but is never longer than this
    budget_s = 540         # optional: start no extra round after this many seconds of the run
    sampling = "one"       # py-spy flame graphs of every stage: "one" repeat per cell, "on", "off" (the default),
                           # or "alternate" repeats (experiments/measure/sampler.py; the cost is measured in the run)
    sampling_hz = 10       # py-spy's rate (samples per second per stage)
    sampling_native = false  # true: native frames too (py-spy pauses the process for every sample: costly)
    profile_cells = ["baseline"]  # optional: the profiled repeat only for these cells (default: every cell)

    [base]                 # every cell starts from this PipelineConfig (or from a preset)
    topology = "split"
    sink = "copy_binary"

    [cells.seed]           # an explicit cell
    preset = "seed"        # start from harness.plan.SEED instead of [base]
    rate = 2000

    [[groups]]             # a comparison: one cell per value (the product over several keys)
    name = "sink"
    title = "INSERT vs COPY"
    vary = { sink = ["insert", "copy", "copy_binary"] }
    set = { batch_size = 1000 }   # what this comparison fixes besides [base]

    [[groups]]
    name = "every-sink"
    title = "every registered sink"
    vary = { sink = "*" }         # "*": every registered variant of that kind (decoder, queue, sink, forwarder)

    [cells.kill_writer]    # a fault cell (harness/faults/): at a time drawn per repeat from fault_between (shares
    fault = "kill_writer"  # of the stream; default 0.15–0.5) with the matrix's fault_seed, ≥ 5 repeats; or at a
    rate_of = "capacity"   # fixed fault_at_s. With rate_of, it offers fault_load (default 0.5) × that cell's rate
    fault_stage = "any"    # the process a kill_*/drop_grpc strikes: writer-2, ingest-2, generator-2, or any (drawn per
                           # repeat; chaos: each such part draws its own); default its kind's first

Identical cells from several groups run once and belong to each. Unknown keys, unknown variant names and bad
values fail before anything runs, naming the key, the file and the valid choices.
"""

from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from harness.cluster import PlacementError, check_placement
from harness.faults import CHAOS, FAULT_BETWEEN, FAULT_MIN_REPEATS, FAULTS, NEEDS_BACKEND, Fault
from harness.plan import SEED, PipelineConfig
from pipeline.knobs import VARIANT_KINDS
from pipeline.registry import registry

MATRICES = Path(__file__).resolve().parent.parent / "matrices"
PRESETS = {"seed": SEED, "base": None}
DEFAULT_RATE_HZ = 10  # the matrix key sampling_hz's default: py-spy's own CPU grows with the rate (docs/targets.md)
MIN_COMMITS_DEFAULT = 20


class MatrixError(ValueError):
    pass


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    title: str
    vary: dict[str, list[Any] | Literal["*"]]  # "*": every registered variant of that kind
    set: dict[str, Any] = Field(default_factory=dict)
    preset: str = "base"


class _Cell(BaseModel):
    model_config = ConfigDict(extra="allow")
    preset: str = "base"
    title: str | None = None
    rate_of: str | None = None  # open loop at rate_fraction × the measured throughput of this earlier cell
    rate_fraction: float | None = Field(None, gt=0)  # default 1, or the matrix's fault_load in a fault cell
    repeats: int | None = Field(None, ge=1, le=100)  # this cell's minimum repeats
    max_repeats: int | None = Field(None, ge=1, le=100)  # this cell's cap (1 with repeats = 1: a single long run)
    ci_target: float | None = Field(None, ge=0, lt=1)  # this cell's half-width target (e.g. 0.015 for a 3 % effect)
    profile: bool = True  # False: no profiled repeat for this cell (long cells)
    fault: str | None = None  # harness.faults.FAULTS, injected after the first reading reached the table
    fault_at_s: float | None = Field(None, ge=0)  # a fixed time; unset: drawn per repeat from fault_between
    fault_between: tuple[float, float] | None = None  # shares of the stream's generation time (default 0.15–0.5)
    fault_seed: int | None = None  # overrides the matrix's fault_seed
    chaos: list[str] | None = None  # fault = "chaos": its kinds, each at its own random moment (default CHAOS)
    # a killing kind's process: e.g. "writer-2", or "any" (drawn per repeat); default the kind's first
    fault_stage: str | None = None
    expect_loss: bool = False  # a lossy design (the seed's list): its loss is reported, not a failure


class _Matrix(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str = ""
    repeats: int = Field(3, ge=1, le=100)
    warmup_s: float = Field(1.0, ge=0)
    measure_s: float = Field(3.0, gt=0)
    tail_s: float = Field(1.0, ge=0, description="generation continues this long after the measured window")
    interleave: bool = True  # repeats round-robin over the cells (drift spreads over all); false: cell by cell
    ci_target: float = Field(0.05, ge=0, lt=1, description="95 % interval half-width ÷ median to reach; 0: none")
    max_repeats: int | None = Field(None, ge=1, le=100, description="cap on repeats per cell (default 3 × repeats)")
    min_commits: int = Field(MIN_COMMITS_DEFAULT, ge=0, description="commits a measured window spans; 0: no sizing")
    max_measure_s: float = Field(60.0, gt=0, description="the longest measured window sizing may ask for")
    budget_s: float | None = Field(None, gt=0, description="no extra round starts after this many seconds")
    profile_cells: list[str] | None = None  # profile only these cells (default: every cell with profile = true)
    base: dict[str, Any] = Field(default_factory=dict)
    cells: dict[str, _Cell] = Field(default_factory=dict)
    groups: list[_Group] = Field(default_factory=list)
    targets: Literal["perf"] | None = None  # a target set evaluated over the cells (experiments/targets.py)
    stage_ceilings: str | None = None  # a cell whose settings every stage is measured alone with, between rounds
    capacity_cells: list[str] = Field(default_factory=list)  # search these cells' max sustainable open-loop rate
    whatif_cells: list[str] = Field(
        default_factory=list
    )  # slow each stage of these cells (experiments/run/whatif_runs.py)
    slo_ms: float = Field(1000.0, gt=0, description="the capacity search's p99 bound (intended → committed)")
    sampling: Literal["off", "one", "on", "alternate"] = (
        "off"  # py-spy during timed repeats (experiments/measure/sampler.py)
    )
    sampling_hz: int = Field(DEFAULT_RATE_HZ, ge=1, le=1000, description="py-spy samples per second per stage")
    sampling_native: bool = False  # native frames: py-spy pauses every stage for every sample (costly)
    fault_seed: int = Field(1, description="the seed each fault cell's per-repeat fault times are drawn with")
    fault_load: float = Field(0.5, gt=0, le=1, description="a fault cell's share of its rate_of cell's throughput")
    placement: dict[str, list[str]] = Field(default_factory=dict)  # stage kind → hosts (a cluster run: --cluster)


@dataclass
class Cell:
    id: str
    params: PipelineConfig
    groups: list[str] = field(default_factory=list)  # comparison groups this cell belongs to
    title: str = ""
    varied: dict[str, Any] = field(default_factory=dict)  # the group keys that define it
    rate_of: str | None = None  # run open loop at rate_fraction × this earlier cell's measured throughput
    rate_fraction: float = 1.0
    repeats: int | None = None  # overrides the matrix's repeats (the minimum)
    profile: bool = True
    fault: str | None = None
    fault_at_s: float | None = None  # a fixed fault time; None: drawn per repeat (``fault_for``)
    expect_loss: bool = False
    max_repeats: int | None = None  # overrides the matrix's cap
    ci_target: float | None = None  # overrides the matrix's half-width target
    fault_between: tuple[float, float] = FAULT_BETWEEN  # shares of the stream the fault time is drawn from
    fault_seed: int = 1
    chaos: tuple[str, ...] = CHAOS  # fault = "chaos": the kinds it injects
    fault_stage: str | None = None  # the process a single-process kind strikes (``Fault.stage``): "writer-2", "any"

    def fault_for(self, cfg: PipelineConfig, index: int) -> Fault | None:
        """Repeat ``index``'s fault: at ``fault_at_s``, or at a time drawn from ``fault_between`` × the stream's
        generation time of ``cfg`` with ``fault_seed`` (the same seed, cell and repeat always draw the same time)."""
        if self.fault is None:
            return None
        if self.fault_at_s is not None:
            return Fault(self.fault, self.fault_at_s, stage=self.fault_stage)
        length = stream_s(cfg)
        if length is None:
            raise MatrixError(f"cell {self.id}: a fault at a random moment needs a known stream length ({cfg})")
        lo, hi = self.fault_between
        if self.fault == "chaos":  # each kind at its own moment of the same window: recoveries may overlap
            parts = [Fault.drawn(k, self.fault_seed, f"{self.id}:{k}", index, lo * length, hi * length)
                     for k in self.chaos]  # fmt: skip
            if self.fault_stage == "any":  # each part that strikes one process draws its own
                parts = [x.model_copy(update={"stage": "any"}) if FAULTS[x.kind].stage else x for x in parts]
            first = min(parts, key=lambda x: x.at_s)
            return first.model_copy(update={"kind": "chaos", "parts": parts})
        f = Fault.drawn(self.fault, self.fault_seed, self.id, index, lo * length, hi * length)
        return f.model_copy(update={"stage": self.fault_stage}) if self.fault_stage else f


def stream_s(cfg: PipelineConfig) -> float | None:
    """How long the generator streams: its duration, or count ÷ rate at an offered rate; None if unknown."""
    if cfg.duration:
        return cfg.duration
    if cfg.count and cfg.rate and not cfg.max_rate:
        return cfg.count / cfg.rate
    return None


@dataclass
class Matrix:
    name: str
    description: str
    path: Path
    source: str
    repeats: int
    warmup_s: float
    measure_s: float
    tail_s: float
    cells: list[Cell]
    groups: list[dict[str, Any]]  # name, title, keys, cell ids (in order)
    targets: str | None = None
    interleave: bool = True
    ci_target: float = 0.05
    max_repeats: int | None = None
    min_commits: int = MIN_COMMITS_DEFAULT
    max_measure_s: float = 60.0
    budget_s: float | None = None
    stage_ceilings: str | None = None
    capacity_cells: list[str] = field(default_factory=list)
    slo_ms: float = 1000.0
    sampling: str = (
        "off"  # "one" | "on" | "off" | "alternate": py-spy during the timed repeats (experiments.measure.sampler)
    )
    sampling_hz: int = DEFAULT_RATE_HZ
    sampling_native: bool = False
    fault_seed: int = 1
    fault_load: float = 0.5
    placement: dict[str, list[str]] = field(default_factory=dict)  # stage kind → hosts (harness.cluster)
    whatif_cells: list[str] = field(default_factory=list)  # the what-if experiment after the rounds (issue 20)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "path": str(self.path),
            "source": self.source,
            "repeats": self.repeats,
            "warmup_s": self.warmup_s,
            "measure_s": self.measure_s,
            "tail_s": self.tail_s,
            "groups": self.groups,
            "targets": self.targets,
            "interleave": self.interleave,
            "ci_target": self.ci_target,
            "max_repeats": self.max_repeats,
            "min_commits": self.min_commits,
            "max_measure_s": self.max_measure_s,
            "budget_s": self.budget_s,
            "stage_ceilings": self.stage_ceilings,
            "capacity_cells": self.capacity_cells,
            "slo_ms": self.slo_ms,
            "sampling": self.sampling,
            "sampling_hz": self.sampling_hz,
            "sampling_native": self.sampling_native,
            "fault_seed": self.fault_seed,
            "fault_load": self.fault_load,
            "placement": self.placement,
            "whatif_cells": self.whatif_cells,
        }


def resolve(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.suffix == ".toml" or p.exists():
        if not p.exists():
            raise MatrixError(f"matrix file {p} does not exist")
        return p
    candidate = MATRICES / f"{name_or_path}.toml"
    if not candidate.exists():
        names = sorted(f.stem for f in MATRICES.glob("*.toml"))
        raise MatrixError(f"unknown matrix {name_or_path!r}; valid matrices: {', '.join(names)} (or a path to a .toml)")
    return candidate


def _config(path: Path, where: str, preset: str, values: dict[str, Any], base: dict[str, Any]) -> PipelineConfig:
    if preset not in PRESETS:
        raise MatrixError(f"{path}: {where}: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    merged = {**(SEED.model_dump() if preset == "seed" else base), **values}
    unknown = sorted(set(merged) - set(PipelineConfig.model_fields))
    if unknown:
        raise MatrixError(
            f"{path}: {where}: unknown key {unknown[0]!r}; valid keys: {', '.join(PipelineConfig.model_fields)}"
        )
    try:
        return PipelineConfig.model_validate(merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "(cell)"
        msg = err["msg"].removeprefix("Value error, ")
        raise MatrixError(f"{path}: {where}: {key} = {err.get('input')!r}: {msg}") from None


def _values(path: Path, group: str, key: str, values: list[Any] | str) -> list[Any]:
    """A group's values of ``key``: as listed, or (``"*"``) every registered variant of that kind."""
    if values != "*":
        return list(values)
    if key not in VARIANT_KINDS:
        raise MatrixError(f"{path}: [[groups]] {group!r}: {key} = '*' means every registered variant, "
                          f"so it is only for {', '.join(VARIANT_KINDS)}")  # fmt: skip
    return registry(key).names()


def _fault_checks(path: Path, cid: str, c: _Cell, cfg: PipelineConfig, m: _Matrix) -> int | None:
    """A fault cell's kind, window and length; its minimum repeats (≥ FAULT_MIN_REPEATS at random moments)."""
    where = f"{path}: [cells.{cid}]"
    if c.fault not in FAULTS:
        raise MatrixError(f"{where}: unknown fault {c.fault!r}; valid faults: {', '.join(FAULTS)}")
    if c.chaos is not None and c.fault != "chaos":
        raise MatrixError(f"{where}: chaos = {c.chaos}: only for fault = 'chaos'")
    kinds = c.chaos if c.chaos is not None else list(CHAOS)
    bad = [k for k in kinds if k not in FAULTS or k == "chaos"]
    if c.fault == "chaos" and (bad or len(set(kinds)) < 2 or len(set(kinds)) != len(kinds)):
        raise MatrixError(f"{where}: chaos = {kinds}: at least two different kinds, each one of "
                          f"{', '.join(k for k in FAULTS if k != 'chaos')}")  # fmt: skip
    if c.fault_stage is not None:
        kind = FAULTS[str(c.fault)].stage  # a kind that strikes one process: its kind's first (FaultKind.stage)
        prefix = kind.partition("-")[0] if kind else None
        ok = (c.fault_stage in ("any", prefix) or re.fullmatch(rf"{prefix}-\d+", c.fault_stage)) if prefix else (
            c.fault == "chaos" and c.fault_stage == "any")  # fmt: skip
        if not ok:
            single = ", ".join(k for k, v in FAULTS.items() if v.stage)
            raise MatrixError(f"{where}: fault_stage = {c.fault_stage!r}: " + (
                f"expected 'any' or a {prefix} process ({kind}, {prefix}-2, …)" if prefix
                else "chaos takes only 'any' (each part that strikes one process draws its own)"
                if c.fault == "chaos" else f"only for a fault that strikes one process ({single})"
            ))  # fmt: skip
    backend = [k for k in (kinds if c.fault == "chaos" else [c.fault]) if k in NEEDS_BACKEND]
    if backend and not cfg.forwarding:
        raise MatrixError(f"{where}: fault {backend[0]!r} strikes the backend, but forwarder = 'none' runs none: "
                          f"set forwarder = 'async' or 'sync'")  # fmt: skip
    if c.fault_at_s is not None:
        if c.fault == "chaos":
            raise MatrixError(f"{where}: chaos strikes at random moments: no fault_at_s")
        if c.fault_between is not None:
            raise MatrixError(f"{where}: fault_at_s (a fixed time) and fault_between (a random one): set one")
        return c.repeats
    lo, hi = c.fault_between or FAULT_BETWEEN
    if not 0 <= lo <= hi <= 1:
        raise MatrixError(f"{where}: fault_between = [{lo}, {hi}]: need shares of the stream, 0 ≤ lo ≤ hi ≤ 1")
    if cfg.count and not stream_s(cfg):
        raise MatrixError(f"{where}: a fault at a random moment needs a known stream length: set duration, or an "
                          f"offered rate with count (count = {cfg.count} at max rate)")  # fmt: skip
    repeats = c.repeats if c.repeats is not None else max(m.repeats, FAULT_MIN_REPEATS)
    if repeats < FAULT_MIN_REPEATS:
        raise MatrixError(f"{where}: repeats = {repeats}: a fault at random moments takes ≥ {FAULT_MIN_REPEATS}")
    return repeats


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def load(name_or_path: str) -> Matrix:
    path = resolve(name_or_path)
    text = path.read_text()
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MatrixError(f"{path}: not valid TOML: {exc}") from None
    try:
        m = _Matrix.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = ", ".join(_Matrix.model_fields) if len(err["loc"]) == 1 else ", ".join(_Group.model_fields)
            raise MatrixError(f"{path}: unknown key {key!r}; valid keys here: {valid}") from None
        raise MatrixError(f"{path}: {key}: {err['msg']}") from None
    # the base itself must be valid; a group's cell that is exactly the base is called "baseline"
    base_cfg = _config(path, "[base]", "base", {}, m.base)
    cells: dict[str, Cell] = {}
    by_params: dict[str, Cell] = {}

    def add(cell: Cell) -> Cell:
        key = (
            f"{cell.params.model_dump_json()}|{cell.fault}|{cell.fault_at_s}|{cell.fault_between}|"
            f"{cell.fault_seed}|{cell.rate_of}|{cell.rate_fraction}"
        )
        if key in by_params:  # the same configuration from another group: run once
            existing = by_params[key]
            existing.groups.extend(g for g in cell.groups if g not in existing.groups)
            return existing
        if cell.id in cells:
            raise MatrixError(f"{path}: two different cells are both called {cell.id!r}")
        cells[cell.id] = by_params[key] = cell
        return cell

    for cid, c in m.cells.items():
        values = dict(c.model_extra or {})
        if c.rate_of is not None:
            values.setdefault("max_rate", False)
        cfg = _config(path, f"[cells.{cid}]", c.preset, values, m.base)
        repeats = _fault_checks(path, cid, c, cfg, m) if c.fault is not None else c.repeats
        share = c.rate_fraction or (m.fault_load if c.fault is not None else 1.0)
        add(Cell(cid, cfg, [], c.title or cid, values, c.rate_of, share, repeats, c.profile,
                 c.fault, c.fault_at_s, c.expect_loss, c.max_repeats, c.ci_target,
                 c.fault_between or FAULT_BETWEEN, m.fault_seed if c.fault_seed is None else c.fault_seed,
                 tuple(c.chaos or CHAOS), c.fault_stage))  # fmt: skip
    groups = []
    for g in m.groups:
        keys = list(g.vary)
        ids = []
        for combo in itertools.product(*(_values(path, g.name, k, g.vary[k]) for k in keys)):
            varied = dict(zip(keys, combo, strict=True))
            params = _config(path, f"[[groups]] {g.name!r} {varied}", g.preset, {**g.set, **varied}, m.base)
            cid = f"{g.name}-" + "-".join(f"{k}={_fmt(v)}" for k, v in varied.items())
            if params == base_cfg:
                cid = "baseline"
            ids.append(add(Cell(cid, params, [g.name], cid, varied)).id)
        groups.append({"name": g.name, "title": g.title, "keys": keys, "cells": ids})
    if not cells:
        raise MatrixError(f"{path}: the matrix has no cells")
    named = {
        "capacity_cells": m.capacity_cells,
        "whatif_cells": m.whatif_cells,
        "stage_ceilings": [m.stage_ceilings] if m.stage_ceilings else [],
    }
    for key, ids in named.items():
        if unknown_ids := [c for c in ids if c not in cells]:
            raise MatrixError(f"{path}: {key}: unknown cell(s) {', '.join(map(repr, unknown_ids))}; cells: "
                              f"{', '.join(cells)}")  # fmt: skip
    if m.profile_cells is not None:
        unknown = [c for c in m.profile_cells if c not in cells]
        if unknown:
            raise MatrixError(f"{path}: profile_cells: unknown cell(s) {', '.join(map(repr, unknown))}; cells: "
                              f"{', '.join(cells)}")  # fmt: skip
        for cell in cells.values():
            cell.profile = cell.profile and cell.id in m.profile_cells
    group_names = {str(g["name"]) for g in groups}
    for cell in cells.values():
        ref = cell.rate_of
        if ref is not None and ref not in cells and ref.removeprefix("group:") not in group_names:
            raise MatrixError(
                f"{path}: [cells.{cell.id}]: rate_of {ref!r} must name a cell or 'group:<name>' (its best cell); "
                f"cells: {', '.join(cells)}; groups: {', '.join(sorted(group_names)) or 'none'}"
            )
    return Matrix(
        m.name,
        m.description,
        path,
        text,
        m.repeats,
        m.warmup_s,
        m.measure_s,
        m.tail_s,
        list(cells.values()),
        groups,
        m.targets,
        m.interleave,
        m.ci_target,
        m.max_repeats,
        m.min_commits,
        m.max_measure_s,
        m.budget_s,
        m.stage_ceilings,
        m.capacity_cells,
        m.slo_ms,
        m.sampling,
        m.sampling_hz,
        m.sampling_native,
        m.fault_seed,
        m.fault_load,
        _placement(path, m.placement),
        m.whatif_cells,
    )


def _placement(path: Path, placement: dict[str, list[str]]) -> dict[str, list[str]]:
    try:
        return check_placement(placement)
    except PlacementError as exc:
        raise MatrixError(f"{path}: {exc}") from None
