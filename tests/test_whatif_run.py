"""The what-if experiment (experiments/run/whatif_runs.py): its run order, its plan, the command's bad input, and a
what-if of a tiny cell end to end (two stages × one amount, one-second windows) on the real services."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import uuid
from pathlib import Path

import pytest

from experiments.analysis.whatif import BASELINE, VARIANT
from experiments.plan.matrix import load
from experiments.results.model import Results
from experiments.run import whatif_runs
from harness.lifeline import drop_keys
from harness.plan import PipelineConfig
from harness.services import Services
from telemetry_bench.cli import main

KNOBS = all(whatif_runs.knob(s) in PipelineConfig.model_fields for s in ("ingest", "writer"))
needs_knobs = pytest.mark.skipif(not KNOBS, reason="the delay knobs (delay_<stage>_us) are not in pipeline/knobs.py")

TINY = """name = "tiny"
repeats = 1
ci_target = 0
warmup_s = 0.3
measure_s = 1.0
tail_s = 0.2
min_commits = 0
[base]
topology = "split"
max_rate = true
readings_per_message = 100
sink = "copy_binary"
batch_size = 500
sensors = 20
forwarder = "none"
[cells.tiny]
"""


def test_schedule_is_seeded_interleaved_and_complete() -> None:
    fast = [whatif_runs.Variant("writer", {"sink": "copy_binary"})]
    order = whatif_runs.schedule(["ingest", "writer"], (0.1, 0.5), 2, seed=3, variants=fast)
    arms = [a for a in order if a[0] != BASELINE]
    assert sorted(arms) == sorted([(s, f) for s in ("ingest", "writer") for f in (0.1, 0.5) for _ in range(2)]
                                  + [(f"{VARIANT}:sink=copy_binary", 0.0)] * whatif_runs.VARIANT_REPEATS)  # fmt: skip
    assert order[-1] == (BASELINE, 0.0)
    # never more than BASELINE_EVERY delayed repeats without an undelayed one
    run = 0
    for stage, _ in order:
        run = 0 if stage == BASELINE else run + 1
        assert run <= whatif_runs.BASELINE_EVERY
    assert order == whatif_runs.schedule(["ingest", "writer"], (0.1, 0.5), 2, seed=3, variants=fast)
    assert order != whatif_runs.schedule(["ingest", "writer"], (0.1, 0.5), 2, seed=4, variants=fast)


def test_faster_variants_and_stages_of_a_cell() -> None:
    v = whatif_runs.Variant
    base = PipelineConfig(sink="copy_binary", decoder="direct", forwarder="none", topology="split", workers=1)
    assert whatif_runs.faster_variants(base) == [v("writer", {"workers": 2})]
    assert whatif_runs.faster_variants(base.model_copy(update={"sink": "copy"})) == [
        v("writer", {"sink": "copy_binary"})
    ]
    seed = base.model_copy(update={"sink": "copy", "decoder": "dict", "forwarder": "sync", "topology": "node"})
    assert whatif_runs.faster_variants(seed) == [v("writer", {"sink": "copy_binary"}), v("node", {"decoder": "direct"}),
                                                 v("node", {"forwarder": "async"})]  # fmt: skip
    if KNOBS:
        split = base.model_copy(update={"topology": "split", "forwarder": "none"})
        assert whatif_runs.stages_of(split)[:4] == ["generator", "ingest", "queue", "writer"]


def test_perf_matrix_plan_says_its_duration_before_anything_runs(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["whatif", "--matrix", "perf", "--cell", "histograms-on", "--dry-run"])
    got = capsys.readouterr()
    if not KNOBS:
        assert code == 2 and "no stage of this cell has a delay knob" in got.err
        return
    assert code == 0, got.err
    assert "what-if histograms-on:" in got.out and "repeats of ≈" in got.out and "about" in got.out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--cell", "nope"], "no cell 'nope' in matrix 'perf'; cells: seed, histograms-on"),
        (["--cell", "seed", "--fractions", "0.1,x"], "--fractions '0.1,x': comma-separated numbers"),
        (["--cell", "seed", "--repeats", "0"], "--repeats 0: must be ≥ 1"),
        (["--cell", "half-rate"], "takes its rate from 'group:best' (rate_of)"),
    ],
)
def test_bad_input_is_named_before_anything_runs(args: list[str], needle: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    code = main(["whatif", "--matrix", "perf", *args])
    err = capsys.readouterr().err
    assert code == 2 and needle in err, err


@needs_knobs
def test_tiny_cell_whatif_end_to_end(tmp_path: Path, services: Services) -> None:
    """Two stages × one amount (+50 % of each stage's time), one repeat each, between undelayed repeats: every
    repeat accounted for, each stage fitted, the verdict and the report from the experiment."""
    from rich.console import Console

    from experiments.run.runner import Runner

    toml = tmp_path / "tiny.toml"
    toml.write_text(TINY)
    m = load(str(toml))
    out = io.StringIO()
    runner = Runner(m, dataclasses.replace(services), profile="none", out=tmp_path / "reports",
                    profiles=tmp_path / "profiles", console=Console(file=out, width=200))  # fmt: skip
    runner.ctx.queue_key = f"test:{uuid.uuid4().hex[:8]}:queue"
    [cell] = m.cells
    try:
        w, _ = asyncio.run(whatif_runs.standalone(runner.ctx, cell, stages=["ingest", "writer"], fractions=(0.5,),
                                               repeats=1, variant=False))  # fmt: skip
    finally:
        drop_keys(services.redis_url, runner.ctx.queue_key)
    text = out.getvalue()
    assert "what-if tiny: 2 undelayed pilots, then 2 stages (ingest, writer)" in text and "about" in text
    assert all(r.ok for r in w.runs), [r.failures for r in w.runs]
    assert [r.stage for r in w.runs].count(BASELINE) == 3 and len(w.runs) == 5
    assert set(w.stage_time_us) == {"ingest", "writer"} and all(t > 0 for t in w.stage_time_us.values())
    for r in w.runs:
        if r.stage != BASELINE:
            assert r.delay_us == pytest.approx(0.5 * w.stage_time_us[r.stage])
    assert {f.stage for f in w.fits} == {"ingest", "writer"} and w.took_s and w.planned_s > 0
    assert w.bottleneck and w.bottleneck != "none found" and w.agreement
    results = Results.model_validate_json((runner.dir / "results.json").read_text())
    assert results.whatif["tiny"].runs == w.runs
    cr = results.cell("tiny")
    assert cr is not None and cr.summary is not None and cr.summary.bottleneck is not None
    assert cr.summary.bottleneck.evidence.get("by") == "experiment" and len(cr.repeats) == 3
    html = (runner.dir / "index.html").read_text()
    assert 'id="whatif-tiny"' in html and "telemetry-bench whatif --matrix tiny --cell tiny" in html


def test_matrix_key_whatif_cells_names_known_cells(tmp_path: Path) -> None:
    from experiments.plan.matrix import MatrixError

    good = tmp_path / "good.toml"
    good.write_text(TINY.replace('name = "tiny"', 'name = "tiny"\nwhatif_cells = ["tiny"]'))
    m = load(str(good))
    assert m.whatif_cells == ["tiny"] and m.as_dict()["whatif_cells"] == ["tiny"]
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY.replace('name = "tiny"', 'name = "tiny"\nwhatif_cells = ["nope"]'))
    with pytest.raises(MatrixError, match=r"whatif_cells: unknown cell.*'nope'; cells: tiny"):
        load(str(bad))
