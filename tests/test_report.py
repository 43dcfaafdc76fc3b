"""The HTML report and run comparison, from a stored results.json (``tests/fixtures/``, trimmed from a real run).

The report is built into a temporary repository layout (``reports/<run>/``, ``profiles/<run>/...`` with small real
cProfile and yappi files made here, ``.benchmarks/`` with a stored pytest-benchmark save), checked for every
section, then opened from disk in Debian's Chromium: no console error, no network request, every image rendered.
A full-page screenshot goes to ``test-artifacts/report.png``.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import re
from pathlib import Path

import pytest

from experiments.analysis import compare, sampling_cost
from experiments.present import flamegraph
from experiments.present.report import build_index, build_report, headline
from experiments.results.model import Results, Sampled
from harness.faults import Fault
from telemetry_bench.cli import main
from tests.helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, needs_chromium

FIXTURES = Path(__file__).resolve().parent / "fixtures"


# --- a small real workload to profile ----------------------------------------------------------------------------
def _fixture_hotspot(n: int) -> int:
    return sum(len(json.dumps({"i": i, "values": [i, i * 2, i * 3]})) for i in range(n))


async def _fixture_coroutine() -> int:
    await asyncio.sleep(0.02)
    return _fixture_hotspot(500)


def _write_cprofile(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    prof = cProfile.Profile()
    prof.enable()
    _fixture_hotspot(3000)
    prof.disable()
    prof.dump_stats(str(path))


def _write_yappi(pstat: Path, text: Path) -> bool:
    try:
        import yappi
    except ImportError:
        return False
    pstat.parent.mkdir(parents=True, exist_ok=True)
    yappi.clear_stats()
    yappi.set_clock_type("wall")
    yappi.start()
    asyncio.run(_fixture_coroutine())
    yappi.stop()
    stats = yappi.get_func_stats()
    stats.save(str(pstat), type="pstat")
    with text.open("w") as f:
        stats.sort("ttot", "desc").print_all(out=f)
    yappi.clear_stats()
    return True


def _layout(root: Path, results: Results | None = None) -> Path:
    """reports/<run>/results.json, its profiles and a micro-benchmark save under ``root``; returns the run dir."""
    res = results or Results.model_validate_json((FIXTURES / "results.json").read_text())
    run = root / "reports" / res.run_id
    run.mkdir(parents=True)
    res.write(run / "results.json")
    for cell in res.cells:
        if cell.profile is None or cell.id == "sink-sink=insert":  # that cell's files are missing on purpose
            continue
        for kinds in cell.profile.files.values():
            if "cprofile" in kinds:
                _write_cprofile(root / kinds["cprofile"])
            if "yappi_pstat" in kinds:
                _write_yappi(root / kinds["yappi_pstat"], root / kinds["yappi_text"])
    bench = root / ".benchmarks" / "Linux-CPython-3.11-64bit"
    bench.mkdir(parents=True)
    save = json.loads((FIXTURES / "microbench.json").read_text())
    (bench / "0001_previous.json").write_text(json.dumps(save))
    for b in save["benchmarks"]:  # the newer save: decode[direct] got 10 % slower
        if b["name"] == "test_decode[direct]":
            b["stats"]["median"] *= 1.10
    (bench / "0002_latest.json").write_text(json.dumps(save))
    return run


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, Results]:
    root = tmp_path_factory.mktemp("repo")
    run = _layout(root)
    out = build_report(run, root=root)
    build_index(run.parent)
    return out, out.read_text(), Results.model_validate_json((run / "results.json").read_text())


def _section(html: str, anchor: str) -> str:
    """The HTML from the element with id ``anchor`` to the next <h2 id=...> (or the end)."""
    start = html.index(f'id="{anchor}"')
    nxt = html.find("<h2 id=", start + 10)
    return html[start : nxt if nxt > 0 else len(html)]


# --- the report -------------------------------------------------------------------------------------------------
def test_report_has_every_section(built: tuple[Path, str, Results]) -> None:
    path, html, res = built
    assert path.name == "index.html"
    # flags first, in red: the failed accounting and the unstable cells, before the headline
    flags = _section(html, "flags")
    assert html.index('id="flags"') < html.index('id="headline"') < html.index('id="metadata"')
    assert "FAILED accounting" in flags and "batch-batch_size=1" in flags and "readings lost" in flags
    assert "UNSTABLE" in flags and "seed" in flags and "CV 17.6 %" in flags
    assert 'class="flags"' in html and "--red" in html
    # headline: best configuration, readings/s, fraction of the ceiling, ratio to the seed
    head = _section(html, "headline")
    best = headline(res)
    assert best["best"] == "batch-batch_size=10000"
    assert "batch-batch_size=10000" in head and f"{best['rps']:,.0f}" in head
    assert f"{best['fraction'] * 100:.1f} %" in head and "× the seed" in head and "321×" in head
    assert "Costliest function" not in head or "ingest" in head
    # metadata: machine, versions, commit, matrix
    meta = _section(html, "metadata")
    for text in ("AMD EPYC", "3.11.7", "PostgreSQL".lower(), res.git["commit"], "default", "psycopg 3.3.9"):
        assert text in meta
    # one section per comparison, each with a plot, a table and a sentence naming the winner or noise
    for g in res.matrix["groups"]:
        sec = _section(html, f"group-{g['name']}")
        assert g["title"].replace("&", "&amp;") in sec
        assert sec.count("<img ") == 1 and "<table>" in sec
        assert "wins" in sec and ("beyond noise" in sec or "within noise" in sec or "noise unknown" in sec)
        assert "min – max" in sec and "% ceiling" in sec
    sink = _section(html, "group-sink")
    assert "sink=copy_binary (baseline)</b> wins" in sink and "within noise" in sink  # 121,000 vs 114,682: a tie
    assert "decoder=direct (baseline)</b> wins with 121,000 readings/s, 2.40× the runner-up" in html
    batch = _section(html, "group-batch")
    assert "Not ranked (failed their accounting): batch_size=1" in batch
    fwd = _section(html, "group-forwarder")
    assert "backlog drain" in fwd and "POST p50 / p99 ms" in fwd
    # latency: plot, exact beside Prometheus-interpolated
    lat = _section(html, "latency")
    assert lat.count("<img ") == 1 and "exact (table), ms" in lat and "Prometheus (buckets), ms" in lat
    assert "histogram_quantile" in lat
    # per cell: queue + CPU plot, verdict, PostgreSQL line
    cells = _section(html, "bottlenecks")
    for c in res.cells:
        assert f'id="cell-{c.id}"' in html
    assert cells.count("Bottleneck: <b>") == len(res.cells)
    assert html.count('alt="queue length and CPU per stage over time') == len(res.cells)
    # profiles: hotspots (own and cumulative), the snakeviz command, relative links; yappi per coroutine
    assert "cProfile: own time (tottime)" in html and "cProfile: cumulative time" in html
    assert "_fixture_hotspot" in html and "tests/test_report.py" in html
    assert f"snakeviz profiles/{res.run_id}/baseline/writer-1.prof" in html
    assert f'href="../../profiles/{res.run_id}/baseline/writer-1.prof"' in html
    assert "Costliest function in <b>writer-1</b>" in html or "Costliest function in <b>ingest</b>" in html
    assert "Missing profile file(s)" in html  # sink-sink=insert's files do not exist
    if "yappi: wall time per coroutine" in html:
        assert "_fixture_coroutine" in html
    # PostgreSQL deltas and the micro-benchmark table with its change against the previous save
    pg = _section(html, "postgres")
    assert "WAL bytes / reading" in pg and "table size" in pg
    micro = _section(html, "micro")
    assert "test_decode[direct]" in micro and "test_sink_batch[copy_binary]" in micro and "+10.0 %" in micro
    assert "µs" in micro and "(÷ 10,000)" in micro
    assert "Beyond noise vs within noise" in html and "Welch" in html
    # self-contained: no remote resource, every image embedded
    assert not re.search(r'(src|href)="(https?:)?//', html)
    assert all(src.startswith("data:image/png;base64,") for src in re.findall(r'<img src="([^"]+)"', html))


def test_headline_tolerates_missing_seed_ceilings_and_failures(tmp_path: Path) -> None:
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    res.ceilings = None
    res.cells = [c for c in res.cells if c.id != "seed"]
    for c in res.cells:
        assert c.summary is not None
        c.summary.fraction_of_ceiling = None
    h = headline(res)
    assert h["best"] == "batch-batch_size=10000" and h["vs_seed"] is None and h["fraction"] is None
    run = _layout(tmp_path, res)
    html = build_report(run, root=tmp_path).read_text()
    assert "ceiling not measured" in html and "no seed cell in this run" in html
    # every cell failed, no groups, an unfinished run: still a report, saying so
    for c in res.cells:
        assert c.summary is not None
        c.summary.failed = True
    res.matrix["groups"] = []
    res.finished = None
    (run / "results.json").unlink()
    res.write(run / "results.json")
    html = build_report(run, root=tmp_path).read_text()
    assert "No cell finished without failures" in html and "INCOMPLETE" in html
    assert headline(res)["best"] is None


def test_fault_cells_show_recovery_accounting_and_expected_loss(tmp_path: Path) -> None:
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    lossy, kept, skipped = res.cells[0], res.cells[1], res.cells[2]
    for r in lossy.repeats:
        r.fault = Fault.model_validate(
            {"kind": "kill_writer", "at_s": 1.5, "injected": True, "recovery_s": 0.77, "note": "", "detail": ""}
        )
        r.accounting = r.accounting.model_copy(update={"generated": 20_000, "committed": 19_600, "rows": 19_600})
        r.expected_failures = ["400 readings lost: generated 20000, committed 19600"]
    for r in kept.repeats:
        detail = "Redis 6.2.14 with AOF, down 1 s, came back with every key: q: list of 3"
        r.fault = Fault.model_validate({"kind": "restart_redis", "at_s": 1.5, "injected": True, "recovery_s": None,
                                        "note": "", "detail": detail})  # fmt: skip
    for r in skipped.repeats:
        note = "not injected: only a local PostgreSQL cluster is restarted (this one is embedded)"
        r.fault = Fault.model_validate({"kind": "restart_postgres", "at_s": 2.0, "injected": False,
                   "recovery_s": None, "note": note, "detail": ""})  # fmt: skip
    html = build_report(_layout(tmp_path, res), root=tmp_path).read_text()
    assert "kill_writer at 1.5 s, recovered in 0.77 s; generated 20,000, committed 19,600, lost 400" in html
    assert "expected and reported: 400 readings lost" in html
    assert "restart_redis at 1.5 s, the affected path never moved again" in html
    assert "came back with every key: q: list of 3" in html
    assert "restart_postgres not injected: only a local PostgreSQL cluster is restarted" in html
    assert html.count("a fault cell: the fault and the recovery from it shape these figures") == 3


def test_index_lists_every_run_with_its_headline(tmp_path: Path) -> None:
    run = _layout(tmp_path)
    build_report(run, root=tmp_path)
    other = Results.model_validate_json((run / "results.json").read_text())
    other.run_id = "20261201T000000Z-00000000"
    other.matrix["name"] = "smoke"
    (tmp_path / "reports" / other.run_id).mkdir()
    other.write(tmp_path / "reports" / other.run_id / "results.json")
    (tmp_path / "reports" / "broken").mkdir()
    (tmp_path / "reports" / "broken" / "results.json").write_text("{not json")
    (tmp_path / "reports" / "compare-a-vs-b.md").write_text("# x\n")
    html = build_index(tmp_path / "reports").read_text()
    assert f'href="{run.name}/index.html"' in html
    assert f'href="{other.run_id}/results.json"' in html and "(no HTML yet)" in html
    assert html.index(other.run_id) < html.index(run.name)  # newest first
    assert "unreadable results.json" in html and "batch-batch_size=10000" in html and "321×" in html
    assert 'href="compare-a-vs-b.md"' in html


def test_cli_report_rebuilds_run_and_index(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _layout(tmp_path)
    assert main(["report", str(run)]) == 0
    out = capsys.readouterr().out
    assert str(run / "index.html") in out and str(tmp_path / "reports" / "index.html") in out
    assert (run / "index.html").exists() and (tmp_path / "reports" / "index.html").exists()
    assert main(["report", "no-such-run", "--reports", str(tmp_path / "reports")]) == 2


@needs_chromium
def test_report_renders_in_chromium_from_disk(built: tuple[Path, str, Results]) -> None:
    from playwright.sync_api import sync_playwright

    path, _, _ = built
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            for page_path in (path, path.parent.parent / "index.html"):
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: errors.append(str(e)))
                page.on("request", lambda r: requests.append(r.url))
                page.goto(page_path.as_uri())
                page.wait_for_load_state("load")
                images = page.evaluate("[...document.images].map(i => [i.complete, i.naturalWidth, i.alt])")
                if page_path == path:
                    assert len(images) >= 5
                    assert all(done and width > 0 for done, width, _ in images), images
                    ARTIFACTS.mkdir(exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / "report.png"), full_page=True)
                page.close()
        finally:
            browser.close()
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests


# --- comparing runs ---------------------------------------------------------------------------------------------
def _scaled(res: Results, cell_id: str, factor: float) -> Results:
    out = res.model_copy(deep=True)
    out.run_id = "20261202T000000Z-regressed"
    for c in out.cells:
        if c.id == cell_id:
            for r in c.repeats:
                assert r.throughput_rps is not None
                r.throughput_rps *= factor
    return out


def test_noise_statistics() -> None:
    assert compare.t_two_sided_p(2.776445, 4) == pytest.approx(0.05, abs=1e-4)
    assert compare.t_two_sided_p(1.959964, 1e7) == pytest.approx(0.05, abs=1e-4)
    assert compare.t_two_sided_p(0.0, 3) == pytest.approx(1.0)
    d = compare.diff([100, 101, 99], [80, 81, 79])
    assert d.significant is True and d.ratio == pytest.approx(0.8)
    d = compare.diff([100, 110, 90], [105, 95, 112])  # overlapping ranges
    assert d.significant is False and "within noise" in d.noise_text()
    d = compare.diff([100], [80])
    assert d.significant is None and "noise unknown" in d.noise_text()


def test_compare_flags_a_20_percent_regression_and_ignores_noise(tmp_path: Path) -> None:
    a = Results.model_validate_json((FIXTURES / "results.json").read_text())
    b = _scaled(a, "batch-batch_size=10000", 0.80)  # a synthetic 20 % regression
    for c in b.cells:  # and a change inside the noise: the same repeats, reordered and nudged by 1 %
        if c.id == "sink-sink=copy":
            tps = [r.throughput_rps for r in c.repeats]
            for r, t in zip(c.repeats, reversed(tps), strict=True):
                assert t is not None
                r.throughput_rps = t * 1.01
    result = compare.compare(a, b, fail_above=10)
    by = {c.cell: c for c in result.cells}
    reg = by["batch-batch_size=10000"]
    assert reg.throughput is not None and reg.throughput.significant and reg.throughput.ratio == pytest.approx(0.8)
    assert reg.verdict() == "slower" and reg.regressions == ["throughput -20.0%"]
    calm = by["sink-sink=copy"]
    assert calm.throughput is not None and calm.throughput.significant is False
    assert calm.verdict() == "no change (within noise)" and calm.regressions == []
    assert [c.cell for c in result.regressions] == ["batch-batch_size=10000"]
    # a 20 % regression is not "larger than 25 %"
    assert compare.compare(a, b, fail_above=25).regressions == []
    md = compare.to_markdown(result)
    assert "| batch-batch_size=10000" in md and "-20.0%" in md and "REGRESSION" in md
    assert "1 regression(s) larger than 10 %" in md


def test_cli_compare_writes_markdown_and_fails_above_threshold(tmp_path: Path) -> None:
    a = Results.model_validate_json((FIXTURES / "results.json").read_text())
    b = _scaled(a, "batch-batch_size=10000", 0.80)
    same = _scaled(a, "batch-batch_size=10000", 1.0)
    same.run_id = "20261203T000000Z-same"
    reports = tmp_path / "reports"
    for r in (a, b, same):
        (reports / r.run_id).mkdir(parents=True)
        r.write(reports / r.run_id / "results.json")
    args = ["--reports", str(reports)]
    assert main(["compare", a.run_id, b.run_id, "--fail-above", "10", *args]) == 1
    md = reports / f"compare-{a.run_id}-vs-{b.run_id}.md"
    assert md.exists() and "REGRESSION" in md.read_text()
    assert main(["compare", a.run_id, b.run_id, *args]) == 0  # no threshold: report only
    assert main(["compare", a.run_id, same.run_id, "--fail-above", "10", *args]) == 0
    assert main(["compare", a.run_id, "nope", *args]) == 2
    out = tmp_path / "x.md"
    assert (
        main(["compare", str(reports / a.run_id), str(reports / same.run_id / "results.json"), "--out", str(out)]) == 0
    )
    assert "no change (within noise)" in out.read_text()


def test_microbench_table_keeps_every_benchmark_after_a_partial_save(tmp_path: Path) -> None:
    from experiments.present.report import microbench

    _layout(tmp_path)
    bench = tmp_path / ".benchmarks" / "Linux-CPython-3.11-64bit"
    save = json.loads((FIXTURES / "microbench.json").read_text())
    save["benchmarks"] = [b for b in save["benchmarks"] if b["name"] == "test_protobuf_encode"]
    save["benchmarks"][0]["stats"]["median"] *= 0.5
    (bench / "0003_partial.json").write_text(json.dumps(save))
    table = microbench(tmp_path)
    assert table is not None and table["newest"] == "0003_partial.json"
    rows = {r["name"]: r for r in table["rows"]}
    assert len(rows) == 14 and rows["test_protobuf_encode"]["save"] == "0003"
    assert rows["test_protobuf_encode"]["change"] == pytest.approx(-0.5)
    assert rows["test_decode[direct]"]["save"] == "0002" and rows["test_decode[direct]"]["change"] == pytest.approx(0.1)
    assert microbench(tmp_path / "nowhere") is None


def test_headline_intervals_loops_and_target_status(tmp_path: Path) -> None:
    from experiments.analysis.headline import headline_of
    from experiments.results.model import Target

    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    full = res.cells[3].model_copy(deep=True)  # the baseline, forwarding to the backend with a websocket client
    full.id, full.params = "full", full.params.model_copy(update={"forwarder": "async"})
    for r in full.repeats:
        r.accounting = r.accounting.model_copy(update={"ws_clients": 1})
    res.cells.append(full)
    res.headline = headline_of(res)
    res.targets = [Target(name="instrumentation", target="±3 %", measured="x", status="cannot_tell", passed=None,
                          detail="straddles", cells=[])]  # fmt: skip
    html = build_report(_layout(tmp_path, res), root=tmp_path).read_text()
    head = _section(html, "headline")
    assert "full job" in head and "database-only" in head and "242×" in head and "321×" in head
    assert re.search(r"242× \[[\d,.]+×, [\d,.]+×\]", head)  # the ratio with its interval
    assert "CANNOT TELL" in _section(html, "targets")
    lat = _section(html, "latency")
    assert "closed (not under load)" in lat and ">open<" in lat
    cells = _section(html, "cells")
    assert "95 % interval" in cells and ">closed<" in cells and ">open<" in cells
    assert "Student's t" in html


# --- sampling profiles (py-spy) ---------------------------------------------------------------------------------
HOT_STACK = "<module> (pipeline/writer.py);run (pipeline/writer.py);sampled_hot_function (pipeline/sinks/copy.py)"
IDLE_STACK = "<module> (pipeline/writer.py);select (selectors.py);epoll_wait (libc.so.6)"


def _with_samples(root: Path, res: Results, cell_id: str, hot: int, idle: int) -> Results:
    """``res`` with ``cell_id``'s even repeats sampled (real collapsed files and merged views under ``root``) and
    every sampled repeat's throughput × 0.99 (a 1 % sampling cost); sampling = "alternate"."""
    out = res.model_copy(deep=True)
    out.matrix["sampling"] = "alternate"
    cell = out.cell(cell_id)
    assert cell is not None
    cell_dir = root / "profiles" / out.run_id / cell_id
    for rep in cell.repeats[::2]:
        f = cell_dir / f"repeat-{rep.index + 1}" / "writer-1.collapsed"
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(f"{HOT_STACK} {hot}\n{IDLE_STACK} {idle}\n<module> (pipeline/writer.py);encode (x.py) 5\n")
        views = flamegraph.write_cell_views(cell_dir)
        rel = {k: str(p.relative_to(root)) for k, p in views["writer-1"].items()}
        rep.sampled = Sampled(rate_hz=100, files={"writer-1": str(f.relative_to(root))}, views={"writer-1": rel})
        assert rep.throughput_rps is not None
        rep.throughput_rps *= 0.99
    return out


def test_report_renders_the_sampled_flame_graph_top_functions_and_cost(tmp_path: Path) -> None:
    res = _with_samples(tmp_path, Results.model_validate_json((FIXTURES / "results.json").read_text()), "baseline",
                        hot=300, idle=100)  # fmt: skip
    run = _layout(tmp_path, res)
    html = build_report(run, root=tmp_path).read_text()
    card = html[html.index('id="cell-baseline"') :]
    card = card[: card.index("</section>")]
    flame = card[card.index('id="sampled-baseline"') :]
    assert "py-spy, 100 Hz, 2 measured repeats merged" in flame
    assert "<svg" in flame and "sampled_hot_function" in flame[: flame.index("</svg>")]  # the embedded graph
    # the top-functions table: the hot function first among busy ones, the wait told apart
    busy = flame[flame.index("Top functions by self samples") : flame.index("Idle waits")]
    assert busy.index("sampled_hot_function") < busy.index("encode") and "epoll_wait" not in busy
    assert "74.1 %" in busy  # 600 of 810 samples, merged over both sampled repeats
    assert "epoll_wait" in flame[flame.index("Idle waits") :] and "idle waits 24.7 %" in flame
    # the files, with the command that opens each (the cProfile files and snakeviz commands stay)
    assert f"npx speedscope profiles/{res.run_id}/baseline/writer-1.speedscope.json" in flame
    assert f"flamegraph.pl profiles/{res.run_id}/baseline/writer-1.collapsed" in flame
    assert "(missing)" not in flame and "snakeviz" in card
    cost = _section(html, "bottlenecks")
    measured = sampling_cost.cost(res)
    assert measured is not None and measured.cells == ["baseline"] and (measured.sampled, measured.unsampled) == (2, 1)
    assert "Sampling cost" in cost and measured.text() in cost and "sampled ÷ unsampled − 1: " in cost


def test_compare_lists_the_functions_whose_share_changed_most(tmp_path: Path) -> None:
    a = _with_samples(tmp_path, Results.model_validate_json((FIXTURES / "results.json").read_text()), "baseline",
                      hot=300, idle=100)  # fmt: skip
    b = _scaled(a, "baseline", 0.7)  # B is 30 % slower, and its writer spends far more time in the hot function
    b = _with_samples(tmp_path, b, "baseline", hot=900, idle=20)
    result = compare.compare(a, b, roots=[tmp_path])
    ch = next(c for c in result.cells if c.cell == "baseline")
    assert ch.throughput is not None and ch.throughput.significant
    changes = ch.profile_changes["writer-1"]
    assert changes[0].function == "sampled_hot_function" and changes[0].delta > 0.15
    assert {c.function for c in changes[:2]} == {"sampled_hot_function", "epoll_wait"}
    md = compare.to_markdown(result)
    assert "### baseline" in md and "writer-1" in md and "`sampled_hot_function`" in md
    # cells within noise get no profile diff
    assert all(not c.profile_changes for c in result.cells if c.cell != "baseline")


def test_report_shows_the_hosts_of_a_cluster_run(tmp_path: Path) -> None:
    """A repeat run on a Ray cluster (harness/cluster/): its hosts, their stages, restarts, clocks and the flag."""
    from experiments.results.model import ClusterFigures

    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    host = {"stages": [], "cpu_s": 0.5, "rss_peak_bytes": 60_000_000, "readings": {}, "per_s": {}}
    stage = {"restarts": 0, "cpu_s": 0.5, "rss_peak_bytes": 60_000_000}
    res.cells[0].repeats[0].cluster = ClusterFigures.model_validate({
        "address": "127.0.0.2:6379", "head": "a", "placement": {"writer": ["b"]},
        "hosts": {"a": {**host, "ip": "127.0.0.2", "stages": ["generator"], "readings": {"generated": 6000},
                        "per_s": {"generated": 2000.0}},
                  "b": {**host, "ip": "127.0.0.3", "stages": ["writer-1"], "readings": {"committed": 6000},
                        "per_s": {"committed": 2000.0}}},
        "stages": {"generator": {**stage, "host": "a", "ip": "127.0.0.2"},
                   "writer-1": {**stage, "host": "b", "ip": "127.0.0.3", "restarts": 1}},
        "clock": {"a": {"offset_ns": 87_000, "uncertainty_ns": 437_000, "rtt_ns": 874_000},
                  "b": {"offset_ns": -2_500_000, "uncertainty_ns": 4_000_000, "rtt_ns": 8_000_000}},
        "clock_uncertainty_share": 0.1, "clock_flagged": ["b"],
    })  # fmt: skip
    html = build_report(_layout(tmp_path, res), root=tmp_path).read_text()
    assert 'id="cluster"' in html and "127.0.0.3" in html
    assert "restarted 1×" in html and "-2.500" in html and "large share of latency" in html
    assert "generated 6,000 (2,000/s)" in html and "committed 6,000 (2,000/s)" in html
    assert html.count("large share of latency") == 1  # host b only


def test_report_shows_the_scaling_steps_and_usl_fit(tmp_path: Path) -> None:
    pytest.importorskip("scipy", reason="scipy is not installed: pip install 'telemetry-bench[cluster]'")
    from experiments.analysis.usl import fit, usl
    from experiments.results.model import Scaling

    points = [(n, usl(n, 1000.0, 0.1, 0.01) * f) for n in (1, 2, 3, 4) for f in (0.99, 1.01)]
    steps = [{"n": n, "cell": f"scaling-workers={n}", "median": usl(n, 1000.0, 0.1, 0.01),
              "ci95": [usl(n, 1000.0, 0.1, 0.01) * 0.9, usl(n, 1000.0, 0.1, 0.01) * 1.1], "repeats": 2}
             for n in (1, 2, 3, 4)]  # fmt: skip
    res = Results.model_validate_json((FIXTURES / "results.json").read_text())
    res.scaling = Scaling.model_validate({"group": "scaling", "key": "workers", "steps": steps, "fit": fit(points)})
    html = build_report(_layout(tmp_path, res), root=tmp_path).read_text()
    assert 'id="scaling"' in html and "Universal Scalability Law" in html and "contention σ = 0.1" in html
    assert "scaling-workers=4" in html and 'alt="throughput per step with the fitted USL curve"' in html
