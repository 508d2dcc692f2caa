"""Loyalty index 0-100: weighted behavioural percentiles plus optional attitudinal input.

Each behavioural measure is turned into a percentile rank in [0, 1] across customers
(average rank for ties, so equal behaviour scores equally), then combined with the weights
below. Where a customer has an NPS answer (0-10) the index blends it in:
index = 100 * ((1 - NPS_WEIGHT) * behavioural + NPS_WEIGHT * nps / 10).
"""

from __future__ import annotations

import polars as pl

# measure -> (weight, higher_is_better); weights sum to 1
BEHAVIOURAL_WEIGHTS: dict[str, tuple[float, bool]] = {
    "recency_days": (0.25, False),
    "frequency": (0.25, True),
    "monetary_total": (0.20, True),
    "tenure_days": (0.10, True),
    "category_count": (0.10, True),
    "items_per_order": (0.10, True),
}
NPS_WEIGHT = 0.20


def percentile(col: str, higher_is_better: bool = True) -> pl.Expr:
    """Percentile rank in [0, 1]; 0.5 for a lone customer; nulls rank lowest."""
    e = pl.col(col).cast(pl.Float64)
    e = e if higher_is_better else -e
    r = e.fill_null(float("-inf")).rank("average")
    n = pl.len().cast(pl.Float64)
    return pl.when(n > 1).then((r - 1.0) / (n - 1.0)).otherwise(0.5)


def check_weights(weights: dict[str, float]) -> dict[str, float]:
    """Behavioural weights for the index: known measures, non-negative, scaled to sum 1."""
    unknown = sorted(set(weights) - set(BEHAVIOURAL_WEIGHTS))
    if unknown:
        raise ValueError(
            f"unknown index measures {unknown}; known: {', '.join(BEHAVIOURAL_WEIGHTS)}"
        )
    bad = [k for k, v in weights.items() if not (isinstance(v, int | float) and v >= 0)]
    if bad:
        raise ValueError(f"index weights must be numbers >= 0: {bad}")
    total = float(sum(weights.values()))
    if total <= 0:
        raise ValueError("index weights must not all be 0")
    return {k: float(weights.get(k, 0.0)) / total for k in BEHAVIOURAL_WEIGHTS}


def loyalty_index(df: pl.LazyFrame, weights: dict[str, float] | None = None) -> pl.LazyFrame:
    """Add loyalty_behavioural (0-1) and loyalty_index (0-100, one decimal); ``weights``
    replaces the default behavioural weights (``check_weights``; e.g. from
    ``patron features calibrate-index``)."""
    w = check_weights(weights) if weights is not None else None
    behavioural = pl.sum_horizontal(
        [
            percentile(c, hib) * (w[c] if w is not None else default)
            for c, (default, hib) in BEHAVIOURAL_WEIGHTS.items()
        ]
    )
    cols = df.collect_schema().names()
    nps = pl.col("nps").clip(0, 10) / 10.0 if "nps" in cols else pl.lit(None, pl.Float64)
    blended = (
        pl.when(nps.is_not_null())
        .then((1 - NPS_WEIGHT) * pl.col("loyalty_behavioural") + NPS_WEIGHT * nps)
        .otherwise(pl.col("loyalty_behavioural"))
    )
    return df.with_columns(loyalty_behavioural=behavioural).with_columns(
        loyalty_index=(blended * 100).round(1)
    )
