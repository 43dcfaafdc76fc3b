"""The bottleneck verdict: which stage limited a repeat, from queue growth, CPU saturation and stage latencies
(the rules, in order, are in ARCHITECTURE.md › Experiments)."""

from __future__ import annotations

from typing import Any

import psutil

from experiments.measure.promql import quantiles
from pipeline.forwarders import FORWARDERS

SATURATED = 0.85  # cores: a single-threaded stage at ≥ 85 % of one core is CPU-bound
QUEUE_GROWTH = 0.05  # a queue growing by ≥ 5 % of the readings through it in the window: its consumer falls behind


PUBLISH_DELAY = "generator_publish_delay_seconds"


def _merged_p99(buckets: dict[str, dict[str, dict[str, float]]], kind: str, histogram: str) -> float | None:
    """p99 (ms) of ``histogram`` over every process of a stage kind (``generator``, ``generator-2``, …): their
    window buckets summed by le (a histogram merges exactly), then PromQL's quantile."""
    merged: dict[str, float] = {}
    for stage, hs in buckets.items():
        if stage.partition("-")[0] == kind and histogram in hs:
            for le, n in hs[histogram].items():
                merged[le] = merged.get(le, 0.0) + n
    p99 = quantiles(merged)["p99"] if merged else None
    return p99 * 1000.0 if p99 is not None else None


def bottleneck(
    cfg: Any,
    resources: dict[str, dict[str, Any]],
    growth: dict[str, float | None],
    throughput: float | None,
    window_s: float | None,
    prom_q: dict[str, dict[str, float | None]],
    prom_sums: dict[str, float],
    duration_s: float,
    buckets: dict[str, dict[str, dict[str, float]]] | None = None,
) -> dict[str, Any]:
    """Which stage limited the repeat, from queue growth, CPU saturation and stage latencies (documented rules).
    ``buckets``: stage → histogram → the window's buckets; the generators' publish delay is read off all of them
    merged (several generators: their buckets summed by le, exact), else off ``prom_q``'s first generator."""
    util = {n: r["cpu_util_window"] for n, r in resources.items() if r.get("cpu_util_window") is not None}
    total = sum(util.values())
    ev: dict[str, Any] = {
        "cpu_util_window": {k: round(v, 3) for k, v in util.items()},
        "cpu_util_total": round(total, 3),
        "queue_growth_per_s": growth,
        "machine_cores": psutil.cpu_count(),
    }
    tp = throughput or 0.0
    entry = cfg.readings_per_message if cfg.queue_entry == "batch" else 1
    # growth over the window, in readings, must exceed what batching alone moves the queue by, and be a real
    # share of what went through
    noise = max(QUEUE_GROWTH * tp * (window_s or 0.0), 2.0 * max(cfg.batch_size, entry))

    def grows(slope: float | None) -> bool:
        return slope is not None and slope * entry * (window_s or 0.0) > noise

    wq = growth.get("writer_queue")
    fq = growth.get("forward_queue")
    pub = _merged_p99(buckets, "generator", PUBLISH_DELAY) if buckets else None
    if pub is None:
        pub = prom_q.get(f"generator/{PUBLISH_DELAY}", {}).get("p99")
    ev["publish_delay_p99_ms"] = pub
    cores = psutil.cpu_count() or 1
    if cfg.topology == "node":
        node_util = util.get("node", 0.0)
        post_s = prom_sums.get("node/forward_request_seconds", 0.0)
        blocking = FORWARDERS[cfg.forwarder].blocks_event_loop  # the variant says whether its POSTs block the loop
        ev["node_time_in_blocking_posts"] = round(post_s / duration_s, 3) if blocking else None
        if blocking and duration_s > 0 and post_s / duration_s > 0.3:
            return {
                "stage": "node",
                "evidence": ev,
                "reason": f"one event loop spends {post_s / duration_s:.0%} of the run blocked in synchronous "
                "POSTs (requests.post per reading): every coroutine waits for them",
            }
        if node_util >= SATURATED:
            return {
                "stage": "node",
                "reason": f"the single process is CPU-bound ({node_util:.0%} of a core)",
                "evidence": ev,
            }
    if wq is not None and grows(wq):
        return {
            "stage": "writer",
            "evidence": ev,
            "reason": f"the writer queue grows by {wq * entry:,.0f} readings/s: the writer(s) and "
            f"PostgreSQL ({cfg.sink}, batch {cfg.batch_size}) can't keep up",
        }
    if fq is not None and grows(fq):
        return {
            "stage": "forwarder",
            "evidence": ev,
            "reason": f"the forward queue grows by {fq * entry:,.0f} readings/s: the {cfg.forwarder} "
            "forwarder and the backend can't keep up",
        }
    if total >= 0.9 * cores:
        busiest = max(util, key=lambda n: util[n]) if util else "machine"
        return {
            "stage": busiest,
            "evidence": ev,
            "reason": f"the machine's {cores} cores are saturated ({total:.2f} busy); {busiest} uses the most "
            f"({util.get(busiest, 0):.0%} of a core)",
        }
    if util:
        # a stage's share of the cores it can use: one per process, PostgreSQL one per writer connection
        share = {n: u / (max(1, cfg.workers) if n == "postgresql" else 1) for n, u in util.items()}
        busiest = max(share, key=lambda n: share[n])
        if share[busiest] >= SATURATED:
            return {
                "stage": busiest,
                "reason": f"{busiest} is CPU-bound ({share[busiest]:.0%} of the core(s) it can use)",
                "evidence": ev,
            }
    if not cfg.max_rate and pub is not None and pub > 100:
        # a late send is backpressure: gRPC flow control holds the generator while its subscriber does not read —
        # ingest itself, or ingest waiting at the queue's cap for the writers; the load source is not what binds
        return {
            "stage": "ingest",
            "evidence": ev,
            "reason": f"readings leave the generator late (publish delay p99 {pub:.0f} ms): ingest reads the stream "
            "too slowly (itself, or waiting at the queue's cap for the writers), without any stage saturating a core",
        }
    if not cfg.max_rate:
        return {
            "stage": "none",
            "evidence": ev,
            "reason": "kept up with the offered rate: no queue grew and no stage saturated a core",
        }
    # max rate and no rule fired: say so with the evidence, never a default stage
    top = max(util, key=lambda n: util[n]) if util else None
    shown = f"; the busiest was {top} at {util[top]:.0%} of a core" if top else ""
    return {
        "stage": "none found",
        "evidence": ev,
        "reason": f"no rule fired: no queue grew, no stage (PostgreSQL and Redis included) saturated its cores and "
        f"the machine had idle CPU{shown} — round trips between stages (latency), not a resource, set the pace",
    }
