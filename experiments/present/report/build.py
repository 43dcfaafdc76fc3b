"""Building the pages: ``reports/<run-id>/index.html`` (jinja2 over ``templates/run.html``) and
``reports/index.html`` (every run, newest first)."""

from __future__ import annotations

import shlex
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2

from experiments.analysis import sampling_cost as cost_analysis
from experiments.analysis import stats
from experiments.analysis.fmt import _times, f_bytes, f_int, f_ms, f_pct, f_ratio, f_s
from experiments.analysis.winners import group_view
from experiments.plan.matrix import DEFAULT_RATE_HZ, MIN_COMMITS_DEFAULT
from experiments.present.report.cells import _stage_order, cell_latency, cell_view, flags, headline
from experiments.present.report.microbench import microbench
from experiments.present.report.plots import group_plot, latency_plot, usl_plot
from experiments.present.report.profiles import memory_profile, sampled_profiles, sampling_cost
from experiments.results import storage

ROOT = storage.ROOT
TEMPLATES = Path(__file__).resolve().parent.parent / "templates"


def _ci(v: list[float] | None, fmt: str = ",.0f") -> str:
    return "–" if not v else f"[{v[0]:{fmt}}, {v[1]:{fmt}}]"


def _ratio_ci(r: Any) -> str:
    """A headline ratio with its interval: "321× [290×, 355×]"."""
    if r is None or r.ratio is None:
        return "–"
    return stats.Ratio(r.ratio, *(r.ci95 or (None, None))).times()


def _env() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        int=f_int, ms=f_ms, pct=f_pct, bytes=f_bytes, secs=f_s, ratio=f_ratio, times=_times, median=stats.median,
        ci=_ci, ratio_ci=_ratio_ci,
    )  # fmt: skip
    return env


def _when(iso: str | None) -> str:
    if not iso:
        return "–"
    try:
        return datetime.fromisoformat(iso).strftime("%Y-%m-%d %H:%M:%S UTC")
    except ValueError:
        return iso


def _write(out: Path, html: str) -> Path:
    tmp = out.with_suffix(".html.tmp")
    tmp.write_text(html)
    tmp.replace(out)
    return out


def build_report(run_dir: Path, *, root: Path | None = None) -> Path:
    """Write ``run_dir/index.html`` from ``run_dir/results.json``; returns its path."""
    run_dir = run_dir.resolve()
    res = storage.load(run_dir)
    # where profiles/ and .benchmarks/ live: the given root, else the reports directory's parent, then the repository
    roots = [root.resolve()] if root else list(dict.fromkeys([run_dir.parent.parent, ROOT]))
    by_id = {c.id: c for c in res.cells}
    ceiling = res.ceiling_rps
    groups = [group_view(g, by_id, ceiling) for g in res.matrix.get("groups", [])]
    for g in groups:
        g["plot"] = group_plot(g["rows"], g["forwarding"]) if g["rows"] else None
    lat_rows = [cell_latency(c) for c in res.cells if c.summary]
    cells = [cell_view(c, res, roots, run_dir) for c in res.cells]
    for view, c in zip(cells, res.cells, strict=True):  # py-spy flame graphs of the measured repeats
        view["sampled"] = sampled_profiles(c, roots, run_dir, _stage_order(c))
    min_commits = int(res.matrix.get("min_commits", MIN_COMMITS_DEFAULT) or 0)
    html = (
        _env()
        .get_template("run.html")
        .render(
            res=res,
            created=_when(res.created),
            finished=_when(res.finished) if res.finished else None,
            head=headline(res),
            flags=flags(res, min_commits),
            groups=groups,
            cells=cells,
            latency=lat_rows,
            latency_plot=latency_plot(lat_rows) if lat_rows else None,
            ceiling=ceiling,
            micro=microbench(roots[0]),
            ci_target=res.matrix.get("ci_target"),
            min_commits=min_commits,
            confidence=stats.CONFIDENCE,
            rebuild=f"telemetry-bench report {shlex.quote(res.run_id)}",
            sampling_cost=sampling_cost(res),
            sampling_mode=res.matrix.get("sampling", "off"),
            sampling_hz=res.matrix.get("sampling_hz", DEFAULT_RATE_HZ),
            sampling_native=bool(res.matrix.get("sampling_native", True)),  # runs before the key: native frames
            sampling_max_cost=cost_analysis.MAX_COST,
            memory=memory_profile(res, roots, run_dir),
            scaling_plot=usl_plot(res.scaling) if res.scaling else None,
        )
    )
    return _write(run_dir / "index.html", html)


def build_index(reports_dir: Path) -> Path:
    """Write ``reports_dir/index.html``: every run (newest first) with its headline, and the comparisons."""
    reports_dir = reports_dir.resolve()
    runs = []
    for d in reversed(storage.run_dirs(reports_dir)):
        entry: dict[str, Any] = {"dir": d.name, "html": (d / "index.html").exists()}
        try:
            res = storage.load(d)
        except Exception as exc:  # an unreadable file is listed, not fatal
            entry["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160]}"
            runs.append(entry)
            continue
        entry.update(
            res=res,
            head=headline(res),
            created=_when(res.created),
            unstable=[c.id for c in res.cells if c.summary and c.summary.unstable],
        )
        runs.append(entry)
    comparisons = sorted(p.name for p in reports_dir.glob("compare-*.md"))
    html = _env().get_template("index.html").render(runs=runs, comparisons=comparisons)
    return _write(reports_dir / "index.html", html)
