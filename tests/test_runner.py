"""The experiment runner: PromQL quantile semantics, matrix validation, and the smoke matrix end to end."""

from __future__ import annotations

import importlib.util
import math
import os
import pstats
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from experiments.measure import window as measure
from experiments.measure.promql import histogram_quantile
from experiments.plan.matrix import MatrixError, load
from experiments.results.model import Results
from harness.lifeline import drop_keys
from harness.services import Services

# --------------------------------------------------------------------------------------------- PromQL semantics
BUCKETS = {"0.1": 10.0, "0.5": 30.0, "1": 40.0, "+Inf": 40.0}


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        (0.5, 0.1 + (0.5 - 0.1) * (20 - 10) / 20),  # rank 20 falls in (0.1, 0.5]: 10 of its 20
        (0.25, 0.1),  # rank 10: exactly the first bucket's upper bound
        (0.125, 0.05),  # rank 5 in the first bucket, interpolated from 0
        (1.0, 1.0),  # rank 40: the last finite bucket (+Inf holds nothing more)
        (0.9, 0.5 + 0.5 * (36 - 30) / 10),
    ],
)
def test_histogram_quantile_interpolates_like_promql(q: float, expected: float) -> None:
    assert histogram_quantile(q, BUCKETS) == pytest.approx(expected)


def test_histogram_quantile_edges() -> None:
    assert histogram_quantile(-0.1, BUCKETS) == -math.inf
    assert histogram_quantile(1.1, BUCKETS) == math.inf
    assert math.isnan(histogram_quantile(0.5, {"1": 0.0, "+Inf": 0.0}))  # no observations
    assert math.isnan(histogram_quantile(0.5, {"+Inf": 3.0}))  # fewer than two buckets
    assert math.isnan(histogram_quantile(0.5, {"1": 1.0, "2": 2.0}))  # no +Inf bucket
    # observations beyond the last finite bucket: the answer is that bucket's upper bound
    assert histogram_quantile(0.99, {"1": 1.0, "2": 2.0, "+Inf": 100.0}) == 2.0
    # a first bucket with a non-positive upper bound is returned as is
    assert histogram_quantile(0.1, {"-1": 5.0, "0": 6.0, "+Inf": 10.0}) == -1.0
    # non-monotonic counts (a scrape race) are carried forward as PromQL does
    assert histogram_quantile(0.5, {"0.1": 10.0, "0.5": 9.0, "1": 20.0, "+Inf": 20.0}) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------- matrices
@pytest.mark.parametrize("name", ["smoke", "seed", "default", "full", "perf", "faults", "cluster"])
def test_shipped_matrices_load(name: str) -> None:
    m = load(name)
    assert m.cells and m.repeats >= 1
    ids = [c.id for c in m.cells]
    assert len(ids) == len(set(ids))


def test_default_matrix_has_the_four_comparisons_and_the_seed() -> None:
    m = load("default")
    groups = {g["name"]: g for g in m.groups}
    assert {"sink", "batch", "decoder", "forwarder"} <= set(groups)
    assert {c.params.sink for c in m.cells if "sink" in c.groups} == {
        "insert",
        "executemany",
        "values",
        "copy",
        "copy_binary",
    }
    assert {c.params.batch_size for c in m.cells if "batch" in c.groups} == {10, 100, 1000, 10000}  # 1: in full
    assert {c.params.decoder for c in m.cells if "decoder" in c.groups} == {"dict", "direct"}
    assert {c.params.forwarder for c in m.cells if "forwarder" in c.groups} == {"sync", "async", "pubsub"}
    seed = next(c for c in m.cells if c.id == "seed").params
    assert (seed.topology, seed.rpc, seed.decoder, seed.queue, seed.sink, seed.batch_size, seed.forwarder) == (
        "node", "seed", "dict", "list", "copy", 20, "sync"
    )  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "needles"),
    [
        ('name = "x"\nrepets = 3\n', ["unknown key 'repets'", "repeats"]),
        ('name = "x"\n[base]\nsink = "kopy"\n', ["[base]", "sink", "valid sinks: insert, executemany"]),
        ('name = "x"\n[base]\nbatchsize = 10\n', ["unknown key 'batchsize'", "batch_size"]),
        ('name = "x"\n[[groups]]\nname = "g"\ntitle = "t"\nvary = { decoder = ["fast"] }\n', ["'g'", "valid decoders"]),
        ('name = "x"\n[[groups]]\nname = "g"\ntitle = "t"\nvary = { batch_size = [0] }\n', ["batch_size", "0"]),
        ('name = "x"\n[cells.a]\npreset = "turbo"\n', ["unknown preset 'turbo'", "seed"]),
        ('name = "x"\n[cells.a]\ntopology = "mesh"\n', ["[cells.a]", "topology", "'split'"]),
        ("name = ", ["not valid TOML"]),
    ],
)
def test_bad_matrix_file_names_the_key_the_file_and_the_choices(tmp_path: Path, toml: str, needles: list[str]) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(MatrixError) as err:
        load(str(path))
    message = str(err.value)
    assert str(path) in message
    for needle in needles:
        assert needle in message


def test_unknown_matrix_name_lists_the_shipped_ones() -> None:
    with pytest.raises(MatrixError, match="valid matrices: cluster, default, faults, full, perf, seed, smoke"):
        load("nightly")


def test_cli_rejects_a_bad_matrix_before_anything_runs(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\n[base]\nsink = "kopy"\n')
    proc = subprocess.run(
        [sys.executable, "-m", "telemetry_bench.cli", "run", "--matrix", str(path), "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "valid sinks" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(tmp_path.glob("*/results.json"))


# --------------------------------------------------------------------------------------------- smoke, for real
@pytest.fixture
def fresh_database(services: Services) -> Iterator[str]:
    """A new, empty database (a user's first run: no table anywhere yet); its DSN. Dropped afterwards."""
    name = f"tb_fresh_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield make_conninfo(services.pg_dsn, dbname=name)
    with psycopg.connect(services.pg_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def test_smoke_matrix_end_to_end(tmp_path: Path, services: Services, fresh_database: str) -> None:
    env = {**os.environ, "TELEMETRY_PG_DSN": fresh_database, "TELEMETRY_REDIS_URL": services.redis_url}
    proc = subprocess.run(
        [sys.executable, "-m", "telemetry_bench.cli", "run", "--matrix", "smoke", "--out", str(tmp_path / "reports"),
         "--profiles", str(tmp_path / "profiles")],
        capture_output=True, text=True, timeout=420, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    [path] = list((tmp_path / "reports").glob("*/results.json"))
    results = Results.model_validate_json(path.read_text())  # the documented schema
    assert results.ceilings is not None and results.ceilings.copy_binary_rps > 10_000
    assert results.failed_cells == []
    m = load("smoke")
    assert [c.id for c in results.cells] == [c.id for c in m.cells]
    profiled = {c.id for c in m.cells if c.profile}
    assert profiled == {"seed", "max-copy_binary-async"}
    for cell in results.cells:
        s = cell.summary
        assert s is not None and not s.failed, cell.id
        assert s.readings_generated == s.readings_committed > 0 and s.lost == 0 and s.duplicated == 0
        assert s.throughput_rps and s.throughput_rps > 0
        assert s.latency_ms.p50 is not None and s.latency_ms.p50 <= s.latency_ms.p99 <= s.latency_ms.max  # type: ignore[operator]
        assert s.bottleneck is not None and s.bottleneck.reason
        assert len(cell.repeats) == m.repeats
        rep = cell.repeats[0]
        assert rep.resources and all(r.cpu_s >= 0 for r in rep.resources.values())
        assert rep.pg.wal_bytes and rep.pg.wal_bytes > 0
        if cell.params.forwarding:
            assert s.forwarded == s.readings_generated and s.broadcast == s.forwarded
        # the profiled repeat (the seed's node, every stage of the split full job) wrote a loadable cProfile file per
        # stage; the other cells have none
        if cell.id not in profiled:
            assert cell.profile is None, cell.id
            continue
        assert cell.profile is not None and cell.profile.failures == []
        assert cell.profile.files
        for stage, files in cell.profile.files.items():
            stats = pstats.Stats(str(files["cprofile"]))
            assert stats.total_calls > 0, stage  # type: ignore[attr-defined]
    assert "results:" in proc.stderr
    assert "time in " in proc.stderr  # where the repeats' wall time went
    assert all(r.phases_s.keys() == {"start", "stream", "drain", "stop"} for c in results.cells for r in c.repeats)
    # the run's own schema (concurrent runs never share a table) is gone with it
    import psycopg

    from experiments.run.context import run_schema

    with psycopg.connect(fresh_database) as conn:
        left = conn.execute(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = %s", (run_schema(results.run_id),)
        ).fetchone()
    assert left == (0,)


MEMORY_MATRIX = """name = "memory"
repeats = 1
ci_target = 0
warmup_s = 0.3
measure_s = 1.0
tail_s = 0.2
min_commits = 0
[base]
topology = "split"
rate = 20000
readings_per_message = 100
sink = "copy_binary"
batch_size = 1000
sensors = 20
forwarder = "none"
[cells.one]
"""


@pytest.mark.skipif(importlib.util.find_spec("memray") is None, reason="memray is not installed")
def test_memory_profile_runs_the_most_growing_stage_under_memray_and_the_report_links_it(
    tmp_path: Path, services: Services, fresh_database: str
) -> None:
    """The runner's --memory-profile step on a run whose timed repeat saw writer-1 grow most (its ceilings and timed
    repeats are not re-run here: that keeps the test to one short repeat)."""
    import asyncio
    import dataclasses
    import io

    from rich.console import Console

    from experiments.present.report import build_report
    from experiments.results.model import CellResult, StageResources
    from experiments.run import memory_profile
    from experiments.run.repeat import cell_config
    from experiments.run.runner import Runner

    toml = tmp_path / "memory.toml"
    toml.write_text(MEMORY_MATRIX)
    m = load(str(toml))
    out = io.StringIO()
    runner = Runner(m, dataclasses.replace(services, pg_dsn=fresh_database), profile="none",
                    out=tmp_path / "reports", profiles=tmp_path / "profiles", console=Console(file=out))  # fmt: skip
    ctx = runner.ctx  # what a memory run needs of the run: no Runner attribute is touched
    ctx.queue_key = f"test:{uuid.uuid4().hex[:8]}:queue"
    fixture = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())
    rep = fixture.cells[0].repeats[0].model_copy(deep=True)
    rep.resources = {s: StageResources(cpu_s=1.0, cpu_util_window=0.5, peak_rss_bytes=80 << 20,
                                       series=[[0.0, 0.0, 50 << 20], [1.0, 1.0, (50 << 20) + g]])
                     for s, g in {"ingest": 1 << 20, "writer-1": 9 << 20, "redis": 1 << 30}.items()}  # fmt: skip
    [cell] = m.cells
    ctx.results.cells = [CellResult(id=cell.id, title=cell.title, groups=[], varied={},
                                    params=cell_config(cell, m), repeats=[rep])]  # fmt: skip
    try:
        mp = asyncio.run(memory_profile.run(ctx, None))
    finally:
        drop_keys(services.redis_url, ctx.queue_key)
    assert mp.get("problem") is None and mp["failures"] == [], mp
    assert mp["cell"] == "one" and mp["stage"] == "writer-1" and "writer-1 grew most (+9.0 MiB" in mp["why"]
    assert "memory profile: one · writer-1 under memray" in out.getvalue()
    binary, html = Path(mp["files"]["bin"]), Path(mp["files"]["flamegraph"])
    assert binary == tmp_path / "profiles" / runner.run_id / "one" / "writer-1.memray.bin" and binary.stat().st_size
    assert html.read_text().lstrip().lower().startswith("<!doctype html")
    runner.results.memory_profile = mp
    runner.dir.mkdir(parents=True, exist_ok=True)  # the logs of the repeat are there
    runner.save()
    report = build_report(runner.dir).read_text()
    section = report[report.index('id="memory-profile"') :]
    section = section[: section.index("</div>")]
    for f in (binary, html):
        href = os.path.relpath(f, runner.dir)
        assert f'href="{href}"' in section and (runner.dir / href).resolve() == f.resolve()
    assert f"memray summary {binary}" in section and "(missing)" not in section


def test_cli_rejects_an_unknown_memory_profile_cell_before_anything_runs(tmp_path: Path) -> None:
    toml = tmp_path / "memory.toml"
    toml.write_text(MEMORY_MATRIX)
    proc = subprocess.run(
        [sys.executable, "-m", "telemetry_bench.cli", "run", "--matrix", str(toml), "--memory-profile", "nope",
         "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2 and "--memory-profile 'nope': no such cell; cells: one" in proc.stderr
    assert not list(tmp_path.glob("*/results.json"))


def test_memory_profile_picks_the_overload_cell_else_the_most_growth() -> None:
    from experiments.results.model import StageResources
    from experiments.run import memory_profile

    res = Results.model_validate_json((Path(__file__).parent / "fixtures" / "results.json").read_text())
    for k, cell in enumerate(res.cells):
        for rep in cell.repeats:
            grow = {"ingest": 1 << 20, "writer-1": (k + 2) << 20, "postgresql": 1 << 30}
            rep.resources = {s: StageResources(cpu_s=1.0, cpu_util_window=0.5, peak_rss_bytes=100 << 20,
                                               series=[[0.0, 0.0, 50 << 20], [1.0, 1.0, (50 << 20) + g]])
                             for s, g in grow.items()}  # fmt: skip
    last = res.cells[-1].id
    grown = f"+{len(res.cells) + 1}.0 MiB"
    assert memory_profile.pick(res, None) == (last, "writer-1", f"the cell whose stage memory grew most; writer-1 "
                                              f"grew most ({grown} over a timed repeat)")  # fmt: skip
    cid, stage, why = memory_profile.pick(res, "seed") or ("", "", "")
    assert (cid, stage) == ("seed", "writer-1") and why.startswith("the cell named")  # PostgreSQL is never chosen
    res.cells[0].id = "overload"
    assert (memory_profile.pick(res, None) or ("",))[0] == "overload"
    with pytest.raises(ValueError, match="no such cell"):
        memory_profile.pick(res, "nope")
    prefix = memory_profile.prefix("writer-1", Path("w.memray.bin"))
    assert prefix("ingest") == [] and prefix("writer-1")[:3] == ["-m", "memray", "run"]


@pytest.mark.parametrize(
    ("profiler", "suffixes"),
    [("cprofile", [".prof"]), ("yappi", [".yappi.pstat", ".callgrind", ".yappi.txt"])],
)
def test_profile_launcher_saves_a_loadable_profile(tmp_path: Path, profiler: str, suffixes: list[str]) -> None:
    out = tmp_path / "stage"
    proc = subprocess.run(
        [sys.executable, "-m", "experiments.run.profile_stage", "--profiler", profiler, "--out", str(out),
         "-m", "telemetry_bench.cli", "--help"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    for suffix in suffixes:
        assert Path(str(out) + suffix).stat().st_size > 0
    pstats.Stats(str(out) + suffixes[0])  # snakeviz opens pstats files


def test_repeats_are_interleaved_in_abba_rounds() -> None:
    from experiments.run.runner import run_order

    cells = load("perf").cells[:3]
    reps = {cells[0].id: 2, cells[1].id: 3, cells[2].id: 1}
    order = [(c.id, i) for c, i in run_order(cells, lambda c: reps[c.id], True)]
    a, b, c = (x.id for x in cells)
    assert order == [(a, 0), (b, 0), (c, 0), (b, 1), (a, 1), (b, 2)]  # round 2 reversed: b before a
    sequential = [(x.id, i) for x, i in run_order(cells, lambda c: reps[c.id], False)]
    assert sequential == [(a, 0), (a, 1), (b, 0), (b, 1), (b, 2), (c, 0)]


def test_pg_stats_before_the_table_exists(services: Services) -> None:
    """A fresh database (a user's first `nox -s bench`) has no telemetry_data yet: WAL and checkpoints are still
    read, the table's size is unknown rather than an error."""
    stats = measure.pg_stats(services.pg_dsn, f"t_missing_{uuid.uuid4().hex[:8]}")
    assert stats["table_bytes"] is None
    assert isinstance(stats["wal"], int) and isinstance(stats["checkpoints"], int)


def test_pg_stats_sizes_the_table(services: Services, pg_schema: str) -> None:
    stats = measure.pg_stats(services.pg_dsn, pg_schema)
    assert stats["table_bytes"] is not None and stats["table_bytes"] >= 0


def test_argv_in_results_has_no_password() -> None:
    from experiments.run.runner import redact_argv

    argv = ["telemetry-bench", "run", "--pg-dsn", "postgresql://u:s3cret@h/db", "--redis-url=redis://:pw2@h:6379/0",
            "--matrix", "smoke"]  # fmt: skip
    out = redact_argv(argv)
    assert "s3cret" not in " ".join(out) and "pw2" not in " ".join(out)
    assert out[:4] == ["telemetry-bench", "run", "--pg-dsn", "postgresql://u:***@h/db"]
    assert out[4] == "--redis-url=redis://:***@h:6379/0" and out[5:] == ["--matrix", "smoke"]
