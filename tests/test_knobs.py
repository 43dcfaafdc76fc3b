"""The knob catalogue (``pipeline/knobs.py``) is the one definition: the stages' settings, the run plan and the
command line the harness passes are derived from it, and a field declared elsewhere is refused at import."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import argv
from harness.plan import SEED, PipelineConfig
from pipeline import knobs
from pipeline.config import SETTINGS, WriterSettings, _Settings
from pipeline.knobs import KNOBS, knob


def test_the_run_plan_is_exactly_the_plan_knobs_with_their_run_defaults() -> None:
    assert set(PipelineConfig.model_fields) == {k.name for k in knobs.plan_knobs()}
    plan = PipelineConfig()
    for k in knobs.plan_knobs():
        assert getattr(plan, k.name) == k.run_default, k.name
        assert PipelineConfig.model_fields[k.name].description == k.help
    # where the run's default differs from a stage's own, the catalogue says why
    for k in knobs.plan_knobs():
        if k.plan is not None and k.run_default != k.default:
            assert k.plan.why, f"{k.name}: run default {k.run_default!r} ≠ stage default {k.default!r} without a why"


def test_every_stage_holds_exactly_its_knobs_with_the_catalogue_defaults() -> None:
    for stage, cls in SETTINGS.items():
        assert set(cls.model_fields) == {k.name for k in knobs.knobs_for(stage)}
        for name, info in cls.model_fields.items():
            assert info.default == KNOBS[name].default_for(stage), (stage, name)
            assert info.description == KNOBS[name].help


def test_batch_size_is_defined_once() -> None:
    k = KNOBS["batch_size"]
    assert (WriterSettings().batch_size, PipelineConfig().batch_size) == (k.default, k.run_default) == (20, 1000)
    assert WriterSettings.model_fields["batch_size"].metadata == PipelineConfig.model_fields["batch_size"].metadata


def test_a_field_not_in_the_catalogue_is_refused() -> None:
    with pytest.raises(TypeError, match=r"not declared in pipeline/knobs\.py"):

        class _Undeclared(_Settings):
            batch_siez: int = 3

    with pytest.raises(TypeError, match="declares"):

        class _WrongType(_Settings):
            batch_size: float = knob("batch_size")


@pytest.mark.parametrize(
    "plan",
    [
        PipelineConfig(),
        SEED,
        PipelineConfig(forward_from="writer", workers=2, queue_cap=7, dedupe=True, max_rate=True, histograms=False),
        PipelineConfig(forwarder="none", rpc="seed", rate=300, duration=2.5, count=10, sensors=9, seed=4),
    ],
    ids=["default", "seed", "writer-forwards", "no-forwarding"],
)
def test_each_stage_reads_back_the_plan_the_harness_passes(plan: PipelineConfig, monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:  # fmt: skip
    """argv → the stage's own settings class gives the plan's value of every plan knob passed to it."""
    monkeypatch.chdir(tmp_path)  # no .env
    stages: list[knobs.Stage] = ["generator", "backend"]
    stages += ["node"] if plan.topology == "node" else ["ingest", "writer", "forwarder"]
    for stage in stages:
        values = argv.plan_values(plan, stage)
        settings = SETTINGS[stage].from_cli(argv.stage_argv(plan, stage, {}))
        for name, v in values.items():
            assert getattr(settings, name) == v, (stage, name)
        want = {k.name for k in knobs.plan_knobs() if stage in k.passed_to} - {"forward_from"}
        assert set(values) - {"forward_from"} == want
    assert argv.plan_values(plan, "writer").get("queue_cap") == plan.effective_queue_cap
    fwd = {s: argv.plan_values(plan, s).get("forward_from") for s in ("ingest", "writer")}
    expected = plan.forward_from if plan.forwarding and plan.topology == "split" else None
    assert fwd[plan.forward_from] == expected and fwd["writer" if plan.forward_from == "ingest" else "ingest"] is None


def test_wiring_must_be_a_knob_of_the_stage() -> None:
    with pytest.raises(ValueError, match="'consumer' is not a knob of the ingest stage"):
        argv.stage_argv(PipelineConfig(), "ingest", {"consumer": "x"})


def test_env_and_dotenv_still_set_a_stage_knob(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("TELEMETRY_BATCH_SIZE=77\n")
    assert WriterSettings.from_cli([]).batch_size == 77
    monkeypatch.setenv(KNOBS["batch_size"].env, "88")
    assert WriterSettings.from_cli([]).batch_size == 88
    assert WriterSettings.from_cli(["--batch-size", "99"]).batch_size == 99  # flags win


def test_several_generators_share_the_run_s_sensors_rate_and_count_exactly() -> None:

    cfg = PipelineConfig(topology="split", sensors=23, rate=2300.0, count=10_001, generators=3)
    assert cfg.streams() == [("generator", "ingest"), ("generator-2", "ingest-2"), ("generator-3", "ingest-3")]
    shares = [cfg.stream_share(g) for g in range(3)]
    assert [s["sensor_offset"] for s in shares] == [0, 7, 15] and [s["sensors"] for s in shares] == [7, 8, 8]
    assert [s["rate"] for s in shares] == [700.0, 800.0, 800.0]  # the same rate per sensor
    assert sum(s["count"] for s in shares) == 10_001
    assert PipelineConfig(sensors=5).stream_share(0) == {"sensor_offset": 0, "sensors": 5, "rate": 0.0, "count": 0}
    with pytest.raises(ValueError, match="generators = 2: several generators need topology 'split'"):
        PipelineConfig(topology="node", generators=2)
    with pytest.raises(ValueError, match="generators = 6 > sensors = 5: each generator simulates at least one"):
        PipelineConfig(topology="split", sensors=5, generators=6)


def test_generators_with_offsets_simulate_exactly_the_sensors_of_one() -> None:
    from pipeline.sensors import make_sensors

    whole = make_sensors(12, seed=3)
    parts = make_sensors(5, seed=3) + make_sensors(7, seed=3, offset=5)
    assert [s.sensor_id for s in parts] == [s.sensor_id for s in whole]
    assert [s.rng.random() for s in parts] == [s.rng.random() for s in whole]
