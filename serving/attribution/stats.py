"""The statistics of an A/B comparison (pure: counts in, numbers out).

- Rates (CTR, conversion): Wilson score intervals per variant, Newcombe's hybrid score
  interval for the difference, and the two-proportion z-test (pooled) for its p-value.
- Revenue per answer: a mean of a zero-inflated, skewed variable, so a bootstrap. Most answers
  earn nothing; a resample of n answers is drawn as Binomial(n, m/n) converted answers, each
  one of the m observed revenues with replacement, which is the same distribution as
  resampling all n values and needs only the m converted ones.
- Power: the minimum detectable effect of the conversion rate at the current traffic, and the
  answers per variant needed to detect a given relative lift (normal approximation, two-sided).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import norm


@dataclass(frozen=True)
class Comparison:
    """Challenger against champion on one metric."""

    metric: str
    champion: float | None
    challenger: float | None
    diff: float | None  # challenger - champion
    ci_low: float | None  # of the difference
    ci_high: float | None
    lift: float | None  # diff / champion
    p_value: float | None
    test: str

    def significant(self, confidence: float) -> bool:
        return self.p_value is not None and self.p_value < 1.0 - confidence

    def as_dict(self) -> dict[str, float | str | None]:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def _z(confidence: float) -> float:
    return float(norm.ppf(0.5 + confidence / 2))


def wilson(x: float, n: float, confidence: float) -> tuple[float, float] | None:
    """Wilson score interval of the proportion x/n (None without trials)."""
    if n <= 0:
        return None
    z = _z(confidence)
    p = x / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportions(
    metric: str, x1: float, n1: float, x2: float, n2: float, confidence: float
) -> Comparison:
    """Variant 2 (challenger) against variant 1 (champion) on a rate."""
    if n1 <= 0 or n2 <= 0:
        p1 = x1 / n1 if n1 > 0 else None
        p2 = x2 / n2 if n2 > 0 else None
        return Comparison(metric, p1, p2, None, None, None, None, None, "two-proportion z")
    p1, p2 = x1 / n1, x2 / n2
    diff = p2 - p1
    w1, w2 = wilson(x1, n1, confidence), wilson(x2, n2, confidence)
    assert w1 is not None and w2 is not None
    lo = diff - math.sqrt((p2 - w2[0]) ** 2 + (w1[1] - p1) ** 2)
    hi = diff + math.sqrt((w2[1] - p2) ** 2 + (p1 - w1[0]) ** 2)
    pooled = (x1 + x2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    p_value = 1.0 if se == 0 else float(2 * norm.sf(abs(diff) / se))
    lift = diff / p1 if p1 > 0 else None
    return Comparison(metric, p1, p2, diff, lo, hi, lift, p_value, "two-proportion z")


def _resampled_means(values: np.ndarray, n: int, reps: int, rng: np.random.Generator) -> np.ndarray:
    """Bootstrap means of n answers of which ``values`` earned revenue (the rest 0)."""
    m = len(values)
    if m == 0:
        return np.zeros(reps)
    hits = rng.binomial(n, m / n, size=reps)
    draws = values[rng.integers(0, m, size=int(hits.sum()))]
    ends = np.cumsum(hits)
    running = np.r_[0.0, np.cumsum(draws)]
    return (running[ends] - running[ends - hits]) / n


def bootstrap_means(
    metric: str,
    values1: Sequence[float],
    n1: int,
    values2: Sequence[float],
    n2: int,
    confidence: float,
    reps: int = 4_000,
    seed: int = 0,
) -> Comparison:
    """Mean per answer of variant 2 against variant 1, where ``values`` are the non-zero
    values (converted answers' revenue) among n answers: a percentile bootstrap interval of
    the difference, and a two-sided p-value from the share of resampled differences on the
    other side of 0."""
    if n1 <= 0 or n2 <= 0:
        return Comparison(metric, None, None, None, None, None, None, None, "bootstrap")
    v1, v2 = np.asarray(values1, float), np.asarray(values2, float)
    mean1, mean2 = float(v1.sum() / n1), float(v2.sum() / n2)
    rng = np.random.default_rng(seed)
    # bounded work: about 20M resampled values per variant at most
    reps = max(500, min(reps, int(2e7 / max(1, len(v1), len(v2)))))
    d = _resampled_means(v2, n2, reps, rng) - _resampled_means(v1, n1, reps, rng)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(d, [alpha / 2, 1 - alpha / 2])
    p_value = min(1.0, 2 * min(float(np.mean(d <= 0)), float(np.mean(d >= 0))))
    if mean1 == mean2 == 0:
        p_value = 1.0
    lift = (mean2 - mean1) / mean1 if mean1 > 0 else None
    return Comparison(
        metric, mean1, mean2, mean2 - mean1, float(lo), float(hi), lift, p_value, "bootstrap"
    )


def minimum_detectable_effect(
    p: float, n1: float, n2: float, confidence: float, power: float = 0.8
) -> float | None:
    """The smallest absolute change of a rate p that n1 and n2 answers detect with this
    power (None without traffic)."""
    if n1 <= 0 or n2 <= 0:
        return None
    return (_z(confidence) + float(norm.ppf(power))) * math.sqrt(p * (1 - p) * (1 / n1 + 1 / n2))


def needed_per_variant(
    p: float, relative_lift: float, confidence: float, power: float = 0.8
) -> int | None:
    """Answers per variant to detect a change of the rate p to p * (1 + relative_lift)."""
    p2 = p * (1 + relative_lift)
    if not 0 < p < 1 or not 0 < p2 < 1 or relative_lift == 0:
        return None
    z = _z(confidence) + float(norm.ppf(power))
    return math.ceil(z * z * (p * (1 - p) + p2 * (1 - p2)) / (p2 - p) ** 2)
