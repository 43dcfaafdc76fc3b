"""harness.clocks: another clock's offset, NTP-style (the shortest round trip kept)."""

from __future__ import annotations

import time

from harness import clocks


def test_a_known_offset_is_found_within_its_uncertainty_and_the_shortest_round_trip_is_kept() -> None:
    delays = iter([0.004, 0.0, 0.002])  # the second round trip is the shortest: its offset is the one kept

    def read_ns() -> int:
        time.sleep(next(delays))
        return time.time_ns() + 5_000_000_000  # 5 s ahead

    got = clocks.offset(read_ns, rounds=3)
    assert abs(got["offset_ns"] - 5_000_000_000) <= got["uncertainty_ns"] + 1_000
    assert got["rtt_ns"] < 2_000_000 and got["uncertainty_ns"] == got["rtt_ns"] / 2
