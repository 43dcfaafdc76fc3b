"""The winner of each comparison (a matrix's ``[[groups]]``) and the sentence saying by how much — or that the
difference is within noise. Used by the HTML report and by the console at the end of a run.

- **Closed loop** (max rate): the winner is the highest median throughput among cells that did not fail their
  accounting; the sentence gives its margin over the runner-up with the interval of the ratio (``stats.beats``).
- **Open loop** (every cell offered a rate): throughput is pinned to the offered rate, so cells whose throughput is
  lower beyond noise fell behind, and the rest are ranked on median p99 latency (or, when the group forwards to the
  backend, on the backlog drain after the stream ended). Latency is compared only between open-loop cells.
"""

from __future__ import annotations

import re
from typing import Any

from experiments.analysis import stats
from experiments.analysis.fmt import f_ms
from experiments.measure.promql import prom_hist
from experiments.results.model import CellResult, counted, cpu_per_reading, failed, loop_of, p99s, throughputs
from harness.plan import PipelineConfig
from pipeline.queues import QUEUES


def _value(cell: CellResult, key: str) -> Any:
    """A group key's value in a cell: its plan's field, else what the matrix varied (a key outside the plan)."""
    return getattr(cell.params, key) if key in PipelineConfig.model_fields else cell.varied.get(key)


def label(cell: CellResult, keys: list[str]) -> str:
    parts = [f"{k}={_value(cell, k)}" for k in keys]
    text = ", ".join(parts) if parts else cell.id
    return text + (" (baseline)" if cell.id == "baseline" else "")


def group_rows(group: dict[str, Any], by_id: dict[str, CellResult], ceiling: float | None) -> list[dict[str, Any]]:
    """One row per cell of the group: its repeats' figures and their summaries."""
    keys = list(group.get("keys", []))
    rows: list[dict[str, Any]] = []
    for c in (by_id[i] for i in group.get("cells", []) if i in by_id):
        s = c.summary
        tps = throughputs(c)
        est = stats.estimate(tps)
        post = [prom_hist(r, "forward_request_seconds") for r in counted(c)]
        cpu = stats.estimate([x * 1e6 for r in counted(c) if (x := cpu_per_reading(r))])
        server = QUEUES[c.params.queue].broker or "redis" if c.params.queue in QUEUES else "redis"
        server_cpu = [x * 1e6 for r in counted(c) if (x := cpu_per_reading(r, only=server))]
        server_rss = [r.resources[server].peak_rss_bytes for r in counted(c) if server in r.resources]
        rows.append({
            "id": c.id, "label": label(c, keys), "cell": c, "tps": tps, "p99s": p99s(c),
            "p50s": [r.latency_ms.p50 for r in counted(c) if r.latency_ms.p50 is not None],
            "drains": [r.drain_s for r in counted(c)],
            "post_p50": stats.median(q.get("p50") for q in post), "post_p99": stats.median(q.get("p99") for q in post),
            "median": est.median, "ci": est.ci, "half_width": est.half_width,
            "min": min(tps) if tps else None, "max": max(tps) if tps else None,
            "cv": s.cv if s else None, "unstable": bool(s and s.unstable), "failed": failed(c),
            "fraction": (s.fraction_of_ceiling if s and s.fraction_of_ceiling else
                         (est.median or 0) / ceiling if ceiling and tps else None),
            "p50": s.latency_ms.p50 if s else None, "p99": s.latency_ms.p99 if s else None,
            "bottleneck": s.bottleneck.stage if s and s.bottleneck else None, "winner": False, "vs_best": None,
            "rate": c.params.rate or 0.0, "loop": loop_of(c.params),
            # CPU µs per committed reading, every process and server (median, 95 % interval over the repeats), and
            # the queue's server alone (Redis, nats-server, RabbitMQ): its share and its peak memory
            "cpu_us": cpu.median, "cpu_ci": cpu.ci, "server": server, "server_cpu_us": stats.median(server_cpu),
            "server_rss": stats.median(server_rss),
        })  # fmt: skip
    return rows


def group_view(group: dict[str, Any], by_id: dict[str, CellResult], ceiling: float | None) -> dict[str, Any]:
    rows = group_rows(group, by_id, ceiling)
    open_loop = bool(rows) and all(r["loop"] == "open" for r in rows)
    forwarding = open_loop and any(r["cell"].params.forwarding for r in rows)
    sentence, winner = verdict(rows, open_loop, forwarding)
    best = next((x for x in rows if x["id"] == winner), None)
    for r in rows:
        r["winner"] = r["id"] == winner
        if best and best["median"] and r["median"] is not None:
            r["vs_best"] = r["median"] / best["median"]
    return {
        "name": group.get("name", ""),
        "title": group.get("title", ""),
        "vary": list(group.get("keys", [])),
        "rows": rows,
        "queues": "queue" in group.get("keys", []),  # a queue comparison: each queue's server's CPU and memory
        "missing": [i for i in group.get("cells", []) if i not in by_id],
        "open_loop": open_loop,
        "mixed_loops": len({r["loop"] for r in rows}) > 1,
        "forwarding": forwarding,
        "sentence": sentence,
    }


def plain(sentence: str) -> str:
    """A verdict sentence without its HTML (for the console)."""
    return re.sub(r"<[^>]+>", "", sentence).replace("&amp;", "&")


def _times(r: float) -> str:
    return f"{r:,.2f}×" if r < 10 else f"{r:,.0f}×" if r >= 100 else f"{r:,.1f}×"


def _margin(d: stats.Ratio) -> str:
    """The margin: "2.40×" for large ratios, else "+5.5 % over"."""
    if d.ratio is None:
        return "–"
    return _times(d.ratio) if d.ratio >= 1.5 else f"{d.ratio - 1:+.1%} over".replace("%", " %")


def _ci(d: stats.Ratio) -> str:
    """ ", 95 % interval [2.1×, 2.7×]" (or of the change, for small ratios); empty without an interval."""
    if d.lo is None or d.hi is None:
        return ""
    if d.ratio is not None and d.ratio >= 1.5:
        return f", 95 % interval [{_times(d.lo)}, {_times(d.hi)}]"
    return f", 95 % interval [{d.lo - 1:+.1%}, {d.hi - 1:+.1%}]".replace("%", " %")


def _below_resolution(d: stats.Ratio, a: list[float], b: list[float]) -> str:
    """ " It is below this comparison's resolution (±x %): …" when the difference is smaller than the smallest
    these repeats could tell from noise (``stats.pair_mde``); empty otherwise or when the noise is unknown."""
    res = stats.pair_mde(stats.cv(a), len(stats.clean(a)), stats.cv(b), len(stats.clean(b)))
    if res is None or d.ratio is None or abs(d.ratio - 1.0) >= res:
        return ""
    return (
        f" The difference is below this comparison's resolution (±{res:.1%}, the smallest these repeats "
        "tell from noise 4 times in 5): more repeats or a paired design would be needed to rank them."
    ).replace("%", " %")


def verdict(rows: list[dict[str, Any]], open_loop: bool, forwarding: bool = False) -> tuple[str, str | None]:
    """The sentence naming the winner and by how much (with the interval), or saying the difference is within
    noise; and the winner's id."""
    failed_ = [r["label"] for r in rows if r["failed"]]
    note = f" Not ranked (failed their accounting): {', '.join(failed_)}." if failed_ else ""
    cands = [r for r in rows if not r["failed"] and r["tps"]]
    if len(cands) < 2:
        if cands:
            return f"Only <b>{cands[0]['label']}</b> has results to rank.{note}", cands[0]["id"]
        return f"No cell of this comparison has results.{note}", None
    by_tp = sorted(cands, key=lambda r: r["median"], reverse=True)
    if open_loop:
        return _open_loop(by_tp, forwarding, note)
    w, ru, last = by_tp[0], by_tp[1], by_tp[-1]
    d = stats.ratio(w["tps"], ru["tps"])
    if f"{w['median']:,.0f}" == f"{ru['median']:,.0f}":
        s = f"<b>{w['label']}</b> and {ru['label']} tie at {w['median']:,.0f} readings/s."
    else:
        lead = f"<b>{w['label']}</b> wins with {w['median']:,.0f} readings/s"
        if d.beyond_noise:
            s = f"{lead}, {_margin(d)} the runner-up {ru['label']} ({ru['median']:,.0f}/s{_ci(d)}) — beyond noise."
        elif d.beyond_noise is None:
            s = (f"{lead}, {_margin(d)} the runner-up {ru['label']} ({ru['median']:,.0f}/s) — one repeat each, "
                 "so the noise is unknown: treat as indicative.")  # fmt: skip
        else:
            s = (f"{lead}, {_margin(d)} the runner-up {ru['label']} ({ru['median']:,.0f}/s{_ci(d)}), but that "
                 f"difference is <b>within noise</b>: {w['label']} and {ru['label']} tie.")  # fmt: skip
            s += _below_resolution(d, w["tps"], ru["tps"])
    if last is not ru and last["median"]:
        s += f" Slowest: {last['label']} ({last['median']:,.0f}/s); the winner is "
        s += f"{_margin(stats.ratio(w['tps'], last['tps']))} it."
    return s + note, w["id"]


def _open_loop(by_tp: list[dict[str, Any]], forwarding: bool, note: str) -> tuple[str, str | None]:
    top = by_tp[0]
    kept = [r for r in by_tp if r is top or stats.ratio(top["tps"], r["tps"]).beyond_noise is not True]
    behind = [r for r in by_tp if r not in kept]
    behind_text = (
        " Fell behind the offered rate (committed readings/s lower beyond noise): "
        + ", ".join(f"{r['label']} ({r['median']:,.0f}/s)" for r in behind)
        + "."
        if behind
        else ""
    )
    key = "drains" if forwarding else "p99s"
    ranked = sorted([r for r in kept if r[key]], key=lambda r: stats.median(r[key]) or 0.0)

    def show(v: float) -> str:
        return f"{v:,.2f} s" if forwarding else f"{f_ms(v)} ms"

    what = "the shortest backlog drain after the stream ended" if forwarding else "the lowest p99 latency"
    if len(ranked) >= 2:
        w, ru = ranked[0], ranked[1]
        wv, rv = stats.median(w[key]) or 0.0, stats.median(ru[key]) or 0.0
        d = stats.ratio(ru[key], w[key])  # how much longer the runner-up's figure is
        lead = (f"<b>{w['label']}</b> wins: it commits {w['median']:,.0f} readings/s (offered "
                f"{w['rate']:,.0f}/s, open loop) with {what}, {show(wv)}")  # fmt: skip
        if show(wv) == show(rv):  # equal as shown: say so rather than name a winner
            metric = "backlog drain" if forwarding else "p99 latency"
            s = f"<b>{w['label']}</b> and {ru['label']} tie: both commit {w['median']:,.0f} readings/s (offered "
            s += f"{w['rate']:,.0f}/s) with the same {metric}, {show(wv)}."
        elif d.beyond_noise:
            s = f"{lead}; the runner-up {ru['label']} ({show(rv)}, longer by {d.text()}) — beyond noise."
        elif d.beyond_noise is None:
            s = f"{lead}, against {show(rv)} for the runner-up {ru['label']} — one repeat each: noise unknown."
        else:
            s = (f"{lead}; the runner-up {ru['label']} ({show(rv)}, {d.text()}) is <b>within noise</b> of it: "
                 "they tie.")  # fmt: skip
        return s + behind_text + note, w["id"]
    if ranked:
        w = ranked[0]
        lead = f"<b>{w['label']}</b> wins: the only cell keeping up ({w['median']:,.0f} readings/s)."
        return lead + behind_text + note, w["id"]
    return f"No cell of this comparison has latency to rank.{behind_text}{note}", None
