"""Behavioural measures per customer and RFM quintile scores (polars, lazy).

A purchase is a row with quantity > 0 (null quantity counts as 1); a return (quantity < 0)
reduces spend but is not an order. An order is the order_id when present, else the distinct
purchase day. Only events at or before ``as_of`` count.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

QTY = pl.col("quantity").fill_null(1.0)
SPEND = QTY * pl.col("unit_price").fill_null(0.0)
DAY_S = 86_400.0


def _days(delta: pl.Expr) -> pl.Expr:
    return delta.dt.total_microseconds().cast(pl.Float64) / (DAY_S * 1e6)


def _distinct(col: str) -> pl.Expr:
    """Distinct non-null values (n_unique counts null as a value; this stays on the fast path)."""
    return pl.col(col).n_unique() - (pl.col(col).null_count() > 0).cast(pl.UInt32)


def behaviour(
    events: pl.LazyFrame,
    as_of: datetime,
    catalog: pl.LazyFrame | None = None,
    window_days: int = 365,
) -> pl.LazyFrame:
    """One row per customer with at least one purchase at or before ``as_of``.

    ``spend_12m`` is the net spend over the last ``window_days`` (the tier window).
    """
    ev = events.filter(pl.col("ts") <= as_of).with_columns(
        spend=SPEND, is_purchase=QTY > 0, day=pl.col("ts").dt.date()
    )
    buy = pl.col("is_purchase")
    cutoff = pl.lit(as_of - timedelta(days=window_days)).cast(pl.Datetime("us", "UTC"))
    # plain aggregations over pre-masked columns stay on polars' fast group-by path
    per = (
        ev.with_columns(
            ts_buy=pl.when(buy).then(pl.col("ts")),
            units=pl.when(buy).then(QTY).otherwise(0.0),
            gross=pl.when(buy).then(pl.col("spend")).otherwise(0.0),
            spend_12m=pl.when(pl.col("ts") > cutoff).then(pl.col("spend")).otherwise(0.0),
            is_return=(~buy).cast(pl.Int64),
            # an order is its order_id, or the purchase day for rows without one
            order_key=pl.when(buy).then(pl.col("order_id")),
            day_key=pl.when(buy & pl.col("order_id").is_null()).then(pl.col("day")),
        )
        .group_by("customer_id")
        .agg(
            first_ts=pl.col("ts_buy").min(),
            last_ts=pl.col("ts_buy").max(),
            units=pl.col("units").sum(),
            gross=pl.col("gross").sum(),
            monetary_total=pl.col("spend").sum(),
            spend_12m=pl.col("spend_12m").sum(),
            returns=pl.col("is_return").sum(),
            frequency=(_distinct("order_key") + _distinct("day_key")).cast(pl.Int64),
        )
    )
    if catalog is not None and "category" in catalog.collect_schema().names():
        cat = (
            ev.filter(buy)
            .select("customer_id", "item_id", "spend")
            .join(catalog.select("item_id", "category"), on="item_id", how="inner")
            .filter(pl.col("category").is_not_null())
            .group_by("customer_id", "category")
            .agg(pl.col("spend").sum())
            .group_by("customer_id")
            .agg(
                category_count=pl.len().cast(pl.Int64),
                top_cat_spend=pl.col("spend").max(),
                cat_spend=pl.col("spend").sum(),
            )
        )
    else:
        cat = pl.LazyFrame(
            schema={
                "customer_id": pl.String,
                "category_count": pl.Int64,
                "top_cat_spend": pl.Float64,
                "cat_spend": pl.Float64,
            }
        )
    as_of_lit = pl.lit(as_of).cast(pl.Datetime("us", "UTC"))
    return (
        per.filter(pl.col("first_ts").is_not_null())
        .join(cat, on="customer_id", how="left")
        .select(
            "customer_id",
            recency_days=_days(as_of_lit - pl.col("last_ts")),
            frequency="frequency",
            monetary_total="monetary_total",
            monetary_avg=pl.col("monetary_total") / pl.col("frequency"),
            items_per_order=pl.col("units") / pl.col("frequency"),
            category_count=pl.col("category_count").fill_null(0),
            top_category_share=pl.when(pl.col("cat_spend") > 0)
            .then(pl.col("top_cat_spend") / pl.col("cat_spend"))
            .otherwise(None),
            tenure_days=_days(as_of_lit - pl.col("first_ts")),
            spend_12m="spend_12m",
            typical_spend=pl.when(pl.col("units") > 0)
            .then(pl.col("gross") / pl.col("units"))
            .otherwise(None),
            returns="returns",
            first_purchase=pl.col("first_ts"),
            last_purchase=pl.col("last_ts"),
        )
    )


def quintile(metric: pl.Expr, *tiebreak: pl.Expr) -> pl.Expr:
    """Score 1-5 by ranked quintiles (higher value = higher score); ties broken by the
    ``tiebreak`` expressions, then customer_id.

    Ranking every row (ordinal) instead of binning values keeps five groups even on skewed
    data (e.g. most customers bought once). A lone customer scores 3 (no ranking exists).
    """
    key = pl.struct([metric, *tiebreak, pl.col("customer_id")]).rank("ordinal")
    n = pl.len()
    score = (key.cast(pl.Float64) * 5.0 / n).ceil().cast(pl.Int8)
    return pl.when(n == 1).then(pl.lit(3, dtype=pl.Int8)).otherwise(score)


def rfm_scores(df: pl.LazyFrame) -> pl.LazyFrame:
    """Add r_score, f_score, m_score (5 = best) and the 3-digit rfm_cell."""
    r, f, m = pl.col("recency_days"), pl.col("frequency"), pl.col("monetary_total")
    return df.with_columns(
        r_score=quintile(-r, f),  # more recent is better
        f_score=quintile(f, m),
        m_score=quintile(m, f),
    ).with_columns(
        rfm_cell=pl.concat_str([pl.col("r_score"), pl.col("f_score"), pl.col("m_score")])
    )
