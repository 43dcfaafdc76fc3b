"""The capacity search on stages with a known limit: it must find the limit (or the SLO's rate) within tolerance."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from experiments.run.capacity import KEEP_UP, Probe, find_capacity


def queueing_stage(limit: float, service_ms: float = 2.0):  # type: ignore[no-untyped-def]
    """A single-server stage with capacity ``limit``/s: p99 grows as ρ/(1−ρ) below it; above it the queue grows,
    the pipeline commits only ``limit``/s and p99 runs away."""

    async def probe(rate: float) -> Probe:
        rho = rate / limit
        if rho >= 1:
            return Probe(rate, achieved=limit, p99_ms=60_000.0, queue_grew=True)
        return Probe(rate, achieved=rate, p99_ms=service_ms * (1 + 4.6 * rho / (1 - rho)))

    return probe


async def test_finds_a_throughput_limit() -> None:
    """Latency stays low until close to the limit: the answer is within tolerance of the limit (here the 1 s SLO is
    crossed at ρ ≈ 0.991, just below it: the known answer is that crossing)."""
    limit = 37_000.0
    k = (1000.0 / 2.0 - 1) / 4.6
    expected = limit * k / (1 + k)
    cap = await find_capacity(queueing_stage(limit), start=5_000.0, slo_ms=1000.0, tolerance=0.05, max_probes=12)
    assert cap.rps is not None and cap.upper is not None
    assert cap.rps <= expected <= cap.upper and expected / limit > 0.99
    assert cap.upper / cap.rps - 1 <= 0.05
    assert "within 5%" in cap.stop_reason
    assert cap.p99_ms is not None and cap.p99_ms <= 1000.0


async def test_the_slo_binds_before_the_limit() -> None:
    """With a tight SLO the answer is where p99 crosses it: ρ/(1−ρ) = (slo/service − 1)/4.6."""
    limit, service, slo = 10_000.0, 2.0, 50.0
    k = (slo / service - 1) / 4.6
    expected = limit * k / (1 + k)  # p99 == slo here
    cap = await find_capacity(queueing_stage(limit, service), start=1_000.0, slo_ms=slo, tolerance=0.02, max_probes=16)
    assert cap.rps is not None and cap.upper is not None
    assert cap.rps <= expected <= cap.upper
    assert cap.p99_ms is not None and cap.p99_ms <= slo
    failed = [p for p in cap.probes if p.failures(slo)]
    assert failed and all("SLO" in "; ".join(p.failures(slo)) for p in failed if p.rate < limit)


async def test_shrinks_when_the_start_is_too_high_and_records_every_probe() -> None:
    cap = await find_capacity(queueing_stage(800.0), start=100_000.0, tolerance=0.1)
    assert cap.rps is not None and cap.rps < 800.0 <= (cap.upper or 0)
    d = cap.as_dict()
    assert d["slo_ms"] == 1000.0 and len(d["probes"]) == len(cap.probes)  # type: ignore[arg-type]
    assert d["probes"][0]["sustained"] is False and "queue grew" in d["probes"][0]["why_not"]  # type: ignore[index]


async def test_nothing_sustained_is_said_not_hidden() -> None:
    async def never(rate: float) -> Probe:
        return Probe(rate, achieved=rate * KEEP_UP / 2, p99_ms=10.0)

    cap = await find_capacity(never, start=100.0, min_rate=10.0)
    assert cap.rps is None and cap.p99_ms is None
    assert "not sustained even at" in cap.stop_reason


async def test_budget_spent_while_everything_holds() -> None:
    async def always(rate: float) -> Probe:
        return Probe(rate, achieved=rate, p99_ms=1.0)

    cap = await find_capacity(always, start=100.0, max_probes=4)
    assert cap.rps == 800.0 and cap.upper is None and "at least" in cap.stop_reason


@pytest.mark.parametrize("bad", [0.0, -5.0, float("nan")])
async def test_bad_start_is_refused_with_what_is_accepted(bad: float) -> None:
    with pytest.raises(ValueError, match="must be a positive number"):
        await find_capacity(queueing_stage(100.0), start=bad)


def test_unsent_and_empty_windows_fail() -> None:
    assert Probe(100.0, achieved=100.0, p99_ms=5.0, unsent=3).failures(1000) == ["3 readings unsent"]
    assert Probe(100.0, achieved=100.0, p99_ms=None).failures(1000) == ["no reading committed in the window"]


async def test_a_capacity_search_asks_the_run_context_for_probe_repeats(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``capacity_runs`` needs the run's ``RunContext``, no runner: each probe is a ``Repeat`` of kind
    ``capacity`` (index = the probe's number, logs under ``capacity-<n>``) at the offered rate, open loop, without
    the cell's fault; the answer lands in the cell's summary and results.json."""
    from rich.console import Console

    from experiments.plan.matrix import load
    from experiments.results.model import Latency, Repeat, Results
    from experiments.run import capacity_runs, context
    from harness.services import Services
    from tests.test_report import FIXTURES

    (tmp_path / "m.toml").write_text(
        'name = "cap"\nrepeats = 1\ncapacity_cells = ["baseline"]\nslo_ms = 1000\n'
        '[base]\nmax_rate = true\n[cells.baseline]\ntitle = "b"\nbatch_size = 1000\n'
    )
    m = load(str(tmp_path / "m.toml"))
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())  # baseline: 121,000/s measured
    template = res.cells[3].repeats[0]
    limit, calls = 150_000.0, []

    async def fake_repeat(cell: Any, m: Any, services: Any, workdir: Path, *, kind: str, index: int,
                          **k: Any) -> Repeat:  # fmt: skip
        rate = cell.params.rate
        calls.append((kind, index, workdir.name, rate, cell.params.max_rate, cell.fault))
        rho = rate / limit
        p99 = 60_000.0 if rho >= 1 else 2.0 * (1 + 4.6 * rho / (1 - rho))
        return template.model_copy(update={"kind": kind, "index": index, "throughput_rps": min(rate, limit),
                                           "latency_ms": Latency(p99=p99), "bottleneck": None})  # fmt: skip

    monkeypatch.setattr(context, "run_repeat", fake_repeat)
    services = Services("postgresql://x@127.0.0.1/x", "redis://127.0.0.1:6379/0", "given", "given")
    ctx = context.RunContext.for_run("r1", m, services, res, tmp_path / "reports", tmp_path / "profiles",
                                     Console(quiet=True))  # fmt: skip
    ctx.dir.mkdir(parents=True)
    await capacity_runs.capacities(ctx)
    assert calls and [c[:3] for c in calls] == [("capacity", i, f"capacity-{i + 1}") for i in range(len(calls))]
    assert all(max_rate is False and fault is None for *_, max_rate, fault in calls)
    assert calls[0][3] == pytest.approx(0.5 * 121_000, rel=1e-3)  # from half the measured throughput
    summary = Results.model_validate_json(ctx.results_path.read_text()).cell("baseline").summary  # type: ignore[union-attr]
    assert summary is not None and summary.capacity is not None
    assert summary.capacity["rps"] is not None and summary.capacity["rps"] < limit
    assert [p["rate"] for p in summary.capacity["probes"]] == pytest.approx([c[3] for c in calls], abs=0.05)
