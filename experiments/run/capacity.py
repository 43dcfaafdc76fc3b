"""Capacity under a latency bound: the highest offered (open-loop) rate a configuration sustains.

A rate is **sustained** when, over the measured window, no queue grows beyond batching noise, the generator leaves
nothing unsent, the pipeline commits at least ``KEEP_UP`` of the offered rate, and the exact p99 latency (intended →
committed) stays within the SLO. The search is OpenMessaging Benchmark's maximum-sustainable-rate idea in its
simplest form: from a starting rate (half the configuration's closed-loop throughput, when known), multiply by
``GROWTH`` until a rate fails (or divide until one holds), then bisect the bracket geometrically until its upper end is
within ``tolerance`` of its lower end or the probe budget is spent. The capacity is the bracket's lower end, with
the p99 measured there; every probe is kept, so the report can show the whole curve.

Each probe is one short open-loop repeat of the cell at that rate (run by the caller): this module only decides.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

GROWTH = 2.0
KEEP_UP = 0.95  # committed ÷ offered over the window below this: the pipeline fell behind
DEFAULT_SLO_MS = 1000.0


@dataclass(frozen=True)
class Probe:
    """What one open-loop repeat at ``rate`` showed."""

    rate: float  # offered readings/s
    achieved: float  # committed readings/s over the window
    p99_ms: float | None  # exact intended → committed p99 over the window (None: no reading in it)
    queue_grew: bool = False  # a queue grew by more than batching noise over the window
    unsent: int = 0  # readings the generator never sent (it fell behind its schedule)

    def failures(self, slo_ms: float) -> list[str]:
        """Why this rate is not sustained (empty: sustained)."""
        why = []
        if self.p99_ms is None:
            why.append("no reading committed in the window")
        elif self.p99_ms > slo_ms:
            why.append(f"p99 {self.p99_ms:,.0f} ms > SLO {slo_ms:,.0f} ms")
        if self.queue_grew:
            why.append("a queue grew")
        if self.unsent:
            why.append(f"{self.unsent:,} readings unsent")
        if self.achieved < KEEP_UP * self.rate:
            why.append(f"committed {self.achieved:,.0f}/s of {self.rate:,.0f}/s offered")
        return why


@dataclass
class Capacity:
    """The search's answer: ``rps`` is the highest sustained rate found (None: not even the lowest probe held)."""

    slo_ms: float
    rps: float | None = None
    p99_ms: float | None = None
    upper: float | None = None  # lowest rate seen to fail (the bracket's upper end)
    stop_reason: str = ""
    probes: list[Probe] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "rps": self.rps, "p99_ms": self.p99_ms, "slo_ms": self.slo_ms, "upper_rps": self.upper,
            "stop_reason": self.stop_reason,
            "probes": [
                {"rate": p.rate, "achieved": p.achieved, "p99_ms": p.p99_ms, "queue_grew": p.queue_grew,
                 "unsent": p.unsent, "sustained": not p.failures(self.slo_ms),
                 "why_not": "; ".join(p.failures(self.slo_ms))}
                for p in self.probes
            ],
        }  # fmt: skip


async def find_capacity(
    probe: Callable[[float], Awaitable[Probe]],
    start: float,
    *,
    slo_ms: float = DEFAULT_SLO_MS,
    tolerance: float = 0.10,
    max_probes: int = 8,
    min_rate: float = 1.0,
) -> Capacity:
    """Search the highest sustained offered rate, starting at ``start`` readings/s (see the module's docstring)."""
    if start <= 0 or not math.isfinite(start):
        raise ValueError(f"start rate {start!r}: must be a positive number of readings/s")
    if not 0 < tolerance < 1:
        raise ValueError(f"tolerance {tolerance!r}: must lie in (0, 1)")
    cap = Capacity(slo_ms=slo_ms)
    best: Probe | None = None
    lo: float | None = None
    hi: float | None = None

    async def attempt(rate: float) -> bool:
        nonlocal best, lo, hi
        p = await probe(rate)
        cap.probes.append(p)
        if p.failures(slo_ms):
            hi = rate if hi is None else min(hi, rate)
            return False
        if lo is None or rate > lo:
            lo, best = rate, p
        return True

    rate = start
    # 1. bracket: grow until a rate fails, or shrink until one holds
    held = await attempt(rate)
    while len(cap.probes) < max_probes:
        if held and hi is None:
            rate *= GROWTH
        elif not held and lo is None:
            rate /= GROWTH
            if rate < min_rate:
                cap.stop_reason = f"not sustained even at {rate * GROWTH:,.1f} readings/s"
                break
        else:
            break
        held = await attempt(rate)
    # 2. bisect the bracket (geometric midpoint: rates span orders of magnitude)
    while lo is not None and hi is not None and len(cap.probes) < max_probes and hi / lo - 1 > tolerance:
        await attempt(math.sqrt(lo * hi))
    if not cap.stop_reason:
        if lo is None:
            cap.stop_reason = f"no sustained rate found in {len(cap.probes)} probes"
        elif hi is None:
            cap.stop_reason = f"every probe up to {lo:,.0f}/s held: the capacity is at least that (probe budget spent)"
        elif hi / lo - 1 <= tolerance:
            cap.stop_reason = f"bracket [{lo:,.0f}, {hi:,.0f}] within {tolerance:.0%}"
        else:
            cap.stop_reason = f"probe budget ({max_probes}) spent with bracket [{lo:,.0f}, {hi:,.0f}]"
    cap.rps, cap.upper = lo, hi
    cap.p99_ms = best.p99_ms if best is not None else None
    return cap
