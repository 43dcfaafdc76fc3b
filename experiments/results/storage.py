"""Where runs live and how they are read: ``reports/<run-id>/results.json`` (one place for the CLI, the report,
the index and ``compare``)."""

from __future__ import annotations

from pathlib import Path

from experiments.results.model import Results

ROOT = Path(__file__).resolve().parents[2]  # the repository (the one place that says so)
REPORTS = ROOT / "reports"
RESULTS = "results.json"


def load(run_dir: Path) -> Results:
    """A run's results (validated against the schema)."""
    return Results.model_validate_json((run_dir / RESULTS).read_text())


def run_dirs(reports: Path = REPORTS) -> list[Path]:
    """Every run directory with a results.json under ``reports``, oldest first (run ids sort by time)."""
    if not reports.is_dir():
        return []
    return sorted(p.parent for p in reports.glob(f"*/{RESULTS}"))


def find_run(ref: str, reports: Path = REPORTS) -> Path | None:
    """A run directory from a run id (under ``reports``), a directory, or a results.json path."""
    for p in (Path(ref), reports / ref):
        if p.is_file() and p.name == RESULTS:
            return p.parent
        if (p / RESULTS).is_file():
            return p
    return None
