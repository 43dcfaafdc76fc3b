"""Sampling profiles of running stage processes with py-spy: flame graphs, top functions, speedscope files, diffs.

py-spy attaches to a process by pid (ptrace; root has it here), reads its Python stacks ``rate`` times a second and,
with ``--native``, the C frames below them (grpc's, psycopg's, the interpreter's), so time in extensions shows where
it goes. ``--idle`` keeps the samples of threads that wait; a sample is *idle* when its innermost frame is a known
wait (``epoll_wait``, ``select``, ``nanosleep``, a futex or condition wait, …: :data:`IDLE_LEAVES`), so busy and idle
time are told apart in every table and drawn in different colours. Unlike cProfile it does not instrument every
call: its cost is a pause per sample, measured by the runner in the same run (sampled vs unsampled repeats).

Files per stage: each sampled repeat's raw samples under ``profiles/<run>/<cell>/repeat-<n>/<stage>.collapsed``, and
the cell's views merged over every sampled repeat so far, under ``profiles/<run>/<cell>/``: ``<stage>.collapsed``
(Brendan Gregg's collapsed stacks: one ``frame;frame;frame count`` line per stack; ``flamegraph.pl`` and speedscope
open it), ``<stage>.speedscope.json`` (open at https://www.speedscope.app or ``npx speedscope FILE``) and
``<stage>.svg`` (a flame graph any browser opens). Merged per cell, because one repeat's few seconds at 100 Hz are
a few hundred samples per stage: the sum over the cell's sampled repeats is what the report draws and ranks.

When (matrix key ``sampling``): ``"on"`` every timed repeat, ``"off"`` none, ``"alternate"`` every other timed
repeat, with the parity flipped from one cell to the next so that each interleaved round has sampled and unsampled
cells alike (drift falls on both sides). The cost (:func:`cost`) is then measured in the same run: over the
closed-loop cells (an open-loop cell's throughput is pinned to its offered rate), each repeat's throughput ÷ its
cell's scale (the geometric mean of its sampled and unsampled medians), sampled vs unsampled, as a ratio of medians
with its 95 % interval (``experiments.stats.ratio``).
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
DEFAULT_RATE_HZ = 100
Mode = Literal["off", "on", "alternate"]
MODES: tuple[Mode, ...] = ("off", "on", "alternate")
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
    leaf = _frame_name(stack.rsplit(";", 1)[-1])
    return any(leaf == w or leaf.startswith(w + "@") or leaf.endswith("_" + w) for w in IDLE_LEAVES)


class Sampler:
    """py-spy recording each of ``pids`` (stage name → pid) into ``out_dir/<stage>.collapsed`` until :meth:`stop`."""

    def __init__(self, pids: dict[str, int], out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ) -> None:
        self.pids, self.out_dir, self.rate_hz = pids, out_dir, rate_hz
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
            argv = [exe, "record", "--pid", str(pid), "--rate", str(self.rate_hz), "--format", "raw",
                    "--output", str(out), "--idle", "--native", "--nolineno"]  # fmt: skip
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


def sampled(mode: str, index: int, position: int) -> bool:
    """Is timed repeat ``index`` (0-based; < 0: the profiled repeat, never) of the cell at ``position`` in the
    matrix sampled? ``alternate`` flips parity from cell to cell, so every round has both kinds."""
    if mode not in MODES:
        raise ValueError(f"sampling = {mode!r}: valid values are {', '.join(MODES)}")
    if index < 0 or mode == "off":
        return False
    return mode == "on" or (index + position) % 2 == 0


_warned: set[str] = set()


class StreamSampler:
    """The repeat's sampler hook (``measure.ResourceMonitor.on_poll``): at every poll of the orchestrator it gets the
    live stage pids and the snapshot; it starts a :class:`Sampler` on every stage at the first commit and interrupts
    it once the generator's stream has ended. :meth:`finish` (after the run) collects the files."""

    def __init__(self, out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ) -> None:
        self.out_dir, self.rate_hz = out_dir, rate_hz
        self.sampler: Sampler | None = None
        self.ended = False

    def __call__(self, pids: dict[str, int], snap: dict[str, Any]) -> None:
        if self.sampler is None and pids and snap.get("committed", 0) > 0:
            self.sampler = Sampler(dict(pids), self.out_dir, self.rate_hz)
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

    @property
    def delta(self) -> float:
        return self.after - self.before


def diff(a: Stacks, b: Stacks, n: int = 10) -> list[Change]:
    """The functions whose share of self samples changed most from ``a`` to ``b`` (a differential profile)."""
    sa = {h.function: h.share for h in top_self(a, n=10_000)}
    sb = {h.function: h.share for h in top_self(b, n=10_000)}
    changes = [Change(f, sa.get(f, 0.0), sb.get(f, 0.0)) for f in set(sa) | set(sb)]
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
    """Sampled ÷ unsampled throughput (a ratio of medians with its interval) and where it comes from."""

    ratio: Ratio
    sampled: int  # repeats on each side
    unsampled: int
    cells: list[str]

    @property
    def status(self) -> str:
        """pass / fail / cannot_tell against :data:`MAX_COST` (``stats.at_least`` on the ratio's interval)."""
        from experiments import stats

        return stats.at_least(self.ratio, 1.0 - MAX_COST)

    def text(self) -> str:
        if self.ratio.ratio is None:
            return "not measured"
        return (f"sampled ÷ unsampled − 1 = {self.ratio.text()} ({self.sampled} sampled vs {self.unsampled} "
                f"unsampled repeats of {len(self.cells)} closed-loop cell(s))")  # fmt: skip


def cost(res: Results) -> Cost | None:
    """The sampling cost measured in ``res``: over closed-loop cells without a fault that have both sampled and
    unsampled counted repeats, each repeat's throughput ÷ the geometric mean of its cell's sampled and unsampled
    medians (cells of different speeds pool), sampled vs unsampled (``stats.ratio``: ratio of medians, Welch's
    interval on the log scale). None when the run has no such cell."""
    from experiments import stats
    from experiments.results import counted, failed, loop_of

    on: list[float] = []
    off: list[float] = []
    cells = []
    for c in res.cells:
        if loop_of(c.params) != "closed" or failed(c):
            continue
        reps = [r for r in counted(c) if r.throughput_rps and r.fault is None]
        # sampled: py-spy recorded every stage; a repeat whose sampling failed is on neither side
        s = [r.throughput_rps or 0.0 for r in reps if r.sampled and r.sampled.files and not r.sampled.problem]
        u = [r.throughput_rps or 0.0 for r in reps if r.sampled is None]
        ms, mu = stats.median(s), stats.median(u)
        if not ms or not mu:
            continue
        scale = (ms * mu) ** 0.5  # symmetric: a cell with 2 sampled and 1 unsampled repeats biases neither side
        on += [v / scale for v in s]
        off += [v / scale for v in u]
        cells.append(c.id)
    if not cells:
        return None
    return Cost(stats.ratio(on, off), len(on), len(off), cells)


def open_commands(files: dict[str, str]) -> dict[str, str]:
    """The command that opens each view (kind → path as shown, e.g. relative to the repository root)."""
    how = {"speedscope": "npx speedscope {}", "svg": "xdg-open {}", "collapsed": "flamegraph.pl {} > flame.svg"}
    return {kind: how[kind].format(shlex.quote(path)) for kind, path in files.items() if kind in how}
