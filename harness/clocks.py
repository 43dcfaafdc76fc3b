"""Another clock's offset to this process's, NTP-style: a few round trips to something that reads it, the one with
the shortest round trip kept (the least queueing between the two readings): offset = t_other − (t_send +
t_receive) / 2, uncertainty = ± round trip / 2. PostgreSQL's clock (``experiments.measure.window.db_clock``) and
each cluster host's (``harness.cluster.placement.Placement.measure_clocks``) are measured with it."""

from __future__ import annotations

import time
from collections.abc import Callable

ROUNDS = 7


def offset(read_ns: Callable[[], int], rounds: int = ROUNDS) -> dict[str, float]:
    """``read_ns`` reads the other clock (ns since the epoch); its offset to this one, its uncertainty and the round
    trip kept (ns)."""
    best: tuple[int, int] | None = None  # (round trip, offset)
    for _ in range(max(1, rounds)):
        t0 = time.time_ns()
        t_other = read_ns()
        t1 = time.time_ns()
        if best is None or t1 - t0 < best[0]:
            best = (t1 - t0, t_other - (t0 + t1) // 2)
    assert best is not None
    return {"offset_ns": best[1], "uncertainty_ns": best[0] / 2, "rtt_ns": best[0]}
