"""Sampled stacks (py-spy's collapsed format) analysed: what is idle, the hottest functions, a cell's samples
merged, and the differential profile between two runs (``compare``)."""

from __future__ import annotations

import collections
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.results.model import CellResult

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
Stacks = collections.Counter[str]


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
