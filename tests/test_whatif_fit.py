"""The what-if sensitivity fit recovers known sensitivities from synthetic repeats (experiments/analysis/whatif.py):
a bottleneck at 1, a stage with slack at 0, a stage that binds only past its slack; the prediction and its cap."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from experiments.analysis import whatif
from experiments.analysis.whatif import BASELINE, Obs
from experiments.present.report import build_report
from experiments.results.model import Results, WhatIf, WhatIfPrediction, WhatIfRun

FIXTURES = Path(__file__).resolve().parent / "fixtures"

Y0 = 10_000.0  # undelayed throughput
AMOUNTS = (0.1, 0.25, 0.5, 0.75)
KNEE = 0.25


def truth(stage: str, x: float) -> float:
    """Throughput with ``stage`` slowed by x of its time: the writer binds, ingest has all the slack it needs, the
    queue has slack up to +25 % of its time and binds beyond."""
    if stage == "writer":
        return Y0 / (1 + x)
    if stage == "queue":
        return Y0 / (1 + max(0.0, x - KNEE))
    return Y0


def synthetic(seed: int = 1, noise: float = 0.01, repeats: int = 3, drift: float = 0.0) -> list[Obs]:
    """Interleaved, shuffled runs: each (stage, amount) ``repeats`` times, an undelayed repeat after every three."""
    rng = random.Random(seed)
    arms = [(st, x) for st in ("writer", "ingest", "queue") for x in AMOUNTS for _ in range(repeats)]
    rng.shuffle(arms)
    order: list[tuple[str, float]] = []
    for i, arm in enumerate(arms):
        if i % 3 == 0:
            order.append((BASELINE, 0.0))
        order.append(arm)
    order.append((BASELINE, 0.0))
    obs = []
    for i, (st, x) in enumerate(order):
        level = 1.0 + drift * i / len(order)  # a slow drift of the machine, shared by neighbours
        y = truth(st, x) * level * (1 + rng.gauss(0, noise))
        obs.append(Obs(st, x, y, i))
    return obs


def test_recovers_a_bottleneck_slack_and_a_stage_past_its_slack() -> None:
    fits = {f.stage: f for f in whatif.sensitivities(synthetic())}
    w, i, q = fits["writer"], fits["ingest"], fits["queue"]
    assert w.ci and w.ci[0] <= 1.0 <= w.ci[1] and w.lo is not None and w.lo > 0.8, w
    assert w.sensitive and w.knee is None
    assert i.ci and i.ci[0] <= 0.0 <= i.ci[1] and not i.sensitive, i
    assert i.headroom == pytest.approx(max(AMOUNTS))
    assert q.knee == pytest.approx(KNEE), q  # ≈ 0 up to +25 %, then it binds
    assert q.beyond is not None and q.beyond.ci and q.beyond.ci[0] <= 1.0 <= q.beyond.ci[1]
    assert q.ci and q.ci[0] <= 0.0 <= q.ci[1] and not q.sensitive
    assert q.headroom == pytest.approx(KNEE)
    ranked = [f.stage for f in whatif.sensitivities(synthetic())]
    assert ranked[0] == "writer"
    assert "≈ 0 up to +25 %" in q.text()


@pytest.mark.parametrize("seed", range(5))
def test_recovery_holds_over_seeds_and_a_drifting_machine(seed: int) -> None:
    """Pairing each repeat with its undelayed neighbours absorbs a 10 % drift over the run."""
    fits = {f.stage: f for f in whatif.sensitivities(synthetic(seed, drift=0.10))}
    assert fits["writer"].ci and fits["writer"].ci[0] <= 1.0 <= fits["writer"].ci[1]
    assert fits["ingest"].ci and fits["ingest"].ci[0] <= 0.0 <= fits["ingest"].ci[1]


def test_intervals_hold_the_true_sensitivity_about_95_percent_of_the_time() -> None:
    """Calibration over 200 synthetic runs: the bottleneck's interval holds 1, the slack stage's holds 0."""
    held = {"writer": 0, "ingest": 0}
    for seed in range(200):
        fits = {f.stage: f for f in whatif.sensitivities(synthetic(seed))}
        for stage, true in (("writer", 1.0), ("ingest", 0.0)):
            ci = fits[stage].ci
            held[stage] += bool(ci and ci[0] <= true <= ci[1])
    assert held["writer"] >= 180 and held["ingest"] >= 180, held


def test_prediction_interval_and_cap_where_the_next_stage_binds() -> None:
    fits = whatif.sensitivities(synthetic())
    p = whatif.predict(fits, "writer", 0.1)
    # s ≈ 1: 10 % less writer time → about 11 % more throughput; the queue's slack (+25 %) does not bind yet
    assert p.gain == pytest.approx(0.1 / 0.9, rel=0.15)
    assert p.lo is not None and p.hi is not None and p.lo <= p.gain <= p.hi
    assert not p.capped and p.capped_by == "queue" and p.cap == pytest.approx(KNEE)
    big = whatif.predict(fits, "writer", 0.5)  # would double throughput, but the queue binds at +25 %
    assert big.capped and big.gain == pytest.approx(KNEE) and big.capped_by == "queue"
    assert big.hi is not None and big.hi <= KNEE
    # a stage ceiling measured alone caps too
    c = whatif.predict(fits, "writer", 0.1, ceilings={"ingest": 10_500.0}, throughput=Y0)
    assert c.capped and c.capped_by == "ceiling:ingest" and c.gain == pytest.approx(0.05)
    none = whatif.predict(fits, "ingest", 0.2)
    assert none.lo is not None and none.hi is not None and none.lo <= 0.0 <= none.hi


def test_sentence_names_the_bottleneck_and_the_stage_that_would_not_matter() -> None:
    text = whatif.sentence(whatif.sensitivities(synthetic()), 0.2)
    assert text.startswith("speeding up the writer's database write by 20 % would raise throughput by about")
    assert "speeding up ingest's decode would not change it (sensitivity" in text


def test_a_pace_shared_by_stages_whose_intervals_overlap_is_said() -> None:
    """The full job on 2 cores: writer 0.32 [0.19, 0.44], ingest 0.24 [0.12, 0.36], forwarder 0.24 [0.11, 0.36] —
    the data cannot rank them, so the sentence does not crown the writer alone; a stage clearly below is left out."""

    def fit(stage: str, s: float, lo: float, hi: float) -> whatif.Sensitivity:
        return whatif.Sensitivity(stage, s, lo, hi, whatif.Line(s, lo, hi, 0.0, 0.0, 6), n=6, max_x=0.5)

    fits = [fit("writer", 0.32, 0.19, 0.44), fit("ingest", 0.24, 0.12, 0.36), fit("forwarder", 0.24, 0.11, 0.36),
            fit("backend", 0.09, -0.03, 0.21)]  # fmt: skip
    assert [f.stage for f in whatif.shared_pace(fits)] == ["ingest", "forwarder"]
    text = whatif.sentence(fits, 0.2)
    assert text.startswith("the writer's database write (0.32 [0.19, 0.44]) shares the pace with ingest's decode")
    assert "no one of them is the bottleneck alone; speeding up the writer's database write by 20 %" in text
    alone = [fit("writer", 0.81, 0.75, 0.86), fit("ingest", 0.09, 0.04, 0.14)]  # sensitive, but clearly below
    assert whatif.shared_pace(alone) == [] and whatif.sentence(alone, 0.2).startswith("speeding up the writer's")


def test_latency_fit_for_an_open_loop_cell() -> None:
    """p99 at a fixed offered rate: the response is y / ref − 1 (p99 grows with the delay of the stage that binds)."""
    rng = random.Random(3)
    obs, i = [], 0
    for _ in range(4):
        for st, x in [(BASELINE, 0.0), ("writer", 0.25), ("writer", 0.5), ("ingest", 0.25), ("ingest", 0.5)]:
            p99 = 100.0 * (1 + 2 * x if st == "writer" else 1) * (1 + rng.gauss(0, 0.01))
            obs.append(Obs(st, x, p99, i))
            i += 1
    obs.append(Obs(BASELINE, 0.0, 100.0, i))
    fits = {f.stage: f for f in whatif.sensitivities(obs, "p99")}
    assert fits["writer"].ci and fits["writer"].ci[0] <= 2.0 <= fits["writer"].ci[1]
    assert not fits["ingest"].sensitive
    p = whatif.predict(list(fits.values()), "writer", 0.1, metric="p99")
    assert p.gain == pytest.approx(-0.2, abs=0.05) and p.cap is None


def test_bad_input_is_named() -> None:
    with pytest.raises(ValueError, match="no undelayed repeat"):
        whatif.sensitivities([Obs("writer", 0.1, 1.0, 0)])
    with pytest.raises(ValueError, match="0 < k < 1"):
        whatif.predict(whatif.sensitivities(synthetic()), "writer", 1.5)
    with pytest.raises(ValueError, match="no fit for stage 'x'"):
        whatif.predict(whatif.sensitivities(synthetic()), "x", 0.1)


def _record(res: Results, cid: str) -> WhatIf:
    """A what-if record of a fixture cell from the synthetic repeats (writer binds, ingest slack, queue past slack),
    with a real variant that measured +20 % [+15 %, +25 %] while saving 20 % of the writer's time."""
    obs = synthetic()
    w = WhatIf(cell=cid, metric="throughput", seed=1, fractions=list(AMOUNTS), planned_s=600.0, took_s=590.0,
               stage_time_us={"writer": 4.0, "ingest": 2.0, "queue": 0.5}, static_verdict="none found")  # fmt: skip
    w.runs = [WhatIfRun(order=o.order, stage=o.stage, fraction=o.x, delay_us=o.x * 4.0, throughput_rps=o.y,
                        p99_ms=None, ok=True) for o in obs]  # fmt: skip
    w.predictions = [WhatIfPrediction(stage="writer", variant={"sink": "copy_binary"}, k=0.2, predicted=None,
                                      predicted_ci95=None, measured=0.2, measured_ci95=[0.15, 0.25])]  # fmt: skip
    cell = res.cell(cid)
    assert cell is not None
    return whatif.analyse(w, cell.params, cell.repeats)


def test_the_verdict_comes_from_the_experiment_and_says_where_the_static_rules_disagree() -> None:
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    w = _record(res, "baseline")
    assert w.bottleneck == "writer" and w.what_binds is None
    assert w.agreement is not None and "they disagree: the static rules said none found" in w.agreement
    p = w.predictions[0]
    assert p.predicted == pytest.approx(0.25, rel=0.15) and p.predicted_ci95 and p.agree is True, p
    b = whatif.bottleneck(w, None)
    assert b.stage == "writer" and "sensitivity" in b.reason and b.evidence["by"] == "experiment"
    # no stage sensitive: what binds instead, never "none found"
    flat = w.model_copy(deep=True)
    for r in flat.runs:
        r.throughput_rps = Y0 * (1 + 0.01 * ((r.order * 7919) % 13 - 6) / 6)
    flat = whatif.analyse(flat, res.cell("baseline").params, res.cell("baseline").repeats)  # type: ignore[union-attr]
    assert flat.bottleneck == "none" and flat.what_binds
    nb = whatif.bottleneck(flat, None)
    assert nb.stage in ("queue cap", "in-flight bound") and "none found" not in nb.stage
    assert flat.agreement and "the experiment agrees no stage is sensitive" in flat.agreement
    # so noisy that no stage can be ruled out: it says so, and what would settle it
    noisy = w.model_copy(deep=True)
    for r in noisy.runs:
        r.throughput_rps = Y0 * (1 + 0.4 * ((r.order * 7919) % 13 - 6) / 6)
    noisy = whatif.analyse(noisy, res.cell("baseline").params, res.cell("baseline").repeats)  # type: ignore[union-attr]
    assert noisy.bottleneck == "cannot tell" and noisy.what_binds and "more repeats" in noisy.what_binds
    assert noisy.sentence and noisy.sentence.startswith("cannot tell yet which stage sets the pace")
    assert whatif.bottleneck(noisy, None).stage == "cannot tell"


def test_report_shows_the_plot_the_ranking_the_prediction_and_the_sentence(tmp_path: Path) -> None:
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    res.cells = [c for c in res.cells if c.id in ("seed", "baseline")]  # a smaller page, built sooner
    res.whatif["baseline"] = _record(res, "baseline")
    run = tmp_path / "reports" / res.run_id
    run.mkdir(parents=True)
    res.write(run / "results.json")
    html = build_report(run, root=tmp_path).read_text()
    section = html[html.index('id="whatif-baseline"') :]
    section = section[: section.index("What-if for this cell")]
    assert "bottleneck by experiment <b>writer</b>" in section
    assert "Speeding up the writer&#39;s database write by 20 % would raise throughput by about" in section
    assert section.count('<img src="data:image/png;base64,') == 1
    assert section.index("<td>writer") < section.index("<td>queue") and "slack up to +25 %, then binds" in section
    assert "sink = copy_binary" in section and "intervals overlap" in section
    # every cell, what-if or not, says how to run its what-if
    assert html.count("telemetry-bench whatif --matrix default --cell ") == len(res.cells)
