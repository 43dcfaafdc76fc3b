"""The cluster's command-line and matrix checks, which need no cluster and no Ray: bad placements fail before
anything starts, naming the bad value and what would be accepted; a matrix that places stages needs --cluster."""

from __future__ import annotations

from pathlib import Path

import pytest

from experiments.plan.matrix import MatrixError, load
from telemetry_bench.cli import main


def _said(capsys: pytest.CaptureFixture[str]) -> str:
    """What the command printed (the console writes to stderr and wraps long lines), as one line."""
    got = capsys.readouterr()
    return " ".join((got.out + got.err).split())


def test_run_of_a_placing_matrix_needs_a_cluster(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--matrix", "cluster"]) == 2
    assert "places stages on hosts ([placement]): pass --cluster ADDRESS" in _said(capsys)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--place", "writers=b", "--cluster", "127.0.0.2:1"], "'writers': not a stage kind; valid: generator"),
        (["--place", "writer", "--cluster", "127.0.0.2:1"], "expected KIND=HOST[,HOST]"),
        (["--place", "writer=b"], "--place needs --cluster ADDRESS"),
    ],
)
def test_live_rejects_bad_placements(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["live", *args]) == 2
    assert message in _said(capsys)


def test_matrix_placement_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\n[placement]\nwriter = []\n[cells.one]\nrate = 100\n')
    with pytest.raises(MatrixError, match=r"\[placement\] writer = \[\]: must be a non-empty list of host names"):
        load(str(bad))
    assert load("cluster").placement == {"generator": ["a", "c"], "ingest": ["b", "a"], "writer": ["b", "c"]}
