"""Controlling py-spy: sampling profiles of running stage processes during measured repeats.

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
unsampled repeats), pooled over the cells with a t interval (``experiments.analysis.stats.pooled_ratio``), so no cell's
interval has to hold two populations for the cost to be measured. With ``"one"``, when that interval lies wholly
beyond the 2 % bound (status ``fail``), every sampled repeat is excluded from its cell's figures
(:func:`apply_cost`, ``repeats[].excluded``); otherwise it counts.
A sampler starts on every stage process at the first commit of a repeat (warm-up included) and stops when the
generator's stream has ended (the drain is not sampled); a stage restarted mid-run (fault cells) is sampled until
its first process dies.

What the samples say is analysed in :mod:`experiments.analysis.stacks`, drawn in :mod:`experiments.present.flamegraph`;
what sampling costs is estimated in :mod:`experiments.analysis.sampling_cost`.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Literal

import psutil

from experiments.plan.matrix import DEFAULT_RATE_HZ
from harness.lifeline import die_with_parent

log = logging.getLogger("telemetry_bench.sampling")

Mode = Literal["off", "one", "on", "alternate"]
MODES: tuple[Mode, ...] = ("off", "one", "on", "alternate")
ONE_INDEX = 1  # sampling = "one": the second timed repeat (the first may become the pilot, which is not counted)


def py_spy() -> str | None:
    """The py-spy executable beside this interpreter, or on PATH (None: not installed)."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


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
        self.cpu_s = 0.0  # the py-spy processes' own CPU seconds, read as they are asked to stop

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
            self.procs[stage] = subprocess.Popen(die_with_parent(argv), stdout=log, stderr=log, start_new_session=True)

    def cpu_now(self) -> float:
        """The py-spy processes' CPU seconds so far (those still running; read at every poll)."""
        total = 0.0
        for proc in self.procs.values():
            with contextlib.suppress(psutil.Error):
                t = psutil.Process(proc.pid).cpu_times()
                total += t.user + t.system
        return total

    def interrupt(self) -> None:
        """Ask every py-spy to stop and write its output (SIGINT), without waiting: :meth:`stop` collects."""
        for proc in self.procs.values():
            if proc.poll() is None:
                with contextlib.suppress(psutil.Error):  # what sampling took of the cores, beside the stages
                    t = psutil.Process(proc.pid).cpu_times()
                    self.cpu_s += t.user + t.system
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
    """Is timed repeat ``index`` (0-based; a repeat of another kind is never sampled: ``run_repeat`` asks only for
    timed ones, and a negative index, as older files marked the others, is never sampled) of the cell at
    ``position`` in the matrix sampled? ``one``: the repeat :data:`ONE_INDEX`, or the first of a cell capped at one
    repeat (``single``); ``alternate`` flips parity from cell to cell, so every round has both kinds."""
    if mode not in MODES:
        raise ValueError(f"sampling = {mode!r}: valid values are {', '.join(MODES)}")
    if index < 0 or mode == "off":
        return False
    if mode == "one":
        return index == (0 if single else ONE_INDEX)
    return mode == "on" or (index + position) % 2 == 0


_warned: set[str] = set()


class StreamSampler:
    """The repeat's sampler hook (``monitor.ResourceMonitor.on_poll``): at every poll of the orchestrator it gets the
    live stage pids and the snapshot; it starts a :class:`Sampler` on every stage at the first commit and interrupts
    it once the generator's stream has ended. :meth:`finish` (after the run) collects the files."""

    def __init__(self, out_dir: Path, rate_hz: int = DEFAULT_RATE_HZ, *, native: bool = False) -> None:
        self.out_dir, self.rate_hz, self.native = out_dir, rate_hz, native
        self.sampler: Sampler | None = None
        self.ended = False
        # [epoch s, py-spy's cumulative CPU s] at every poll while it samples: its CPU inside the measured window
        self.cpu_series: list[list[float]] = []

    def __call__(self, pids: dict[str, int], snap: dict[str, Any]) -> None:
        if self.sampler is None and pids and snap.get("committed", 0) > 0:
            self.sampler = Sampler(dict(pids), self.out_dir, self.rate_hz, native=self.native)
            self.cpu_series.append([time.time(), 0.0])
            self.sampler.start()
        elif self.sampler is not None and not self.ended:
            self.cpu_series.append([time.time(), self.sampler.cpu_now()])
        if self.sampler is not None and not self.ended and snap.get("streams_completed", 0) >= 1:
            self.sampler.interrupt()
            self.ended = True

    @property
    def cpu_s(self) -> float | None:
        """py-spy's own CPU seconds over the repeat (every stage's sampler), None when nothing was sampled."""
        return round(self.sampler.cpu_s, 4) if self.sampler is not None and self.sampler.procs else None

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
