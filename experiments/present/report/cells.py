"""Per-cell views of the report: the cell's section (verdict, timeline, profiles, PostgreSQL), its latency row,
the flags to read first, and the headline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments.analysis import stats
from experiments.analysis.fmt import load_words
from experiments.analysis.headline import headline_of
from experiments.measure.promql import prom_hist
from experiments.present.report.plots import timeline_plot
from experiments.present.report.profiles import cell_profiles
from experiments.results.model import CellResult, Repeat, Results, counted, failed, loop_of


def cell_latency(cell: CellResult) -> dict[str, Any]:
    prom = [prom_hist(r, "latency_to_db_insert") for r in counted(cell)]
    s = cell.summary
    ex = s.latency_ms if s else None
    return {
        "id": cell.id,
        "loop": loop_of(cell.params),
        "exact": {"p50": ex.p50, "p95": ex.p95, "p99": ex.p99, "max": ex.max, "n": ex.n} if ex else {},
        "p99_ci": s.latency_p99_ci95 if s else None,
        "sent_p99": s.latency_sent_ms.p99 if s else None,
        "prom": {p: stats.median(q.get(p) for q in prom) for p in ("p50", "p95", "p99")},
    }


def representative(cell: CellResult) -> Repeat | None:
    """The repeat with the median throughput (the lower middle one for an even count)."""
    reps = [r for r in counted(cell) if r.throughput_rps is not None] or list(cell.repeats)
    if not reps:
        return None
    ordered = sorted(reps, key=lambda r: r.throughput_rps or 0.0)
    return ordered[(len(ordered) - 1) // 2]


def headline(res: Results) -> dict[str, Any]:
    """The best configuration (highest median throughput, not failed), its share of the ceiling, × the seed; and the
    two like-with-like ratios to the seed (full job, database only) with their intervals."""
    ok = [c for c in res.cells if c.summary and c.summary.throughput_rps and not failed(c)]
    h: dict[str, Any] = {"best": None, "cells": len(res.cells), "failed": [c.id for c in res.cells if failed(c)]}
    hl = headline_of(res) if not (res.headline.full_job_vs_seed or res.headline.db_only_vs_seed) else res.headline
    h.update(full_job=hl.full_job_vs_seed, db_only=hl.db_only_vs_seed)
    if not ok:
        return h
    best = max(ok, key=lambda c: c.summary.throughput_rps or 0.0 if c.summary else 0.0)
    assert best.summary is not None
    tp = best.summary.throughput_rps or 0.0
    ceiling = res.ceiling_rps
    seed = res.cell("seed")
    seed_tp = seed.summary.throughput_rps if seed and seed.summary else None
    bn = best.summary.bottleneck
    h.update(
        best=best.id,
        title=best.title,
        rps=tp,
        ci=best.summary.throughput_ci95,
        loop=loop_of(best.params),
        fraction=best.summary.fraction_of_ceiling or (tp / ceiling if ceiling else None),
        ceiling=ceiling,
        seed_rps=seed_tp,
        vs_seed=(tp / seed_tp) if seed_tp else None,
        seed_open_loop=bool(seed and loop_of(seed.params) == "open"),
        seed_rate=seed.params.rate if seed else None,
        seed_failed=bool(seed and failed(seed)),
        bottleneck=bn.stage if bn else None,
        bottleneck_reason=bn.reason if bn else None,
        cv=best.summary.cv,
    )
    return h


def _stage_order(cell: CellResult) -> list[str]:
    """The bottleneck's stage(s) first, then by CPU use during the window."""
    s = cell.summary
    rep = representative(cell)
    util = {k: (v.cpu_util_window or 0.0) for k, v in rep.resources.items()} if rep else {}
    stages = list(cell.profile.files) if cell.profile else []
    first = []
    if s and s.bottleneck:
        b = s.bottleneck.stage
        first = [st for st in stages if st == b or (b == "writer" and st.startswith("writer"))]
    rest = sorted((st for st in stages if st not in first), key=lambda st: -util.get(st, 0.0))
    busiest = sorted(util, key=lambda k: -util[k])
    return first + rest + [b for b in busiest if b not in first and b not in rest]


def flags(res: Results, min_commits: int) -> dict[str, list[dict[str, Any]]]:
    red, amber = [], []
    for c in res.cells:
        s = c.summary
        if failed(c):
            msgs: list[str] = []
            for r in c.repeats:
                msgs.extend(m for m in r.failures if m not in msgs)
            acct_ = f"lost {s.lost:,}, duplicated {s.duplicated:,} of {s.readings_generated:,} generated" if s else ""
            red.append({"cell": c.id, "kind": "FAILED accounting", "text": "; ".join([acct_, *msgs[:3]]).strip("; ")})
    for c in res.cells:
        s = c.summary
        if s and s.unstable:
            est = stats.estimate(r.throughput_rps for r in counted(c))
            hw = f"half-width ±{s.half_width:.1%}".replace("%", " %") if s.half_width is not None else "no interval"
            target = f" > target ±{s.ci_target:.0%}".replace("%", " %") if s.ci_target else ""
            cv = f"CV {s.cv * 100:.1f} %" if s.cv is not None else "CV –"
            red.append({
                "cell": c.id, "kind": "UNSTABLE" if len(counted(c)) > 1 else "NO INTERVAL",
                "text": f"{est.text()} readings/s: {hw}{target} after {s.repeats_taken or len(counted(c))} repeats "
                f"({s.stop_reason}); {cv}; min – max {s.throughput_min_rps or 0:,.0f} – "
                f"{s.throughput_max_rps or 0:,.0f}" + (f"; {s.stop_detail}" if s.stop_detail else ""),
            })  # fmt: skip
    if res.finished is None:
        amber.append({"cell": "run", "kind": "INCOMPLETE", "text": "the run has not finished (still running or "
                      "interrupted): this report shows the repeats written so far"})  # fmt: skip
    for c in res.cells:
        short = [r.index + 1 for r in counted(c) if not r.window_complete]
        if short:
            amber.append({"cell": c.id, "kind": "SHORT WINDOW", "text": f"repeat(s) {short} ended before "
                          "warm-up + measured window elapsed: throughput over a shorter window"})  # fmt: skip
        few = [r.index + 1 for r in counted(c) if r.window_commits and r.window_commits < min_commits]
        if few:
            amber.append({"cell": c.id, "kind": "FEW COMMITS", "text": f"repeat(s) {few}: the window spans fewer "
                          f"than {min_commits} commits (the run was too short to size it)"})  # fmt: skip
        if c.profile and c.profile.failures:
            amber.append({"cell": c.id, "kind": "PROFILED RUN FAILED", "text": "; ".join(c.profile.failures[:2])})
    return {"red": red, "amber": amber}


def _pg(cell: CellResult) -> dict[str, Any]:
    reps = counted(cell)
    per_row = [
        r.pg.table_bytes / r.accounting.committed
        for r in reps
        if r.pg.table_bytes is not None and r.accounting.committed
    ]
    cps = [r.pg.checkpoints for r in reps if r.pg.checkpoints is not None]
    return {
        "wal_per_reading": stats.median(r.pg.wal_bytes_per_reading for r in reps),
        "wal_bytes": stats.median(r.pg.wal_bytes for r in reps),
        "table_bytes": stats.median(r.pg.table_bytes for r in reps),
        "table_per_row": stats.median(per_row),
        "checkpoints": max(cps) if cps else None,
    }


def _params_line(cell: CellResult) -> str:
    p = cell.params
    rate = "max rate (closed loop)" if p.max_rate else f"{p.rate:,.0f}/s offered (open loop)"
    fwd = p.forwarder
    if p.forwarding:
        fwd = f"{fwd} POSTs ×{p.forward_batch} from {p.forward_from}"
    parts = [
        p.topology, f"{p.rpc} RPC ×{p.readings_per_message}", rate,
        f"{p.decoder} decode", f"{p.queue} queue ({p.queue_entry})",
        f"{p.sink} batch {p.batch_size or 0:,}",
        f"{p.workers} writer(s)", f"forward: {fwd}",
    ]  # fmt: skip
    if p.forwarding:  # the backend's behaviour matters only where readings reach it (the seed's or ours)
        parts.append(f"backend: {p.backend_behaviour}")
    return " · ".join(parts)


def cell_view(cell: CellResult, res: Results, roots: list[Path], run_dir: Path) -> dict[str, Any]:
    s = cell.summary
    rep = representative(cell)
    per_entry = cell.params.readings_per_message if cell.params.queue_entry == "batch" else 1
    order = _stage_order(cell)
    profiles = cell_profiles(cell, roots, run_dir, order)
    bn = s.bottleneck if s else None
    hot = None
    for p in profiles:  # the first stage in order (the bottleneck) with a readable profile
        t = p["tables"]
        if t and t.get("hottest"):
            hot = {"stage": p["stage"], **t["hottest"], "total": t["total"]}
            break
    util = (bn.evidence.get("cpu_util_window") if bn else None) or (
        {k: v.cpu_util_window for k, v in rep.resources.items() if v.cpu_util_window is not None} if rep else {}
    )
    return {
        "id": cell.id,
        "title": cell.title,
        "groups": cell.groups,
        "params": _params_line(cell),
        "s": s,
        "loop": loop_of(cell.params),
        "failed": failed(cell),
        "repeats": len(counted(cell)),
        "rep_index": rep.index + 1 if rep else None,
        "timeline": timeline_plot(rep, per_entry, res.machine.get("cpu_logical")) if rep else None,
        "per_entry": per_entry,
        "bottleneck": bn,
        "util": util,
        "profiles": profiles,
        "profiler": cell.profile.profiler if cell.profile else None,
        "hot": hot,
        "pg": _pg(cell),
        "cpu_us": s.cpu_s_per_reading * 1e6 if s and s.cpu_s_per_reading else None,
        "fraction": s.fraction_of_ceiling if s else None,
        "sink": cell.params.sink,
        "batch": cell.params.batch_size,
        "faults": fault_lines(cell),
    }


def fault_lines(cell: CellResult) -> list[str]:
    """One sentence per repeat of a fault cell: the fault, its recovery time, what it did, the expected loss."""
    out = []
    rec = cell.summary.recovery if cell.summary else None
    if rec is not None:
        dist = "none measured"
        if rec.median_s is not None and rec.max_s is not None and rec.min_s is not None:
            dist = f"median {rec.median_s:.2f} s, max {rec.max_s:.2f} s (min {rec.min_s:.2f} s)"
        when = f"at random moments (seed {rec.seed})" if rec.seed is not None else "at a fixed time"
        out.append(f"{rec.kind} {when}, injected in {rec.injected} of {rec.repeats} repeats, recovered in "
                   f"{rec.recovered}: recovery {dist}")  # fmt: skip
    if cell.load is not None:
        out.append(f"load: {load_words(cell.load)}")
    for r in cell.repeats:
        f = r.fault
        if f is None:
            continue
        label = f"repeat {r.index + 1}" if r.kind == "timed" else f"{r.kind} repeat"
        if not f.injected:
            out.append(f"{label}: {f.kind} {f.note or 'not injected'}")
            continue
        took = f.recovery_s
        drawn = f.drawn_from_s
        at = f"{f.at_s:g} s" + (f" (drawn from {drawn[0]:g}–{drawn[1]:g} s)" if drawn else "")
        line = f"{label}: {f.kind} at {at}, " + (
            f"recovered in {took:.2f} s" if took is not None else "the affected path never moved again"
        )
        a = r.accounting
        line += f"; generated {a.generated:,}, committed {a.committed:,}, lost {a.lost:,}"
        line += f", duplicated {a.duplicated:,}"
        if f.detail:
            line += f". {f.detail}"
        if r.expected_failures:
            line += " (this design's loss, expected and reported: " + "; ".join(r.expected_failures) + ")"
        out.append(line)
    return out
