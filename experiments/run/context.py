"""What one run shares: ``RunContext``. The runner makes one per run; a capacity search (``capacity_runs``), a memory
run (``memory_profile``) and the runner's own rounds ask it for a ``Repeat`` of a named kind (``ctx.repeat(cell,
kind=…)``) instead of reaching into the runner. It holds the matrix, the services, the run's own Redis keys and
PostgreSQL schema, its folders, the results being written and the console; which repeat runs when stays the
runner's (and the capacity search's) business.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, assert_never

from rich.console import Console

from experiments.plan.matrix import Cell, Matrix
from experiments.results.model import Repeat, RepeatKind, Results
from experiments.run.repeat import run_repeat
from harness.services import Services


def run_schema(run_id: str) -> str:
    """The PostgreSQL schema of one run: ``bench_`` and its id, lower-cased, as an identifier."""
    return "bench_" + re.sub(r"[^a-z0-9_]", "_", run_id.lower())[:50]


def workdir_name(kind: RepeatKind, index: int) -> str:
    """The folder under ``logs/<cell>/`` of a repeat of ``kind``: its stages' logs and scratch files. (A new kind
    must be named here: mypy fails on a kind this match leaves out.)"""
    match kind:
        case "timed":
            return f"repeat-{index + 1}"
        case "profiled":
            return "profiled"
        case "memory":
            return "memory-profile"
        case "capacity":
            return f"capacity-{index + 1}"
        case "whatif":
            return f"whatif-{index + 1}"
        case _:
            assert_never(kind)


# the kinds of repeat whose stages run on the cluster's hosts with --cluster: what the run measures (timed repeats,
# the capacity searches' probes, the what-if experiment's). A profiled or memory repeat runs locally: its profiler
# writes its files where its stage runs
PLACED: tuple[RepeatKind, ...] = ("timed", "capacity", "whatif")


@dataclass
class RunContext:
    m: Matrix
    services: Services
    results: Results  # rewritten to ``results_path`` by ``save`` after every step
    dir: Path  # reports/<run>: results.json, the report, logs/<cell>/<repeat>/
    profile_dir: Path  # profiles/<run>: profiles/<run>/<cell>/… (cProfile, py-spy, memray)
    queue_key: str  # this run's own Redis keys: bench:<run>:queue
    schema: str  # and PostgreSQL schema: concurrent runs never share a table
    console: Console
    measure_s: dict[str, float] = field(default_factory=dict)  # cell id → its measured window (sized by its pilot)
    # harness.cluster.placement.Placement with --cluster: the stages of the PLACED kinds of repeat run on its hosts
    placement: Any = None

    @classmethod
    def for_run(
        cls, run_id: str, m: Matrix, services: Services, results: Results, out: Path, profiles: Path, console: Console
    ) -> RunContext:
        return cls(m, services, results, out / run_id, profiles / run_id, f"bench:{run_id}:queue", run_schema(run_id),
                   console)  # fmt: skip

    @property
    def results_path(self) -> Path:
        return self.dir / "results.json"

    def save(self) -> None:
        self.results.write(self.results_path)

    def say(self, text: str, style: str | None = None) -> None:
        """One plain line on the run's console (no rich markup: cell ids and errors print as they are)."""
        self.console.print(text, style=style, markup=False, highlight=False)

    def ci_target(self, cell: Cell) -> float:
        """The half-width ``cell``'s throughput interval aims for (its own, else the matrix's)."""
        return self.m.ci_target if cell.ci_target is None else cell.ci_target

    def cell(self, cell_id: str) -> Cell:
        return next(c for c in self.m.cells if c.id == cell_id)

    async def repeat(
        self,
        cell: Cell,
        kind: RepeatKind = "timed",
        *,
        index: int = 0,
        on_progress: Callable[[dict[str, Any]], None] | None = None,
        python_prefix: Callable[[str], list[str]] | None = None,
        sample: bool | None = None,
    ) -> Repeat:
        """One repeat of ``cell`` (the ``index``-th of its ``kind``) with this run's keys, schema and the cell's
        window; its logs under ``logs/<cell>/<workdir_name>``. Timed repeats may be sampled by py-spy into
        ``profiles/<run>/<cell>/`` (``sample``: default the matrix's ``sampling``); the other kinds never are."""
        return await run_repeat(
            cell, self.m, self.services, self.dir / "logs" / cell.id / workdir_name(kind, index), kind=kind,
            index=index, on_progress=on_progress, python_prefix=python_prefix, measure_s=self.measure_s.get(cell.id),
            queue_key=self.queue_key, schema=self.schema,
            sample_dir=self.profile_dir / cell.id if kind == "timed" else None, sample=sample,
            placement=self.placement if kind in PLACED else None,
        )  # fmt: skip
