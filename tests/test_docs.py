"""Docs that stay true: the generated results schema matches the models, and the README stays a first screen."""

from __future__ import annotations

from pathlib import Path

from experiments.present import schema_doc

ROOT = Path(__file__).resolve().parent.parent


def test_results_schema_doc_is_generated_and_current() -> None:
    committed = schema_doc.DOC.read_text() if schema_doc.DOC.exists() else ""
    assert committed == schema_doc.render(), "docs/results-schema.md is stale: run `telemetry-bench docs`"


def test_schema_doc_reads_each_fields_comment() -> None:
    text = schema_doc.render()
    assert "| `throughput_rps` | `float \\| None` | `required` | median over the counted repeats |" in text
    # a comment written on the lines above a field describes that field, not the one before it
    assert "| `excluded` | `bool` | `False` | a sampled repeat left out of its cell's figures" in text


def test_readme_is_a_first_screen() -> None:
    lines = (ROOT / "README.md").read_text().splitlines()
    assert len(lines) <= 120, f"README.md has {len(lines)} lines: details belong in docs/"
    for command in ("nox -s bench", "nox -s tests"):
        assert any(command in line for line in lines[:40]), f"{command} is not on README.md's first screen"
