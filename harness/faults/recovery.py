"""A fault cell's recovery over its repeats (results.json: ``summary.recovery``)."""

from __future__ import annotations

import statistics

from pydantic import BaseModel, ConfigDict, Field

from harness.faults.base import Fault


class Recovery(BaseModel):
    """A fault cell's recovery times over its repeats (results.json: ``summary.recovery``): how many repeats had
    the fault, how many were injected and recovered, the median, min and max recovery time, and each one."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    repeats: int
    injected: int
    recovered: int  # injected, and the affected path moved again before the run ended
    median_s: float | None = None
    min_s: float | None = None
    max_s: float | None = None
    values_s: list[float] = Field(default_factory=list)  # in repeat order
    at_s: list[float] = Field(default_factory=list)  # each injected repeat's fault time (drawn, or fixed)
    seed: int | None = None


def recovery_of(faults: list[Fault]) -> Recovery | None:
    """The recovery distribution of one cell's faults (one per repeat), or None without any."""
    if not faults:
        return None
    injected = [f for f in faults if f.injected]
    values = [round(f.recovery_s, 3) for f in injected if f.recovery_s is not None]
    return Recovery(
        kind=faults[0].kind,
        repeats=len(faults),
        injected=len(injected),
        recovered=len(values),
        median_s=round(statistics.median(values), 3) if values else None,
        min_s=min(values, default=None),
        max_s=max(values, default=None),
        values_s=values,
        at_s=[f.at_s for f in injected],
        seed=faults[0].seed,
    )
