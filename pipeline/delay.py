"""Deliberate delays: a stage made slower on purpose by a known cost per reading (the what-if experiment).

One knob per stage, ``delay_<stage>_us`` (extra microseconds per reading, ``pipeline/knobs.py``), and one kind for
the process, ``delay_kind``:

- ``spin`` holds the CPU, as slower code would: a busy loop until this thread has used ``n × us`` more **CPU
  time** (``time.thread_time_ns``), so the stage's added cost is CPU, exactly, however busy the machine is (on a
  shared core, spinning by the wall clock would add less CPU than it says);
- ``sleep`` frees the CPU, as a slower remote service would: the cost is owed and slept off once the debt reaches
  :data:`SLEEP_QUANTUM_NS` (timers can't sleep a few microseconds), the time actually slept paid back from the debt,
  so an overshoot is repaid by the next sleeps and the mean added time per reading is the setting.

A delay is applied once per message or batch, as n readings × the setting (where, per stage: the knob's help).
:func:`make` returns None when the knob is 0: the stage then tests ``if delay is not None`` once per message and
does nothing else (``benchmarks/test_microbench.py`` times the hot path with the knob off).
"""

from __future__ import annotations

import asyncio
import time
from typing import get_args

from pipeline.knobs import DelayKind as Kind

KINDS: tuple[Kind, ...] = get_args(Kind)
SLEEP_QUANTUM_NS = 1_000_000  # sleep once at least 1 ms is owed


class Delay:
    """``n`` readings × ``us`` microseconds of extra cost, of ``kind`` (see the module)."""

    def __init__(self, us: float, kind: Kind) -> None:
        if kind not in KINDS:
            raise ValueError(f"delay_kind {kind!r}: valid kinds are {', '.join(KINDS)}")
        if not us > 0:
            raise ValueError(f"a delay of {us!r} µs per reading: must be > 0 (0 turns it off)")
        self.ns_per_reading, self.kind = us * 1000.0, kind
        self.debt_ns = 0.0  # sleep: owed and not yet slept (negative: slept ahead)
        self.added_ns = 0.0  # what was asked for so far (the stated cost), for the record

    def _spin(self, ns: float) -> None:
        until = time.thread_time_ns() + ns
        while time.thread_time_ns() < until:
            pass

    def _owe(self, n: int) -> float:
        """Add the cost of ``n`` readings: spin it off now, or owe it; the seconds to sleep now (0: nothing yet)."""
        ns = n * self.ns_per_reading
        self.added_ns += ns
        if self.kind == "spin":
            self._spin(ns)
            return 0.0
        self.debt_ns += ns
        return self.debt_ns / 1e9 if self.debt_ns >= SLEEP_QUANTUM_NS else 0.0

    async def __call__(self, n: int) -> None:
        """In async code: the cost of ``n`` readings (``sleep`` yields to the event loop)."""
        if seconds := self._owe(n):
            t = time.perf_counter_ns()
            await asyncio.sleep(seconds)
            self.debt_ns -= time.perf_counter_ns() - t

    def block(self, n: int) -> None:
        """In sync code: the cost of ``n`` readings (``sleep`` blocks the thread)."""
        if seconds := self._owe(n):
            t = time.perf_counter_ns()
            time.sleep(seconds)
            self.debt_ns -= time.perf_counter_ns() - t


def make(us: float, kind: Kind) -> Delay | None:
    """The stage's delay, or None when its knob is 0 (off, and free)."""
    return Delay(us, kind) if us else None
