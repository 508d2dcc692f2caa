"""Unconditional BG/NBD expectations used by the tracking plot (features.clv)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import special

from features import clv

PUBLISHED = clv.BGNBD(r=0.2426, alpha=4.4136, a=0.7929, b=2.4259, log_likelihood=-9582.43)


def _direct(p: clv.BGNBD, t: float) -> float:
    """FHL 2005 eq. 7 written literally (no Euler transformation)."""
    z = t / (p.alpha + t)
    h = special.hyp2f1(p.r, p.b, p.a + p.b - 1.0, z)
    return float((p.a + p.b - 1.0) / (p.a - 1.0) * (1.0 - (p.alpha / (p.alpha + t)) ** p.r * h))


@pytest.mark.parametrize("t", [0.5, 1.0, 10.0, 39.0, 78.0])
def test_matches_equation_7(t: float) -> None:
    got = clv.expected_repeat_transactions_new(PUBLISHED, t)
    assert float(got) == pytest.approx(_direct(PUBLISHED, t), rel=1e-9)


def test_is_the_conditional_expectation_of_a_brand_new_customer() -> None:
    t = np.array([1.0, 13.0, 52.0])
    zeros = np.zeros(1)
    cond = [float(clv.expected_transactions(PUBLISHED, ti, zeros, zeros, zeros)[0]) for ti in t]
    np.testing.assert_allclose(clv.expected_repeat_transactions_new(PUBLISHED, t), cond)


def test_zero_at_start_and_increasing() -> None:
    t = np.linspace(-2.0, 100.0, 400)
    ex = clv.expected_repeat_transactions_new(PUBLISHED, t)
    assert ex.shape == t.shape
    assert np.all(ex[t <= 0] == 0.0)
    assert np.all(np.diff(ex) >= 0) and ex[-1] > 0


def test_agrees_with_simulated_bgnbd_customers() -> None:
    """Monte Carlo: lambda ~ Gamma(r, alpha), p ~ Beta(a, b), drop-out after each repeat buy."""
    rng = np.random.default_rng(7)
    p = clv.BGNBD(r=0.8, alpha=6.0, a=0.9, b=3.0, log_likelihood=0.0)
    n, t = 400_000, 30.0
    lam = rng.gamma(p.r, 1.0 / p.alpha, n)
    drop = rng.beta(p.a, p.b, n)
    purchases_until_dropout = rng.geometric(drop)  # the repeat purchase after which they leave
    x = np.minimum(rng.poisson(lam * t), purchases_until_dropout)
    se = x.std() / np.sqrt(n)
    assert float(clv.expected_repeat_transactions_new(p, t)) == pytest.approx(x.mean(), abs=4 * se)


def test_cohort_sum_over_customers() -> None:
    births = np.array([0.0, 0.0, 1.5, 3.0, 10.0])
    at = np.array([0.0, 2.0, 5.0, 20.0])
    got = clv.expected_cohort_repeat_transactions(PUBLISHED, births, at)
    want = [
        sum(float(clv.expected_repeat_transactions_new(PUBLISHED, w - s)) for s in births)
        for w in at
    ]
    np.testing.assert_allclose(got, want, rtol=1e-12)
    assert got[0] == 0.0  # nobody has had time for a repeat purchase
