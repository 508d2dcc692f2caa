"""Customer segments and CLV bands (documented rules, first match wins).

Segments, checked in this order:
1. ``new``        tenure_days < NEW_DAYS (a first purchase within the last 90 days);
2. ``at_risk``    churn_risk >= AT_RISK_CHURN, or recency_days >= AT_RISK_RECENCY_DAYS
                  (BG/NBD puts P(alive) = 1 for one-time buyers, so recency backs it up);
3. ``high_value`` clv_band == "top", or f_score == 5 and m_score >= 4;
4. ``regular``    everyone else.
CLV bands by rank of clv: top = best 10%, high = next 20%, medium = next 30%, low = rest;
null when CLV could not be computed (too little history).
"""

from __future__ import annotations

import polars as pl

NEW_DAYS = 90
AT_RISK_CHURN = 0.5
AT_RISK_RECENCY_DAYS = 180
SEGMENTS = ("high_value", "regular", "new", "at_risk")
CLV_BANDS = (("top", 0.90), ("high", 0.70), ("medium", 0.40), ("low", 0.0))


def clv_band(col: str = "clv") -> pl.Expr:
    """Band by percentile rank of CLV (ordinal rank keeps band sizes fixed under ties)."""
    pct = pl.col(col).rank("ordinal").cast(pl.Float64) / pl.col(col).count()
    expr = pl.lit("low")
    for name, lo in reversed(CLV_BANDS[:-1]):
        expr = pl.when(pct > lo).then(pl.lit(name)).otherwise(expr)
    return pl.when(pl.col(col).is_null()).then(pl.lit(None, dtype=pl.String)).otherwise(expr)


def segment() -> pl.Expr:
    return (
        pl.when(pl.col("tenure_days") < NEW_DAYS)
        .then(pl.lit("new"))
        .when(
            (pl.col("churn_risk").fill_null(0.0) >= AT_RISK_CHURN)
            | (pl.col("recency_days") >= AT_RISK_RECENCY_DAYS)
        )
        .then(pl.lit("at_risk"))
        .when((pl.col("clv_band") == "top") | ((pl.col("f_score") == 5) & (pl.col("m_score") >= 4)))
        .then(pl.lit("high_value"))
        .otherwise(pl.lit("regular"))
    )
