"""The what-if experiment's analysis (issue 20): from repeats of a cell with one stage slowed on purpose, each stage's
**sensitivity**, and what a real speed-up of a stage would win. Pure functions of the repeats; scheduling is in
``experiments/run/whatif_runs.py``.

**Input.** Observations ``Obs(stage, x, y, order)``: ``x`` is the time added to ``stage`` per reading as a fraction
of that stage's own measured time per reading (0.25 = the stage made 25 % slower), ``y`` the repeat's throughput
(closed loop) or exact p99 (open loop, at a fixed offered rate), ``order`` its place in the run. Undelayed repeats
(``stage = BASELINE``, ``x = 0``) are interleaved with the delayed ones.

**Response.** Each delayed repeat is compared with the undelayed repeats next to it in run order (the nearest before
and after: drift of the machine between distant repeats cancels), ``ref``. For throughput the response is the
relative time per reading, ``ref / y − 1`` (0: no change; 0.25: the pipeline needs 25 % more time per reading);
for p99 it is ``y / ref − 1``. An undelayed repeat is compared with its undelayed neighbours the same way, so the
baseline's own noise enters the fit at x = 0.

**Sensitivity** ``s`` = d(response)/dx: the fraction of the pipeline's time per reading added per fraction of the
stage's time added. A stage alone on the critical path shows 1 (making it 10 % slower makes the pipeline 10 %
slower: throughput falls by 1 − 1/1.1 ≈ 9 %, ≈ s·x for small x); a stage with slack shows ≈ 0. Fitted by least
squares (intercept free: the baseline points anchor it), weighted 1 / (1 + r̂)² since the noise of ``ref / y − 1``
grows with the response (a halved throughput doubles it; unweighted, the interval of a bottleneck's slope held 1 in
88 % of synthetic runs, weighted in 94 %), its 95 % interval slope ± t(0.975, n − 2)·stderr (``scipy.stats``).

**Slack (a hinge).** A stage with slack shows ≈ 0 until its slack is used, then binds: response =
s_beyond · max(0, x − knee). Each tested amount but the largest is tried as the knee; the best (least squares) is
kept when an F-test says the bend explains the points better than a straight line (one extra parameter, 95 %) and
the slope beyond it is positive beyond noise. Then the stage's sensitivity at x = 0 — what a speed-up sees — is the
slope over the points up to the knee (≈ 0), and it is reported as "≈ 0 up to +knee, then s_beyond".

**Prediction.** Stage X made k faster (its time × (1 − k)) changes the pipeline's time per reading by −s·k, so
throughput gains s·k / (1 − s·k) (p99 falls by s·k), the interval from s's interval (the gain grows with s). It holds
until the next stage binds: a stage with slack up to +c of its time (its knee, or at least the largest amount tried
when it never bent) can carry (1 + c) × today's throughput, so the gain is capped at the smallest such c over the
other stages with slack (and at a measured stage ceiling ÷ throughput − 1 where one is given). Another sensitive
stage does not cap it: it shares the critical path (a synchronous wait, or the same cores), where savings add.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats as sps

from experiments.results.model import Bottleneck, Repeat, StageFit, WhatIf, WhatIfPrediction, WhatIfRun
from harness.plan import PipelineConfig

CONFIDENCE = 0.95
BASELINE = "baseline"  # the stage name of an undelayed repeat
VARIANT = "variant"  # a repeat of a real faster variant: "variant:<knob>=<value>"
RULED_OUT = 0.5  # a stage is ruled out as the bottleneck when its whole interval lies below this sensitivity

# what each delay knob slows, in words (the knob is ``delay_<stage>_us``)
STAGE_WORDS = {
    "generator": "the generator's send",
    "ingest": "ingest's decode",
    "queue": "the queue put",
    "writer": "the writer's database write",
    "forwarder": "the forwarder's POST",
    "backend": "the backend's handler",
    "node": "the node's loop",
}


@dataclass(frozen=True)
class Obs:
    stage: str  # BASELINE for an undelayed repeat
    x: float  # added time ÷ the stage's own time per reading (0 for BASELINE)
    y: float  # throughput (readings/s) or p99 (ms)
    order: int  # position in the run (the pairing with undelayed neighbours)


@dataclass(frozen=True)
class Line:
    """A least-squares line with the slope's 95 % interval (None where it cannot be estimated)."""

    slope: float
    lo: float | None
    hi: float | None
    intercept: float
    sse: float
    n: int

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]


@dataclass(frozen=True)
class Sensitivity:
    stage: str
    s: float  # at x = 0: the slope a speed-up sees (the first segment's when a knee was found)
    lo: float | None
    hi: float | None
    linear: Line  # the straight line over every point
    knee: float | None = None  # a hinge: no effect up to +knee of the stage's time …
    beyond: Line | None = None  # … then this slope
    n: int = 0  # delayed repeats of this stage
    max_x: float = 0.0  # the largest amount tried
    points: list[tuple[float, float]] = field(default_factory=list)  # (x, response) of the fit, baselines included

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]

    @property
    def sensitive(self) -> bool:
        """Sensitive beyond noise: the interval of ``s`` lies wholly above 0."""
        return self.lo is not None and self.lo > 0

    @property
    def headroom(self) -> float:
        """How much slower the stage can get before it binds, as a fraction of its time: its knee, or (no effect
        seen) at least the largest amount tried; 0 for a sensitive stage."""
        if self.sensitive:
            return 0.0
        return self.knee if self.knee is not None else self.max_x

    def text(self) -> str:
        """ "0.97 [0.85, 1.09]", "≈ 0 up to +25 %, then 0.91 [0.7, 1.1]", "0.02 [−0.05, 0.09]"."""
        if self.knee is not None and self.beyond is not None:
            return f"≈ 0 up to {_pct(self.knee)}, then {_num(self.beyond.slope, self.beyond.lo, self.beyond.hi)}"
        return _num(self.s, self.lo, self.hi)


@dataclass(frozen=True)
class Prediction:
    stage: str
    k: float  # the stage's time × (1 − k)
    gain: float  # relative change of throughput (+0.14 = 14 % more); of p99 for a latency fit (−0.1 = 10 % lower)
    lo: float | None
    hi: float | None
    cap: float | None = None  # the gain cannot exceed this: the next stage binds there
    capped_by: str | None = None  # which stage (or "ceiling:<stage>") sets the cap
    capped: bool = False  # the point (or interval) was cut at the cap
    metric: str = "throughput"

    @property
    def ci(self) -> list[float] | None:
        return None if self.lo is None or self.hi is None else [self.lo, self.hi]


# ------------------------------------------------------------------------------------------------- the fit
def responses(obs: Sequence[Obs], metric: str = "throughput") -> list[tuple[Obs, float]]:
    """Each observation with its response against its undelayed neighbours in run order (see the docstring)."""
    base = sorted((o for o in obs if o.stage == BASELINE), key=lambda o: o.order)
    if not base:
        raise ValueError("what-if: no undelayed repeat to compare with")
    out = []
    for o in obs:
        others = [b for b in base if b is not o] or base
        before = [b for b in others if b.order < o.order]
        after = [b for b in others if b.order > o.order]
        near = ([before[-1]] if before else []) + ([after[0]] if after else [])
        ref = sum(b.y for b in near) / len(near)
        if ref <= 0 or o.y <= 0:
            continue
        out.append((o, ref / o.y - 1.0 if metric == "throughput" else o.y / ref - 1.0))
    return out


def line(
    xs: Sequence[float], ys: Sequence[float], weights: Sequence[float] | None = None, confidence: float = CONFIDENCE
) -> Line | None:
    """Least squares (``scipy.stats.linregress``; weighted least squares with ``weights``) with the slope's t
    interval, slope ± t(0.975, n − 2)·stderr; None with fewer than two distinct x."""
    if len(xs) < 2 or len(set(xs)) < 2:
        return None
    n = len(xs)
    if weights is None:
        r = sps.linregress(xs, ys)
        slope, intercept, se = float(r.slope), float(r.intercept), float(r.stderr)
        sse = float(sum((y - (intercept + slope * x)) ** 2 for x, y in zip(xs, ys, strict=True)))
    else:
        x, y, w = np.asarray(xs, float), np.asarray(ys, float), np.asarray(weights, float)
        design = np.column_stack([np.ones(n), x])
        xtw = design.T * w
        inv = np.linalg.inv(xtw @ design)
        intercept, slope = (float(b) for b in inv @ (xtw @ y))
        sse = float((w * (y - intercept - slope * x) ** 2).sum())
        se = math.sqrt(sse / (n - 2) * inv[1, 1]) if n > 2 else math.nan
    if n < 3 or not math.isfinite(se):
        return Line(slope, None, None, intercept, sse, n)
    half = float(sps.t.ppf(0.5 + confidence / 2, n - 2)) * se
    return Line(slope, slope - half, slope + half, intercept, sse, n)


def _weights(xs: Sequence[float], ys: Sequence[float]) -> list[float] | None:
    """Multiplicative noise: a response of r has noise ∝ (1 + r), so the points are weighted 1 / (1 + r̂)², r̂ from an
    ordinary fit (with a throughput halved, its repeats' noise doubles in ref / y − 1)."""
    first = line(xs, ys)
    if first is None:
        return None
    return [1.0 / (1.0 + max(0.0, first.intercept + first.slope * x)) ** 2 for x in xs]


def _hinge(xs: list[float], ys: list[float], w: list[float] | None, linear: Line) -> tuple[float, Line] | None:
    """The best knee among the tested amounts (not the largest), kept when it explains the points better than the
    straight line beyond noise (F-test, one extra parameter) and the slope beyond it is positive beyond noise."""
    amounts = sorted({x for x in xs if x > 0})
    n = len(xs)
    if len(amounts) < 2 or n < 5:
        return None
    best: tuple[float, Line] | None = None
    for knee in amounts[:-1]:
        h = [max(0.0, x - knee) for x in xs]
        fit = line(h, ys, w)
        if fit is not None and (best is None or fit.sse < best[1].sse):
            best = (knee, fit)
    if best is None or best[1].lo is None or best[1].lo <= 0:
        return None
    sse_h = best[1].sse
    if sse_h <= 0:
        return best if linear.sse > 0 else None
    f = (linear.sse - sse_h) / (sse_h / (n - 3))
    return best if f > float(sps.f.ppf(CONFIDENCE, 1, n - 3)) else None


def sensitivity(obs: Sequence[Obs], stage: str, metric: str = "throughput") -> Sensitivity | None:
    """One stage's sensitivity from the observations (its delayed repeats and every undelayed one)."""
    pairs = [(o.x if o.stage == stage else 0.0, r) for o, r in responses(obs, metric) if o.stage in (stage, BASELINE)]
    delayed = [o for o in obs if o.stage == stage]
    xs, ys = [p[0] for p in pairs], [p[1] for p in pairs]
    w = _weights(xs, ys)
    linear = line(xs, ys, w)
    if linear is None:
        return None
    max_x = max((o.x for o in delayed), default=0.0)
    hinge = _hinge(xs, ys, w, linear)
    if hinge is not None:
        knee, beyond = hinge
        first = [i for i, x in enumerate(xs) if x <= knee]
        local = line([xs[i] for i in first], [ys[i] for i in first], [w[i] for i in first] if w else None)
        if local is not None:
            return Sensitivity(stage, local.slope, local.lo, local.hi, linear, knee, beyond, len(delayed), max_x, pairs)
    return Sensitivity(stage, linear.slope, linear.lo, linear.hi, linear, None, None, len(delayed), max_x, pairs)


def sensitivities(obs: Sequence[Obs], metric: str = "throughput") -> list[Sensitivity]:
    """Every delayed stage's sensitivity, most sensitive first (ranked on ``s``; slopes beyond a knee after)."""
    stages = sorted({o.stage for o in obs if o.stage != BASELINE})
    fits = [f for st in stages if (f := sensitivity(obs, st, metric)) is not None]
    return sorted(fits, key=lambda f: (f.s, f.beyond.slope if f.beyond else 0.0), reverse=True)


# ------------------------------------------------------------------------------------------ the prediction
def _gain(s: float, k: float, metric: str) -> float:
    if metric != "throughput":
        return -s * k  # p99 changes by −s·k
    drop = min(s * k, 0.999)  # the time per reading cannot fall to zero
    return drop / (1.0 - drop)


def predict(
    fits: Sequence[Sensitivity],
    stage: str,
    k: float,
    *,
    metric: str = "throughput",
    ceilings: Mapping[str, float] | None = None,
    throughput: float | None = None,
) -> Prediction:
    """Throughput (or p99) if ``stage`` were ``k`` faster (its time × (1 − k)), capped where the next stage binds:
    the smallest headroom of the other stages (see the module's docstring), and a measured stage ceiling ÷
    ``throughput`` − 1 where ``ceilings`` (stage → readings/s, each stage alone) and ``throughput`` are given."""
    if not 0 < k < 1:
        raise ValueError(f"what-if: k = {k}: a speed-up is a fraction of the stage's time, 0 < k < 1")
    fit = next((f for f in fits if f.stage == stage), None)
    if fit is None:
        raise ValueError(f"what-if: no fit for stage {stage!r}; stages: {', '.join(f.stage for f in fits)}")
    gain = _gain(fit.s, k, metric)
    lo = None if fit.lo is None else _gain(fit.lo, k, metric)
    hi = None if fit.hi is None else _gain(fit.hi, k, metric)
    if metric != "throughput" and lo is not None and hi is not None:
        lo, hi = min(lo, hi), max(lo, hi)
    # a stage with slack binds once the speed-up uses its slack; another *sensitive* stage does not cap: it is on the
    # same critical path (the seed's node waits on the backend's answer; stages sharing two cores share their CPU),
    # so the time saved adds up rather than moving the bottleneck to it
    caps = [(f.headroom, f.stage) for f in fits if f.stage != stage and not f.sensitive]
    if ceilings and throughput:
        caps += [(c / throughput - 1.0, f"ceiling:{st}") for st, c in ceilings.items() if st != stage and c > 0]
    cap, by = min(caps, default=(None, None))
    capped = False
    if metric == "throughput" and cap is not None:
        cap = max(cap, 0.0)
        capped = gain > cap or (hi is not None and hi > cap)
        gain = min(gain, cap)
        lo = None if lo is None else min(lo, cap)
        hi = None if hi is None else min(hi, cap)
    return Prediction(stage, k, gain, lo, hi, cap if metric == "throughput" else None, by, capped, metric)


# -------------------------------------------------------------------------------------------- in words
def _pct(v: float) -> str:
    return f"{v * 100:+.0f} %".replace("-", "−")


def _num(v: float, lo: float | None, hi: float | None) -> str:
    def f(a: float) -> str:
        return f"{a:.2f}".replace("-", "−")

    return f(v) + ("" if lo is None or hi is None else f" [{f(lo)}, {f(hi)}]")


def words(stage: str) -> str:
    return STAGE_WORDS.get(stage, stage)


def shares_pace(top_lo: float | None, sensitive: bool, hi: float | None) -> bool:
    """A sensitive stage whose interval reaches the most sensitive stage's lower bound: the data cannot rank the
    two, so they share the pace (on 2 cores, often stages that compete for the same CPU)."""
    return sensitive and top_lo is not None and hi is not None and hi >= top_lo


def shared_pace(fits: Sequence[Sensitivity]) -> list[Sensitivity]:
    """The other stages that share the pace with the most sensitive one (``shares_pace``)."""
    if not fits or not fits[0].sensitive:
        return []
    return [f for f in fits[1:] if shares_pace(fits[0].lo, f.sensitive, f.hi)]


def shared_words(fits: Sequence[Sensitivity]) -> str:
    """ "the writer's database write shares the pace with ingest's decode (0.24 [0.12, 0.36]) …", or ""."""
    others = shared_pace(fits)
    if not others:
        return ""
    named = " and ".join(f"{words(f.stage)} ({f.text()})" for f in others)
    return (f"{words(fits[0].stage)} ({fits[0].text()}) shares the pace with {named}: their intervals overlap, so "
            "no one of them is the bottleneck alone")  # fmt: skip


def sentence(fits: Sequence[Sensitivity], k: float = 0.2, *, metric: str = "throughput",
             ceilings: Mapping[str, float] | None = None, throughput: float | None = None) -> str:  # fmt: skip
    """The one sentence a reader can act on: what speeding up the most sensitive stage by ``k`` would win (with its
    interval), and the least sensitive stage that would not change it."""
    if not fits:
        return "no stage was slowed: nothing to say"
    top = fits[0]
    what = "throughput" if metric == "throughput" else "p99 latency"
    if not top.sensitive:
        if any(f.hi is None or f.hi >= RULED_OUT for f in fits):
            return (f"cannot tell yet which stage sets the pace: no stage is sensitive beyond noise, but the intervals "
                    f"are too wide to rule one out (most sensitive: {words(top.stage)}, {top.text()})")  # fmt: skip
        return (f"no stage is sensitive beyond noise: slowing any of them by up to {_pct(max(f.max_x for f in fits))} "
                f"of its time did not change {what} (most sensitive: {words(top.stage)}, {top.text()})")  # fmt: skip
    p = predict(fits, top.stage, k, metric=metric, ceilings=ceilings, throughput=throughput)
    verb = "raise throughput" if metric == "throughput" else "lower p99"
    size = abs(p.gain)
    interval = "" if p.lo is None or p.hi is None else f" [{_pct(p.lo).lstrip('+')}, {_pct(p.hi).lstrip('+')}]"
    if metric != "throughput" and p.lo is not None and p.hi is not None:
        interval = f" [{abs(p.hi) * 100:.0f} %, {abs(p.lo) * 100:.0f} %]"
    out = f"speeding up {words(top.stage)} by {k * 100:.0f} % would {verb} by about {size * 100:.0f} %{interval}"
    if p.capped and p.capped_by:
        out += f" (capped where {p.capped_by.removeprefix('ceiling:')} binds)"
    slack = [f for f in fits if not f.sensitive and f.stage != top.stage]
    if slack:
        least = min(slack, key=lambda f: (f.knee is not None, abs(f.s)))  # no effect at any amount tried first
        out += f"; speeding up {words(least.stage)} would not change it (sensitivity {least.text()})"
    shared = shared_words(fits)
    return f"{shared}; {out}" if shared else out


def fits_of(points: Iterable[tuple[str, float, float, int]], metric: str = "throughput") -> list[Sensitivity]:
    """``sensitivities`` from (stage, x, y, order) tuples."""
    return sensitivities([Obs(*p) for p in points], metric)


# ------------------------------------------------------------------------------ the record of one experiment
def observations(runs: Sequence[WhatIfRun], metric: str) -> list[Obs]:
    """The fit's observations from the experiment's repeats (failed repeats and the variant's left out)."""
    out = []
    for r in runs:
        y = r.throughput_rps if metric == "throughput" else r.p99_ms
        if r.ok and y and not r.stage.startswith(VARIANT):
            out.append(Obs(r.stage, r.fraction, y, r.order))
    return out


def stage_fit(f: Sensitivity, time_us: float | None) -> StageFit:
    return StageFit(
        stage=f.stage, words=words(f.stage), time_us=time_us, s=f.s, ci95=f.ci, sensitive=f.sensitive, knee=f.knee,
        beyond=f.beyond.slope if f.beyond else None, beyond_ci95=f.beyond.ci if f.beyond else None, repeats=f.n,
        max_fraction=f.max_x, text=f.text(),
    )  # fmt: skip


def what_binds(params: PipelineConfig, baseline: Sequence[Repeat], fractions: Sequence[float]) -> str:
    """When no stage is sensitive: what else sets the pace, with the evidence of the undelayed repeats."""
    most = f"{max(fractions, default=0) * 100:.0f} %"
    if not params.max_rate:
        return (f"nothing binds at the offered {params.rate:,} readings/s: slowing any stage by up to {most} of its "
                "time did not change throughput or p99 beyond noise (the pipeline has headroom)")  # fmt: skip
    per_entry = params.readings_per_message if params.queue_entry == "batch" else 1
    cap = params.effective_queue_cap
    depths = [v[1] * per_entry for r in baseline for v in r.queue_len.get("bench:queue", [])]
    at_cap = [d for d in depths if d >= 0.8 * cap]
    cpu = [sum(s.cpu_util_window or 0.0 for s in r.resources.values()) for r in baseline]
    busy = f"{statistics.median(cpu):.2f} cores busy" if cpu else "CPU not measured"
    if depths and len(at_cap) >= 0.5 * len(depths):
        return (f"the queue's cap: the writer queue held ≥ 80 % of its cap ({cap:,} readings) in "
                f"{len(at_cap) / len(depths):.0%} of the samples, so ingest waits at it; slowing any stage by up to "
                f"{most} of its time changed nothing beyond noise ({busy}): the writers' round trips to PostgreSQL "
                "(commit latency, not CPU) set the pace")  # fmt: skip
    return (f"the in-flight bound: at max rate at most {params.buffer_readings:,} readings wait in the generator and "
            f"{cap:,} in the queue, and slowing any stage by up to {most} of its time changed nothing beyond noise "
            f"({busy}): the round trips between stages (gRPC flow control, queue polls, commits), not a stage's "
            "work, set the pace")  # fmt: skip


def analyse(
    w: WhatIf,
    params: PipelineConfig,
    baseline: Sequence[Repeat],
    *,
    k: float = 0.2,
    ceilings: Mapping[str, float] | None = None,
) -> WhatIf:
    """Fill ``w``'s fits, bottleneck (or what binds), the comparison with the static verdict and the sentence from
    its runs. ``baseline``: the undelayed repeats (their evidence, for ``what_binds``)."""
    obs = observations(w.runs, w.metric)
    fits = sensitivities(obs, w.metric) if any(o.stage == BASELINE for o in obs) else []
    w.fits = [stage_fit(f, w.stage_time_us.get(f.stage)) for f in fits]
    base = [o.y for o in obs if o.stage == BASELINE]
    tp = statistics.median(base) if base and w.metric == "throughput" else None
    top = fits[0] if fits else None
    wide = [f for f in fits if f.hi is None or f.hi >= RULED_OUT]
    if top is not None and top.sensitive:
        w.bottleneck, w.what_binds = top.stage, None
    elif not fits:
        w.bottleneck, w.what_binds = "cannot tell", "no repeat to fit yet"
    elif wide:
        widest = max(wide, key=lambda f: (f.hi or math.inf) - (f.lo or -math.inf))
        w.bottleneck = "cannot tell"
        w.what_binds = (
            f"no stage is sensitive beyond noise, but the intervals are too wide to rule one out (e.g. "
            f"{words(widest.stage)}: {widest.text()}, which holds {RULED_OUT:g} and more): take more repeats "
            "(--repeats) or run on a quieter machine"
        )
    else:
        w.bottleneck = "none"
        w.what_binds = what_binds(params, baseline, w.fractions)
    w.sentence = sentence(fits, k, metric=w.metric, ceilings=ceilings, throughput=tp) if fits else None
    w.agreement = agreement(w.static_verdict, w.bottleneck, w.fits)
    for p in w.predictions:
        _check(p, fits, w.metric, ceilings, tp)
    return w


def agreement(static: str | None, experiment: str | None, fits: Sequence[StageFit]) -> str:
    """The static rules' verdict beside the experiment's, and which the evidence supports."""
    fit = {f.stage: f for f in fits}
    top = fit.get(experiment or "")
    if static is None:
        return f"the experiment names {experiment}; no static verdict to compare"
    said = fit.get("writer" if static == "postgresql" else static)
    slowed = f" (slowing {static} itself: sensitivity {said.text})" if said else ""
    if experiment == "cannot tell":
        return f"the static rules said {static}{slowed}; the experiment cannot tell yet"
    if top is None:  # no stage sensitive
        if static in ("none", "none found"):
            return (f"the static rules found no stage ({static}) and the experiment agrees no stage is sensitive; "
                    "it says what binds instead")  # fmt: skip
        return (f"they disagree: the static rules said {static}, but slowing no stage slowed the pipeline{slowed}. "
                "The experiment is the evidence: it changed each stage and measured what the pipeline lost; the "
                "static rules infer from CPU shares and queue slopes")  # fmt: skip
    exp = f"{experiment} (sensitivity {top.text})"
    if static == experiment or (static == "postgresql" and experiment == "writer"):
        return f"the static rules ({static}) and the experiment ({exp}) agree"
    return (f"they disagree: the static rules said {static}, the experiment names {exp}{slowed}. The experiment "
            "is the evidence: it changed each stage and measured what the pipeline lost; the static rules infer "
            "from CPU shares and queue slopes")  # fmt: skip


def _check(p: WhatIfPrediction, fits: Sequence[Sensitivity], metric: str, ceilings: Mapping[str, float] | None,
           tp: float | None) -> None:  # fmt: skip
    """A variant's prediction (from its measured k and the stage's sensitivity) beside its measured change."""
    if p.k is None or not any(f.stage == p.stage for f in fits):
        p.text = f"{p.stage}: no prediction (no fit, or the variant's stage time was not measured)"
        return
    meas = (
        "–"
        if p.measured is None
        else _pct(p.measured)
        + (f" [{_pct(p.measured_ci95[0])}, {_pct(p.measured_ci95[1])}]" if p.measured_ci95 else " (noise unknown)")
    )
    if p.k <= 0:
        p.text = (f"the variant {p.variant} did not make {words(p.stage)} faster (its time per reading changed by "
                  f"{-p.k * 100:+.0f} %): nothing to predict; throughput measured {meas}")  # fmt: skip
        return
    pr = predict(fits, p.stage, min(p.k, 0.95), metric=metric, ceilings=ceilings, throughput=tp)
    p.predicted, p.predicted_ci95, p.cap, p.capped_by = pr.gain, pr.ci, pr.cap, pr.capped_by
    if p.measured_ci95 and p.predicted_ci95:
        p.agree = p.measured_ci95[0] <= p.predicted_ci95[1] and p.predicted_ci95[0] <= p.measured_ci95[1]
    pred = f"{_pct(pr.gain)}" + (f" [{_pct(pr.lo)}, {_pct(pr.hi)}]" if pr.lo is not None and pr.hi is not None else "")
    verdict = {True: "the intervals overlap", False: "the intervals do not overlap", None: "noise unknown"}[p.agree]
    p.text = (f"{', '.join(f'{a} = {b}' for a, b in p.variant.items())}: {words(p.stage)} {p.k * 100:.0f} % less time "
              f"per reading → predicted {pred}, measured {meas} ({verdict})")  # fmt: skip


def bottleneck(w: WhatIf, static: Bottleneck | None) -> Bottleneck:
    """The cell's verdict from its what-if run: the most sensitive stage with its sensitivity and interval, or —
    no stage sensitive — what else binds (never "none found"); the static rules' verdict kept in the evidence."""
    fit = next((f for f in w.fits if f.stage == w.bottleneck), None)
    evidence: dict[str, Any] = {
        "by": "experiment",
        "sensitivities": {f.stage: {"s": f.s, "ci95": f.ci95, "knee": f.knee} for f in w.fits},
        "static": static.model_dump() if static else None,
    }
    if fit is not None:
        lo = fit.ci95[0] if fit.ci95 else None
        others = [f for f in w.fits if f.stage != fit.stage]
        shared = [f for f in others if shares_pace(lo, f.sensitive, f.ci95[1] if f.ci95 else None)]
        evidence["shared_with"] = [f.stage for f in shared]
        share = (f"; it shares the pace with {' and '.join(f'{f.words} ({f.text})' for f in shared)}: their "
                 "intervals overlap, so no one of them is the bottleneck alone" if shared else "")  # fmt: skip
        reason = (f"by experiment: slowing {words(fit.stage)} slows the pipeline (sensitivity {fit.text}){share}; "
                  f"{w.agreement}")  # fmt: skip
        return Bottleneck(stage=fit.stage, reason=reason, evidence=evidence)
    binds = w.what_binds or "no stage was sensitive"
    stage = (
        "cannot tell" if w.bottleneck == "cannot tell"
        else "queue cap" if binds.startswith("the queue's cap")
        else "in-flight bound" if binds.startswith("the in-flight bound")
        else "none"
    )  # fmt: skip
    return Bottleneck(stage=stage, reason=f"by experiment: {binds}; {w.agreement}", evidence=evidence)
