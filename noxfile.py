"""Sessions: ``nox -s bench`` (the main job: the default experiment matrix), ``nox -s tests`` (the test suite),
``nox -s lint`` (ruff + mypy + the import contracts + no import loops), ``nox -s live`` (the pipeline, live),
``nox -s microbench`` (pytest-benchmark)."""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True

PYTHON = "3.11"


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    session.install("-e", ".[test,cluster]")  # cluster: tests/test_cluster.py runs a local 3-node Ray cluster
    session.run("telemetry-bench", "proto")  # build the stubs from proto/ (also done on first import)
    session.run("pytest", *session.posargs)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("-e", ".[lint]")
    session.run("telemetry-bench", "proto")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("mypy")
    session.run("lint-imports")  # the layer contract in pyproject.toml ([tool.importlinter])
    session.run("python", "tools/import_loops.py")  # no import loop between any two modules, TYPE_CHECKING included


@nox.session(python=PYTHON)
def live(session: nox.Session) -> None:
    """The whole pipeline, live. Pass flags after --, e.g. ``nox -s live -- --rate 2000 --duration 10``."""
    session.install("-e", ".[embedded]")  # throwaway PostgreSQL/Redis where none run locally
    session.run("telemetry-bench", "live", *session.posargs)


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The default matrix; arguments after -- go to ``telemetry-bench run`` (e.g. ``-- --matrix smoke``)."""
    session.install("-e", ".[profiling,embedded]")
    args = session.posargs
    if not any(a == "--matrix" or a.startswith("--matrix=") for a in args):
        args = ["--matrix", "default", *args]
    session.run("telemetry-bench", "run", *args)


@nox.session(python=PYTHON)
def microbench(session: nox.Session) -> None:
    """Micro-benchmarks in benchmarks/ (decode, protobuf, queue payloads, sinks), saved under .benchmarks/ and
    compared with the previous save when there is one; the run's HTML report shows the latest table."""
    session.install("-e", ".[microbench,test]")
    session.run("telemetry-bench", "proto")
    storage = Path(__file__).resolve().parent / ".benchmarks"
    args = ["pytest", "benchmarks", f"--benchmark-storage=file://{storage}", "--benchmark-autosave"]
    if any(storage.glob("*/*.json")):
        args.append("--benchmark-compare")
    session.run(*args, *session.posargs)
