"""Faults injected mid-run (``kill_writer`` … ``chaos``): what each does (one file per kind in ``kinds/``, the shape
in ``base.FaultKind``), when the affected path moved again (recovery, ``injection``), and the Redis state a
``restart_redis`` must bring back (``shared.queue_state``). Cells set ``fault`` and either ``fault_at_s`` (a fixed
time) or nothing / ``fault_between`` (a time drawn per repeat from a seeded uniform distribution over a share of the
stream, ``draw_at_s``; the seed and the interval are recorded with the fault).

``FAULTS`` is the registry of kinds (discovered, plugins included); ``NEEDS_BACKEND`` and ``TIMED`` are read from
the kinds as they are asked; ``CHAOS`` (chaos's default kinds, those with ``in_chaos``) is read once, at import."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator

from harness.faults.base import KINDS, Fault, FaultKind, Pipeline, draw_at_s
from harness.faults.injection import Injection
from harness.faults.recovery import Recovery, recovery_of
from harness.faults.shared import local_cluster, queue_state

FAULTS = KINDS  # name → kind class
FAULT_MIN_REPEATS = 5  # a fault cell at random moments takes at least this many repeats
FAULT_BETWEEN = (0.15, 0.5)  # default: a fault strikes between these fractions of the stream's generation time


class KindNames(Collection[str]):
    """The names of the registered kinds for which ``test`` holds, read from the registry when asked."""

    def __init__(self, test: Callable[[type[FaultKind]], bool]) -> None:
        self.test = test

    def _names(self) -> list[str]:
        return [name for name, kind in FAULTS.items() if self.test(kind)]

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return repr(tuple(self._names()))


NEEDS_BACKEND = KindNames(lambda k: k.needs_backend)  # kinds that strike the backend: the run must forward to one
TIMED = KindNames(lambda k: k.hold_s is not None)  # held for a while, then undone
CHAOS: tuple[str, ...] = tuple(name for name, kind in FAULTS.items() if kind.in_chaos)  # they combine safely

__all__ = ["CHAOS", "FAULTS", "FAULT_BETWEEN", "FAULT_MIN_REPEATS", "NEEDS_BACKEND", "TIMED", "Fault", "FaultKind",
           "Injection", "KindNames", "Pipeline", "Recovery", "draw_at_s", "local_cluster", "queue_state",
           "recovery_of"]  # fmt: skip
