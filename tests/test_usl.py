"""The Universal Scalability Law fit (experiments/analysis/usl.py) recovers known coefficients with intervals that
hold them, and declines to fit what does not determine a curve."""

from __future__ import annotations

import random

import pytest

pytest.importorskip("scipy", reason="scipy is not installed: pip install 'telemetry-bench[cluster]'")

from experiments.analysis.usl import fit, usl

LAM, SIGMA, KAPPA = 1000.0, 0.08, 0.004


def test_fit_recovers_known_coefficients_within_its_intervals() -> None:
    rng = random.Random(23)
    points = [(n, usl(n, LAM, SIGMA, KAPPA) * (1 + rng.gauss(0, 0.01))) for n in range(1, 13) for _ in range(3)]
    f = fit(points)
    assert f is not None and f["points"] == 36 and f["df"] == 33
    for name, true in (("lam", LAM), ("sigma", SIGMA), ("kappa", KAPPA)):
        lo, hi = f[name]["ci95"]
        assert lo <= true <= hi, (name, f[name])
    assert f["peak_n"] == pytest.approx(((1 - SIGMA) / KAPPA) ** 0.5, rel=0.2)
    assert f["curve"][0][0] == 1 and len(f["curve"]) == 61


def test_linear_scaling_fits_no_contention_and_no_peak() -> None:
    f = fit([(n, 500.0 * n) for n in (1, 2, 3, 4) for _ in range(2)])
    assert f is not None
    assert f["sigma"]["value"] == pytest.approx(0, abs=1e-6) and f["kappa"]["value"] == pytest.approx(0, abs=1e-6)
    assert f["lam"]["value"] == pytest.approx(500, rel=1e-6)


def test_too_few_points_or_steps_no_fit() -> None:
    assert fit([(1, 100.0), (2, 190.0), (3, 260.0)]) is None  # 3 points: no degree of freedom left
    assert fit([(1, 100.0), (1, 101.0), (2, 190.0), (2, 191.0)]) is None  # 2 distinct N
