"""Number formatting shared by the report's pages (jinja filters) and sentences."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from experiments.results.model import Load


def f_int(v: float | None) -> str:
    return "–" if v is None else f"{v:,.0f}"


def f_ms(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    a = abs(v)
    return f"{v:,.3f}" if a < 1 else f"{v:,.2f}" if a < 10 else f"{v:,.1f}" if a < 100 else f"{v:,.0f}"


def f_pct(v: float | None, digits: int = 1) -> str:
    return "–" if v is None else f"{v * 100:.{digits}f} %"


def f_bytes(v: float | None) -> str:
    if v is None:
        return "–"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(v) >= size:
            return f"{v / size:,.1f} {unit}"
    return f"{v:,.0f} B"


def f_s(v: float | None) -> str:
    if v is None:
        return "–"
    if v >= 1:
        return f"{v:,.2f} s"
    if v >= 1e-3:
        return f"{v * 1e3:,.1f} ms"
    if v >= 1e-6:
        return f"{v * 1e6:,.1f} µs"
    return f"{v * 1e9:,.0f} ns"


def f_ratio(r: float | None) -> str:
    """A speed-up as "3.4×" when large, else as a percentage change."""
    if r is None:
        return "–"
    if r >= 1.5 or r <= 1 / 1.5:
        return f"{r:,.1f}×" if r >= 1.5 else f"{1 / r:,.1f}× less"
    return f"{r - 1:+.1%}".replace("%", " %")


def _times(r: float) -> str:
    return f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×"


def load_words(load: Load | None, short: bool = False) -> str:
    """A cell's offered load as a share of another cell's measured rate: "50 % of capacity-stream's capacity
    (12,000/s at p99 ≤ SLO) = 6,000/s"; ``short``: "50 % cap 12,000/s"."""
    if load is None:
        return "–"
    what = "capacity" if load.basis == "capacity" else "closed-loop throughput"
    if short:
        return f"{load.fraction:.0%} {'cap' if load.basis == 'capacity' else 'tput'} {load.reference_rps:,.0f}/s"
    return (f"{load.fraction:.0%} of {load.of}'s {what} ({load.reference_rps:,.0f} readings/s"
            + (", the highest rate it sustained at p99 within the SLO" if load.basis == "capacity" else "")
            + f") = {load.offered_rps:,.0f} readings/s offered")  # fmt: skip
