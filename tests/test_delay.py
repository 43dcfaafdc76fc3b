"""The deliberate delays (``delay_<stage>_us``, ``delay_kind``): each adds its stated cost per call, measured per call
(CPU time for ``spin``, wall time for ``sleep``), is off and absent at 0, rejects bad values by name, and reaches
the stages that apply it."""

from __future__ import annotations

import asyncio
import time

import pytest
from pydantic import ValidationError

from harness.argv import plan_values
from harness.plan import PipelineConfig
from pipeline import delay
from pipeline.forwarders import FORWARDERS

CALLS, READINGS, US = 200, 10, 20.0  # 200 calls × 10 readings × 20 µs = 40 ms asked for


def test_spin_adds_its_cpu_time_per_call() -> None:
    d = delay.Delay(US, "spin")
    t = time.thread_time_ns()
    for _ in range(CALLS):
        d.block(READINGS)
    added = (time.thread_time_ns() - t) / 1e6
    assert d.added_ns / 1e6 == pytest.approx(40.0)
    assert 40.0 <= added <= 40.0 * 1.25 + 2.0, f"{added:.1f} ms of CPU for 40 ms asked"


def test_sleep_adds_its_wall_time_and_frees_the_cpu() -> None:
    d = delay.Delay(50.0, "sleep")  # 200 × 10 × 50 µs = 100 ms, slept in ≥ 1 ms quanta

    async def calls() -> None:
        for _ in range(CALLS):
            await d(READINGS)

    cpu, wall = time.process_time(), time.perf_counter()
    asyncio.run(calls())
    wall_ms, cpu_ms = (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3
    slept = 100.0 - d.debt_ns / 1e6  # what is still owed (< 1 ms) is not slept yet
    # an overshoot is paid back from the next sleeps, so only the last sleep's is still in the total: without the
    # payback, ~100 sleeps of 1 ms overshoot by ~16 ms here; the last one alone has reached 2.2 ms on a busy machine
    assert 99.0 <= slept <= 105.0
    assert 95.0 <= wall_ms <= 100.0 * 1.5 + 20.0, f"{wall_ms:.1f} ms of wall time for 100 ms asked"
    assert cpu_ms < 0.5 * wall_ms, f"sleeping used {cpu_ms:.1f} ms of CPU in {wall_ms:.1f} ms"


def test_the_forwarder_stage_adds_the_delay_before_each_send() -> None:
    """The shared forwarder path (``Forwarder.deliver``: every variant, the split forwarder and the node) adds
    n × delay_forwarder_us of CPU per batch with ``spin``; none without the knob."""
    fwd = FORWARDERS["none"]("http://127.0.0.1:9")
    fwd.delay = delay.make(US, "spin")
    batch = [tuple(range(5))] * READINGS  # the none forwarder counts and drops

    async def calls() -> None:
        for _ in range(CALLS):
            await fwd.deliver(batch)  # type: ignore[arg-type]

    t = time.thread_time_ns()
    asyncio.run(calls())
    added = (time.thread_time_ns() - t) / 1e6
    assert 40.0 <= added <= 40.0 * 1.5 + 15.0, f"{added:.1f} ms of CPU for 40 ms asked"


def test_off_is_absent_and_bad_values_are_named() -> None:
    assert delay.make(0.0, "spin") is None
    with pytest.raises(ValueError, match="delay_kind 'nap': valid kinds are sleep, spin"):
        delay.Delay(5.0, "nap")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="delay_writer_us"):
        PipelineConfig(delay_writer_us=-1.0)
    with pytest.raises(ValidationError, match="delay_kind"):
        PipelineConfig(delay_kind="nap")  # type: ignore[arg-type]


def test_each_delay_knob_reaches_the_stages_that_apply_it() -> None:
    c = PipelineConfig(
        delay_kind="sleep", delay_generator_us=1.0, delay_ingest_us=2.0, delay_queue_us=3.0, delay_writer_us=4.0,
        delay_forwarder_us=5.0, delay_backend_us=6.0, delay_node_us=7.0, forwarder="async",
    )  # fmt: skip
    where = {
        "generator": {"delay_generator_us": 1.0},
        "ingest": {"delay_ingest_us": 2.0, "delay_queue_us": 3.0},
        "writer": {"delay_writer_us": 4.0},
        "forwarder": {"delay_forwarder_us": 5.0},
        "backend": {"delay_backend_us": 6.0},
        "node": {"delay_ingest_us": 2.0, "delay_queue_us": 3.0, "delay_writer_us": 4.0, "delay_forwarder_us": 5.0,
                 "delay_node_us": 7.0},
    }  # fmt: skip
    for stage, want in where.items():
        got = {k: v for k, v in plan_values(c, stage).items() if k.startswith("delay_") and k != "delay_kind"}  # type: ignore[arg-type]
        assert got == want, stage
        assert plan_values(c, stage)["delay_kind"] == "sleep"  # type: ignore[arg-type]
