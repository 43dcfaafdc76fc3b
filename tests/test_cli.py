"""Bad input at the command line: one clear line naming the bad value and what is accepted, before anything runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from harness.plan import PipelineConfig


def _run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    ("flag", "value", "valid"),
    [
        ("--sink", "kopy", "insert, executemany, values, copy, copy_binary"),
        ("--decoder", "fast", "dict, direct"),
        ("--queue", "kafka", "jetstream, list, list_reliable, rabbitmq, stream"),
        ("--forwarder", "grpc", "sync, async, pubsub, none"),
    ],
)
def test_live_unknown_variant_fails_before_anything_starts(flag: str, value: str, valid: str) -> None:
    proc = _run("-m", "telemetry_bench.cli", "live", flag, value, "--count", "10")
    assert proc.returncode == 2
    assert f"'{value}'" in proc.stderr and valid in proc.stderr
    assert "Traceback" not in proc.stderr
    assert "generator" not in proc.stdout  # nothing was started, no endpoints printed


@pytest.mark.parametrize(
    ("module", "flag", "value", "valid"),
    [
        ("pipeline.writer", "--sink", "kopy", "valid sinks: insert, executemany"),
        ("pipeline.ingest", "--decoder", "fast", "valid decoders: dict, direct"),
        ("pipeline.node", "--queue", "kafka", "valid queues: jetstream, list, list_reliable, rabbitmq, stream"),
        ("pipeline.forwarder", "--forwarder", "grpc", "valid forwarders: sync, async, pubsub, none"),
        ("pipeline.writer", "--batch-size", "0", "greater than or equal to 1"),
        ("pipeline.generator", "--port", "70000", "less than or equal to 65535"),
    ],
)
def test_stage_bad_flag_is_one_clear_error(module: str, flag: str, value: str, valid: str) -> None:
    proc = _run("-m", module, flag, value)
    assert proc.returncode == 2
    assert f"{flag} = '{value}'" in proc.stderr and valid in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unreachable_dsn_is_one_line_not_a_traceback() -> None:
    proc = _run("-m", "pipeline.writer", "--pg-dsn", "postgresql://bench:s3cret@127.0.0.1:1/nowhere")
    assert proc.returncode == 1
    lines = [ln for ln in proc.stderr.splitlines() if "PostgreSQL" in ln]
    assert len(lines) == 1 and "unreachable" in lines[0]
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr


def test_live_unreachable_explicit_dsn() -> None:
    proc = _run(
        "-m", "telemetry_bench.cli", "live", "--pg-dsn", "postgresql://bench:s3cret@127.0.0.1:1/x", "--count", "5"
    )
    assert proc.returncode == 1
    assert "unreachable" in proc.stderr and "s3cret" not in proc.stderr and "Traceback" not in proc.stderr


def test_unknown_matrix_key_is_rejected_by_name() -> None:
    with pytest.raises(ValueError, match="batchsize"):
        PipelineConfig.model_validate({"batchsize": 10})


def test_live_runs_and_accounts(tmp_path: object) -> None:
    """The seed design at a small count: exit 0 and the accounting line."""
    proc = _run("-m", "telemetry_bench.cli", "live", "--count", "200", "--rate", "400", "--flush-interval", "0.5",
                timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "generated 200 · committed 200" in proc.stderr
    assert "every reading accounted for" in proc.stderr


def test_prometheus_yml_scrapes_every_live_metrics_port() -> None:
    """prometheus.yml (repository root) lists every fixed metrics port a live run may use."""
    import re

    from telemetry_bench.cli import LIVE_PORTS

    text = (Path(__file__).resolve().parents[1] / "prometheus.yml").read_text()
    scraped = {int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", text)}
    wanted = {port for name, port in LIVE_PORTS.items() if name.endswith("_metrics") or name == "backend"}
    assert wanted <= scraped, sorted(wanted - scraped)
