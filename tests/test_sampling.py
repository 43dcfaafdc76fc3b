"""Sampling profiles: py-spy on a deliberately busy stage finds the function known to dominate it; the views
(speedscope, SVG flame graph, top functions) and the diff are built from the samples."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from experiments import sampling

BUSY = textwrap.dedent(
    """
    import time

    def dominating_busy_function():
        s = 0
        for i in range(300_000):
            s += i * i
        return s

    def waits():
        time.sleep(0.005)

    print("ready", flush=True)
    t = time.time()
    while time.time() - t < 30:
        dominating_busy_function()
        waits()
    """
)


@pytest.mark.skipif(sampling.py_spy() is None, reason="py-spy is not installed")
def test_busy_stage_profile(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", BUSY], stdout=subprocess.PIPE)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        sampler = sampling.Sampler({"busy": proc.pid}, tmp_path, rate_hz=200)
        sampler.start()
        time.sleep(2.0)
        files = sampler.stop()
    finally:
        proc.kill()
        proc.wait()
    assert sampler.problem is None, sampler.problem
    stacks = sampling.read_collapsed(files["busy"])
    assert sum(stacks.values()) > 100
    hottest = sampling.top_self(stacks, n=3, busy_only=True)
    assert hottest[0].function == "dominating_busy_function" and not hottest[0].idle
    assert 0.0 < sampling.idle_share(stacks) < 0.5  # the sleeps are there, and told apart
    views = sampling.write_views(files["busy"], "busy stage")
    svg = views["svg"].read_text()
    assert svg.startswith("<svg") and "dominating_busy_function" in svg
    scope = json.loads(views["speedscope"].read_text())
    names = {f["name"] for f in scope["shared"]["frames"]}
    assert any("dominating_busy_function" in n for n in names)
    assert sum(scope["profiles"][0]["weights"]) == sum(stacks.values())


def test_idle_is_told_from_busy() -> None:
    assert sampling.is_idle("<module> (x.py);run (asyncio/base_events.py);0x7f (libc.so.6);epoll_wait (libc.so.6)")
    assert sampling.is_idle("main (x.py);time_sleep (libpython3.11.so);clock_nanosleep (libc.so.6)")
    assert not sampling.is_idle("main (x.py);decode (pipeline/decoders/direct.py)")


def test_diff_ranks_the_functions_whose_share_changed() -> None:
    a = sampling.Stacks({"main (m.py);decode (d.py)": 50, "main (m.py);write (w.py)": 50})
    b = sampling.Stacks({"main (m.py);decode (d.py)": 80, "main (m.py);write (w.py)": 20})
    changes = sampling.diff(a, b, n=2)
    assert {c.function for c in changes} == {"decode", "write"}
    by = {c.function: c.delta for c in changes}
    assert by["decode"] == pytest.approx(0.3) and by["write"] == pytest.approx(-0.3)
