"""The A/B statistics against independent computations and by simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import binomtest, chi2_contingency

from serving.attribution.report import BETTER, UNDECIDED, WORSE, build_report
from serving.attribution.stats import (
    bootstrap_means,
    minimum_detectable_effect,
    needed_per_variant,
    two_proportions,
    wilson,
)
from serving.attribution.store import METRICS, Totals


def test_z_test_p_value_is_the_chi_square_test_of_the_table() -> None:
    x1, n1, x2, n2 = 120, 1_000, 151, 1_050
    got = two_proportions("conversion", x1, n1, x2, n2, 0.95)
    table = [[x1, n1 - x1], [x2, n2 - x2]]
    _, p, _, _ = chi2_contingency(table, correction=False)
    assert got.p_value == pytest.approx(p, rel=1e-9)
    assert got.diff == pytest.approx(x2 / n2 - x1 / n1)
    assert got.ci_low < got.diff < got.ci_high


def test_wilson_matches_scipy() -> None:
    lo, hi = wilson(17, 230, 0.9)  # type: ignore[misc]
    ref = binomtest(17, 230).proportion_ci(0.9, method="wilson")
    assert (lo, hi) == pytest.approx((ref.low, ref.high), abs=1e-12)


def test_interval_of_the_difference_covers_the_truth_at_its_confidence() -> None:
    rng = np.random.default_rng(3)
    p1, p2, n = 0.2, 0.23, 2_000
    covered = 0
    for _ in range(400):
        x1, x2 = rng.binomial(n, p1), rng.binomial(n, p2)
        c = two_proportions("c", x1, n, x2, n, 0.9)
        covered += c.ci_low <= p2 - p1 <= c.ci_high
    assert 0.86 <= covered / 400 <= 0.94


def test_bootstrap_of_zero_inflated_revenue_covers_the_true_difference() -> None:
    rng = np.random.default_rng(5)
    n = 3_000
    covered, means = 0, []
    for rep in range(60):
        # converted with 10% / 12%, spending lognormal amounts: true means 0.1e and 0.12e
        v1 = rng.lognormal(2.0, 1.0, rng.binomial(n, 0.10))
        v2 = rng.lognormal(2.0, 1.0, rng.binomial(n, 0.12))
        c = bootstrap_means("r", v1, n, v2, n, 0.9, reps=1_000, seed=rep)
        truth = (0.12 - 0.10) * math.exp(2.0 + 0.5)
        covered += c.ci_low <= truth <= c.ci_high
        means.append(c.champion)
        assert c.champion == pytest.approx(v1.sum() / n)
    assert covered >= 48  # 90% nominal: 54 of 60 expected
    assert np.mean(means) == pytest.approx(0.10 * math.exp(2.5), rel=0.05)


def test_needed_traffic_detects_the_lift_with_the_stated_power() -> None:
    p, lift = 0.3, 0.10
    n = needed_per_variant(p, lift, 0.95, power=0.8)
    assert n is not None and 3_500 < n < 4_000  # textbook: ~3,760 for 30% -> 33%
    rng = np.random.default_rng(11)
    hits = sum(
        two_proportions("c", rng.binomial(n, p), n, rng.binomial(n, p * 1.1), n, 0.95).p_value
        < 0.05
        for _ in range(300)
    )
    assert 0.74 <= hits / 300 <= 0.86
    mde = minimum_detectable_effect(p, n, n, 0.95, 0.8)
    assert mde == pytest.approx(p * lift, rel=0.05)


def _totals(a: dict[str, float], b: dict[str, float]) -> Totals:
    pairs = (("champion", a), ("challenger", b))
    full = {v: {**dict.fromkeys(METRICS, 0.0), **c} for v, c in pairs}
    return Totals(counts={"1~2": full}, days={"1~2": {"20261207"}})


@pytest.mark.parametrize(
    ("converted_b", "verdict"), [(260, BETTER), (200, UNDECIDED), (150, WORSE)]
)
def test_verdict_follows_the_primary_test(converted_b: int, verdict: str) -> None:
    a = {"answers": 1_000, "converted": 200, "impressions": 900, "clicked": 300}
    b = {"answers": 1_000, "converted": converted_b, "impressions": 900, "clicked": 300}
    report = build_report(_totals(a, b))
    assert report["verdict"] == verdict
    assert report["variants"]["challenger"]["conversion"] == converted_b / 1_000
    assert report["experiment"] == "1~2" and report["challenger_version"] == "2"
    # the ctr test sees equal rates: no verdict on it
    assert build_report(_totals(a, b), metric="ctr")["verdict"] == UNDECIDED


def test_no_challenger_traffic_is_not_decidable() -> None:
    report = build_report(_totals({"answers": 500, "converted": 50}, {}))
    assert report["verdict"] == UNDECIDED
    assert report["power"]["needed_per_variant"] is not None
