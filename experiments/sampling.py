"""Sampling profiles of running stage processes with py-spy: flame graphs, top functions, speedscope files, diffs.

py-spy attaches to a process by pid (ptrace; root has it here) and reads its Python stacks ``rate`` times a second.
How (one place, :func:`py_spy_argv`): measured repeats are sampled **without pausing** the process
(``--nonblocking``: py-spy reads the interpreter's memory while it runs) and **without native frames**, because
``--native`` needs the process stopped for every sample to unwind its C stack with libunwind — that pause, on every
stage at 100 Hz, cost a default run −33 % of throughput on 2 cores. The trade-off: grpc's, psycopg's and the
interpreter's C frames are not in the measured repeats' flame graphs (time in a C call shows as its Python caller);
the matrix key ``sampling_native = true`` brings them back (blocking: the cost it adds is what the run measures),
and the cProfile repeat (``profile_cells``) still names every C function called from Python. The rate is the
matrix key ``sampling_hz`` (default :data:`DEFAULT_RATE_HZ`): even without pausing, py-spy spends CPU of its own in
proportion to it (≈ 0.15 ms per sample of a 4-thread process: ≈ 3 % of a core per stage at 50 Hz, 6 % at 100 Hz),
taken from the stages when every core is busy.

``--idle`` keeps the samples of threads that wait; a sample is *idle* when its innermost frame is a known wait
(:func:`is_idle`): with native frames, a C wait (``epoll_wait``, ``nanosleep``, a futex, …: :data:`IDLE_LEAVES`);
on pure-Python stacks, the Python frame that makes the waiting call (``selectors.py``'s ``select``,
``threading.py``'s ``wait``, an asyncio runner whose loop is C, a thread whose target is C such as grpc's
completion-queue poller: :data:`IDLE_PY_FRAMES`, py-spy's own idle heuristic extended). Busy and idle time are told
apart in every table and drawn in different colours. A ``time.sleep`` called straight from a Python function is not
visible without native frames (the caller's frame is the innermost): the stages wait through asyncio instead.

Files per stage: each sampled repeat's raw samples under ``profiles/<run>/<cell>/repeat-<n>/<stage>.collapsed``, and
the cell's views merged over every sampled repeat so far, under ``profiles/<run>/<cell>/``: ``<stage>.collapsed``
(Brendan Gregg's collapsed stacks: one ``frame;frame;frame count`` line per stack; ``flamegraph.pl`` and speedscope
open it), ``<stage>.speedscope.json`` (open at https://www.speedscope.app or ``npx speedscope FILE``) and
``<stage>.svg`` (a flame graph any browser opens). Merged per cell: the sum over the cell's sampled repeats is what
the report draws and ranks.

When (matrix key ``sampling``, :func:`sampled`): ``"one"`` exactly one counted repeat per cell (the second: the
first may become the pilot; a cell capped at one repeat samples that one), ``"on"`` every timed repeat, ``"off"``
none, ``"alternate"`` every other timed repeat, with the parity flipped from one cell to the next.
The cost (:func:`cost`) is measured in the same run, **paired per cell**: over the closed-loop cells without a fault
(an open-loop cell's throughput is pinned to its offered rate), ln(the cell's sampled throughput ÷ the median of its
unsampled repeats), pooled over the cells with a t interval (``experiments.stats.pooled_ratio``), so no cell's
interval has to hold two populations for the cost to be measured. With ``"one"``, when that interval lies wholly
beyond the 2 % bound (status ``fail``), every sampled repeat is excluded from its cell's figures
(:func:`apply_cost`, ``repeats[].excluded``); otherwise it counts.
A sampler starts on every stage process at the first commit of a repeat (warm-up included) and stops when the
generator's stream has ended (the drain is not sampled); a stage restarted mid-run (fault cells) is sampled until
its first process dies.
"""

from __future__ import annotations

import collections
import html
import json
import logging
import shlex
import shutil
import signal
import subprocess
import sys
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from harness.lifeline import die_with_parent

if TYPE_CHECKING:
    from experiments.results import CellResult, Results
    from experiments.stats import Ratio

log = logging.getLogger("telemetry_bench.sampling")

IDLE_LEAVES = (
    "epoll_wait", "epoll_pwait", "select", "poll", "ppoll", "pselect", "nanosleep", "clock_nanosleep", "futex",
    "pthread_cond_wait", "pthread_cond_timedwait", "sem_wait", "sem_timedwait", "accept", "recv", "read",
    "__select", "__poll", "time_sleep", "lock_PyThread_acquire_lock", "PyThread_acquire_lock_timed",
)  # fmt: skip
# Pure-Python stacks (no native frames): (function, file) of the innermost Python frame when the thread waits in C
# below it. The function is matched on its last dotted part (py-spy ≥ 0.4 names methods Class.method), the file on
# its tail (py-spy shortens paths to the package part).
IDLE_PY_FRAMES = (
    ("select", "selectors.py"),  # the asyncio loop (and any selector) in epoll/poll/select
    ("wait", "threading.py"),  # Condition.wait, Event.wait: a lock acquire
    ("_wait_for_tstate_lock", "threading.py"),  # Thread.join
    ("readinto", "socket.py"),  # a blocking socket read (recv_into): the metrics server waiting for its request
    ("run", "threading.py"),  # a thread whose target is C with no Python frame: grpc's completion-queue poller
    ("_worker", "concurrent/futures/thread.py"),  # an idle executor thread, blocked in SimpleQueue.get
    ("run", "asyncio/runners.py"),  # asyncio.run over a C event loop (uvloop): its wait is C
    ("run_forever", "asyncio/base_events.py"),
)  # fmt: skip
DEFAULT_RATE_HZ = 50  # the matrix key sampling_hz's default: py-spy's own CPU grows with the rate (below)
Mode = Literal["off", "one", "on", "alternate"]
MODES: tuple[Mode, ...] = ("off", "one", "on", "alternate")
ONE_INDEX = 1  # sampling = "one": the second timed repeat (the first may become the pilot, which is not counted)
MAX_COST = 0.02  # the target: sampling costs at most 2 % of throughput (decided on the interval)

Stacks = collections.Counter[str]


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on PATH (None: not installed)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def _frame_name(frame: str) -> str:
    """``func (file.py:12)`` or ``0x7f… (libc.so.6)`` → the function (or library) part."""
    name, _, where = frame.partition(" (")
    return f"{where.rstrip(')')}" if name.startswith("0x") else name


def is_idle(stack: str) -> bool:
    """Is the innermost frame of ``stack`` (or a lone frame) a wait? A Python frame (``name (file.py)``) by
    :data:`IDLE_PY_FRAMES`, a native one (``name (lib.so)``, ``0x… (lib.so)``) by :data:`IDLE_LEAVES`."""
    frame = stack.rsplit(";", 1)[-1]
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    if where.endswith(".py"):
        func = name.rsplit(".", 1)[-1]
        return any(func == f and (where == w or where.endswith("/" + w)) for f, w in IDLE_PY_FRAMES)
    leaf = _frame_name(frame)
    return any(leaf == w or leaf.startswith(w + "@") or leaf.endswith("_" + w) for w in IDLE_LEAVES)


def py_spy_argv(exe: str, pid: int, out: Path, rate_hz: int, *, native: bool = False) -> list[str]:
    """The py-spy command that samples ``pid`` into ``out`` (raw collapsed stacks, idle threads kept, no line
    numbers): without pausing the process, or — ``native`` — pausing it for every sample to unwind its C frames
    (py-spy cannot read native frames without the pause)."""
    how = ["--native"] if native else ["--nonblocking"]
    return [exe, "record", "--pid", str(pid), "--rate", str(rate_hz), "--format", "raw", "--output", str(out),
            "--idle", "--nolineno", *how]  # fmt: skip


class Sampler:
    """py-spy recording each of ``pids`` (stage name → pid) into ``out_dir/<stage>.collapsed`` until :meth:`stop`."""

    def __init__(
        self, pids: dict[str, int], out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ, *, native: bool = False
    ) -> None:
        self.pids, self.out_dir, self.rate_hz, self.native = pids, out_dir, rate_hz, native
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.problem: str | None = None

    def start(self) -> None:
        exe = py_spy()
        if exe is None:
            self.problem = "py-spy is not installed (pip install py-spy): no sampling profiles"
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for stage, pid in self.pids.items():
            out = self.out_dir / f"{stage}.collapsed"
            argv = py_spy_argv(exe, pid, out, self.rate_hz, native=self.native)
            log = (self.out_dir / f"{stage}.py-spy.log").open("wb")
            self.procs[stage] = subprocess.Popen(
                argv, stdout=log, stderr=log, start_new_session=True, preexec_fn=die_with_parent()
            )

    def interrupt(self) -> None:
        """Ask every py-spy to stop and write its output (SIGINT), without waiting: :meth:`stop` collects."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT

    def stop(self, timeout: float = 15.0) -> dict[str, Path]:
        """Stop recording; the collapsed-stack files written (a refused attach is reported in ``problem``)."""
        self.interrupt()
        written: dict[str, Path] = {}
        for stage, proc in self.procs.items():
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out = self.out_dir / f"{stage}.collapsed"
            if out.exists() and out.stat().st_size:
                written[stage] = out
            else:
                tail = (self.out_dir / f"{stage}.py-spy.log").read_text(errors="replace").strip().splitlines()[-1:]
                if any("ermission" in line for line in tail):
                    self.problem = f"py-spy could not attach (ptrace refused): {tail[0]}"
        return written


def sampled(mode: str, index: int, position: int, *, single: bool = False) -> bool:
    """Is timed repeat ``index`` (0-based; < 0: the profiled repeat, never) of the cell at ``position`` in the
    matrix sampled? ``one``: the repeat :data:`ONE_INDEX`, or the first of a cell capped at one repeat
    (``single``); ``alternate`` flips parity from cell to cell, so every round has both kinds."""
    if mode not in MODES:
        raise ValueError(f"sampling = {mode!r}: valid values are {', '.join(MODES)}")
    if index < 0 or mode == "off":
        return False
    if mode == "one":
        return index == (0 if single else ONE_INDEX)
    return mode == "on" or (index + position) % 2 == 0


_warned: set[str] = set()


class StreamSampler:
    """The repeat's sampler hook (``measure.ResourceMonitor.on_poll``): at every poll of the orchestrator it gets the
    live stage pids and the snapshot; it starts a :class:`Sampler` on every stage at the first commit and interrupts
    it once the generator's stream has ended. :meth:`finish` (after the run) collects the files."""

    def __init__(self, out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ, *, native: bool = False) -> None:
        self.out_dir, self.rate_hz, self.native = out_dir, rate_hz, native
        self.sampler: Sampler | None = None
        self.ended = False

    def __call__(self, pids: dict[str, int], snap: dict[str, Any]) -> None:
        if self.sampler is None and pids and snap.get("committed", 0) > 0:
            self.sampler = Sampler(dict(pids), self.out_dir, self.rate_hz, native=self.native)
            self.sampler.start()
        if self.sampler is not None and not self.ended and snap.get("streams_completed", 0) >= 1:
            self.sampler.interrupt()
            self.ended = True

    def finish(self) -> tuple[dict[str, Path], str | None]:
        """(stage → collapsed file, the problem if sampling failed). A problem is logged once per run."""
        if self.sampler is None:
            return {}, "no commit before the stream ended: not sampled"
        files = self.sampler.stop()
        problem = self.sampler.problem
        if problem and problem not in _warned:
            _warned.add(problem)
            log.warning("%s; the run goes on without sampling profiles", problem)
        return files, problem


def read_collapsed(path: Path) -> Stacks:
    stacks: Stacks = collections.Counter()
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


@dataclass(frozen=True)
class Hot:
    function: str
    share: float  # of all samples
    idle: bool


def top_self(stacks: Stacks, n: int = 10, *, busy_only: bool = False) -> list[Hot]:
    """The functions with most self samples (innermost frame), as shares of every sample."""
    total = sum(stacks.values()) or 1
    own: collections.Counter[tuple[str, bool]] = collections.Counter()
    for stack, count in stacks.items():
        idle = is_idle(stack)
        if busy_only and idle:
            continue
        own[(_frame_name(stack.rsplit(";", 1)[-1]), idle)] += count
    return [Hot(f, c / total, idle) for (f, idle), c in own.most_common(n)]


def idle_share(stacks: Stacks) -> float:
    total = sum(stacks.values())
    return sum(c for s, c in stacks.items() if is_idle(s)) / total if total else 0.0


def to_speedscope(stacks: Stacks, name: str) -> dict[str, object]:
    """The speedscope file format (a "sampled" profile; https://www.speedscope.app/file-format-schema.json)."""
    frames: dict[str, int] = {}
    samples, weights = [], []
    for stack, count in stacks.items():
        samples.append([frames.setdefault(f, len(frames)) for f in stack.split(";")])
        weights.append(count)
    return {
        "$schema": "https://www.speedscope.app/file-format-schema.json",
        "shared": {"frames": [{"name": f} for f in frames]},
        "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                      "endValue": sum(weights), "samples": samples, "weights": weights}],
        "name": name, "exporter": "telemetry-bench (py-spy samples)",
    }  # fmt: skip


def flamegraph_svg(stacks: Stacks, title: str, width: int = 1000, row: int = 16, min_px: float = 0.3) -> str:
    """A flame graph (root at the bottom, width ∝ samples): warm colours busy, blue idle; hover shows each frame."""
    totals: collections.Counter[tuple[str, ...]] = collections.Counter()
    idle_of: collections.Counter[tuple[str, ...]] = collections.Counter()
    for stack, count in stacks.items():
        path: tuple[str, ...] = ()
        idle = is_idle(stack)
        for frame in stack.split(";"):
            path = (*path, frame)
            totals[path] += count
            if idle:
                idle_of[path] += count
    total = sum(stacks.values()) or 1
    depth = max((len(p) for p in totals), default=0)
    height = (depth + 2) * row
    rects = []
    x_of: dict[tuple[str, ...], float] = {(): 0.0}
    for path in sorted(totals, key=lambda p: (len(p), p)):
        parent = path[:-1]
        x = x_of.get(parent, 0.0)
        w = totals[path] / total * width
        x_of[parent] = x + w  # next sibling starts after this one
        x_of[path] = x
        if w < min_px:  # too narrow to see (the report's embedded graphs draw ≥ 1 px)
            continue
        y = height - (len(path) + 1) * row
        idle = idle_of[path] * 2 > totals[path]
        colour = "#7fa7d9" if idle else f"hsl({20 + zlib.crc32(path[-1].encode()) % 35}, 85%, 60%)"
        label = html.escape(path[-1])
        tip = f"{label} — {totals[path]:,} samples ({totals[path] / total:.1%}){' idle' if idle else ''}"
        text = label if w > 40 else ""
        rects.append(
            f'<g><title>{tip}</title><rect x="{x:.2f}" y="{y}" width="{w:.2f}" height="{row - 1}" fill="{colour}"/>'
            f'<text x="{x + 3:.2f}" y="{y + row - 4}" font-size="11">'
            f"{text[: int(w / 7)]}</text></g>"
        )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'style="max-width:100%;height:auto" font-family="monospace">'
        f'<text x="4" y="14" font-size="12">{html.escape(title)} · {total:,} samples</text>' + "".join(rects) + "</svg>"
    )


def write_views(collapsed: Path, title: str) -> dict[str, Path]:
    """Beside ``<stage>.collapsed``: ``<stage>.speedscope.json`` and ``<stage>.svg``."""
    stacks = read_collapsed(collapsed)
    base = collapsed.with_suffix("")
    speedscope = base.with_suffix(".speedscope.json")
    speedscope.write_text(json.dumps(to_speedscope(stacks, title)))
    svg = base.with_suffix(".svg")
    svg.write_text(flamegraph_svg(stacks, title))
    return {"collapsed": collapsed, "speedscope": speedscope, "svg": svg}


@dataclass(frozen=True)
class Change:
    function: str
    before: float  # share of samples (self) in A
    after: float  # in B
    idle: bool = False  # most of its self samples (in A and B) are waits (``is_idle`` on the whole stack)

    @property
    def delta(self) -> float:
        return self.after - self.before


def _shares(stacks: Stacks) -> tuple[dict[str, float], dict[str, float]]:
    """Function → its share of self samples, and the idle part of that share."""
    share: dict[str, float] = {}
    idle: dict[str, float] = {}
    for h in top_self(stacks, n=10_000):
        share[h.function] = share.get(h.function, 0.0) + h.share
        if h.idle:
            idle[h.function] = idle.get(h.function, 0.0) + h.share
    return share, idle


def diff(a: Stacks, b: Stacks, n: int = 10) -> list[Change]:
    """The functions whose share of self samples changed most from ``a`` to ``b`` (a differential profile)."""
    (sa, ia), (sb, ib) = _shares(a), _shares(b)
    changes = []
    for f in set(sa) | set(sb):
        total = sa.get(f, 0.0) + sb.get(f, 0.0)
        waits = ia.get(f, 0.0) + ib.get(f, 0.0)
        changes.append(Change(f, sa.get(f, 0.0), sb.get(f, 0.0), idle=total > 0 and waits * 2 >= total))
    changes.sort(key=lambda c: abs(c.delta), reverse=True)
    return changes[:n]


def merge(paths: Iterable[Path]) -> Stacks:
    """The samples of several collapsed files summed (a cell's sampled repeats); missing files are skipped."""
    total: Stacks = collections.Counter()
    for p in paths:
        if p.exists():
            total.update(read_collapsed(p))
    return total


def write_cell_views(cell_dir: Path) -> dict[str, dict[str, Path]]:
    """Merge every ``cell_dir/repeat-*/<stage>.collapsed`` into ``cell_dir/<stage>.collapsed`` and its views
    (speedscope JSON, SVG): stage → kind → file."""
    by_stage: dict[str, list[Path]] = {}
    for f in sorted(cell_dir.glob("repeat-*/*.collapsed")):
        by_stage.setdefault(f.stem, []).append(f)
    out = {}
    for stage, files in sorted(by_stage.items()):
        stacks = merge(files)
        if not stacks:
            continue
        collapsed = cell_dir / f"{stage}.collapsed"
        collapsed.write_text("".join(f"{k} {v}\n" for k, v in stacks.items()))
        out[stage] = write_views(collapsed, f"{cell_dir.name} · {stage} · {len(files)} sampled repeat(s)")
    return out


def resolve(stored: str, roots: list[Path]) -> Path:
    """A stored path (relative to the repository, or absolute) as a file: the first root holding it."""
    p = Path(stored)
    if p.is_absolute():
        return p
    for r in roots:
        if (r / p).exists():
            return r / p
    return roots[0] / p


def cell_stacks(cell: CellResult, roots: list[Path]) -> dict[str, Stacks]:
    """Stage → the samples of every counted, sampled repeat of ``cell``, merged."""
    files: dict[str, list[Path]] = {}
    for rep in cell.repeats:
        if rep.pilot or rep.sampled is None:
            continue
        for stage, stored in rep.sampled.files.items():
            files.setdefault(stage, []).append(resolve(stored, roots))
    return {stage: st for stage, paths in files.items() if (st := merge(paths))}


# ------------------------------------------------------------------------------------------------------ the cost
@dataclass(frozen=True)
class Cost:
    """Sampled ÷ unsampled throughput, paired per cell and pooled (a ratio with its interval), and its source."""

    ratio: Ratio
    sampled: int  # sampled repeats, over every pair
    unsampled: int  # unsampled repeats, over every pair
    cells: list[str]  # the pairs: one closed-loop cell each
    per_cell: dict[str, float]  # cell → its sampled median ÷ its unsampled median

    @property
    def status(self) -> str:
        """pass / fail / cannot_tell against :data:`MAX_COST` (``stats.at_least`` on the ratio's interval)."""
        from experiments import stats

        return stats.at_least(self.ratio, 1.0 - MAX_COST)

    def text(self) -> str:
        if self.ratio.ratio is None:
            return "not measured"
        return (f"sampled ÷ unsampled − 1 = {self.ratio.text()} (paired in {len(self.cells)} closed-loop cell(s): "
                f"sampled median ÷ unsampled median per cell, t interval over the cells; {self.sampled} "
                f"sampled vs {self.unsampled} unsampled repeats)")  # fmt: skip


def _pair(cell: CellResult) -> tuple[list[float], list[float]] | None:
    """(sampled, unsampled) throughputs of a closed-loop cell's counted repeats without a fault — excluded ones
    included: the cost is measured on them — or None when the cell cannot be paired."""
    from experiments.results import failed, loop_of

    if loop_of(cell.params) != "closed" or failed(cell):
        return None
    reps = [r for r in cell.repeats if not r.pilot and r.throughput_rps and r.fault is None]
    # sampled: py-spy recorded every stage; a repeat whose sampling failed is on neither side
    s = [r.throughput_rps or 0.0 for r in reps if r.sampled and r.sampled.files and not r.sampled.problem]
    u = [r.throughput_rps or 0.0 for r in reps if r.sampled is None]
    return (s, u) if s and u else None


def cost(res: Results) -> Cost | None:
    """The sampling cost measured in ``res``, paired per cell: for each closed-loop cell without a fault that has
    sampled and unsampled counted repeats, median(sampled) ÷ median(unsampled); pooled over those cells
    (``stats.pooled_ratio``: the median of the log ratios, Student's t interval over the cells — each cell is its
    own control, so cells of different speeds pool and no cell's interval mixes the two populations). None when
    the run has no such cell; one cell gives a point without an interval."""
    from experiments import stats

    ratios: dict[str, float] = {}
    n_s = n_u = 0
    for c in res.cells:
        pair = _pair(c)
        if pair is None:
            continue
        s, u = pair
        ratios[c.id] = (stats.median(s) or 0.0) / (stats.median(u) or 1.0)
        n_s, n_u = n_s + len(s), n_u + len(u)
    if not ratios:
        return None
    return Cost(stats.pooled_ratio(ratios.values()), n_s, n_u, list(ratios), ratios)


def apply_cost(res: Results) -> tuple[Cost | None, bool]:
    """With ``sampling = "one"``: exclude every sampled repeat from its cell's figures when the run's cost is
    shown beyond :data:`MAX_COST` (status ``fail``: the whole interval below 98 %), include them otherwise.
    Returns (the cost, whether any repeat's ``excluded`` changed: the cells' summaries are then stale)."""
    c = cost(res)
    exclude = res.matrix.get("sampling") == "one" and c is not None and c.status == "fail"
    changed = False
    for cell in res.cells:
        for r in cell.repeats:
            want = exclude and r.sampled is not None and not r.pilot
            if r.excluded != want:
                r.excluded, changed = want, True
    return c, changed


def cost_record(res: Results) -> dict[str, Any] | None:
    """The cost as ``results.json`` keeps it (``sampling_cost``) and the report and console state it."""
    c = cost(res)
    if c is None:
        return None
    return {
        "ratio": c.ratio.ratio, "ci95": c.ratio.ci, "status": c.status, "bound": MAX_COST, "text": c.text(),
        "cells": c.cells, "per_cell": c.per_cell, "sampled": c.sampled, "unsampled": c.unsampled,
        "rate_hz": res.matrix.get("sampling_hz", DEFAULT_RATE_HZ), "native": bool(res.matrix.get("sampling_native")),
        "excluded": any(r.excluded for cell in res.cells for r in cell.repeats),
    }  # fmt: skip


def open_commands(files: dict[str, str]) -> dict[str, str]:
    """The command that opens each view (kind → path as shown, e.g. relative to the repository root)."""
    how = {"speedscope": "npx speedscope {}", "svg": "xdg-open {}", "collapsed": "flamegraph.pl {} > flame.svg"}
    return {kind: how[kind].format(shlex.quote(path)) for kind, path in files.items() if kind in how}
