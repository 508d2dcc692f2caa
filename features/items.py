"""Item feature table (items.parquet): popularity overall, trending, per tier and segment,
and category repeat-purchase behaviour (which categories may be re-recommended).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

from features.rfm import QTY

TRENDING_DAYS = 30


def with_category(catalog: pl.LazyFrame | None) -> pl.LazyFrame | None:
    """The catalog with a ``category`` column (null when the file has none)."""
    if catalog is not None and "category" not in catalog.collect_schema().names():
        return catalog.with_columns(category=pl.lit(None, dtype=pl.String))
    return catalog


def buyer_days(buys: pl.LazyFrame) -> pl.LazyFrame:
    """Per (category, buyer): purchase days, first and last purchase day."""
    return (
        buys.with_columns(day=pl.col("ts").dt.date())
        .group_by("category", "customer_id")
        .agg(n_days=pl.col("day").n_unique(), first=pl.col("day").min(), last=pl.col("day").max())
    )


def category_repeat(per_buyer: pl.LazyFrame) -> pl.LazyFrame:
    """Per category (from ``buyer_days``): share of its buyers who bought it on 2+ days, and
    the median over those buyers of their mean days between purchase days
    ((last - first) / (days - 1))."""
    per_buyer = per_buyer.with_columns(
        interval=pl.when(pl.col("n_days") >= 2)
        .then((pl.col("last") - pl.col("first")).dt.total_days() / (pl.col("n_days") - 1))
        .otherwise(None)
    )
    return per_buyer.group_by("category").agg(
        category_repeat_rate=(pl.col("n_days") >= 2).mean(),
        category_repurchase_days=pl.col("interval").median(),
    )


def build_items(
    events: pl.LazyFrame,
    customers: pl.DataFrame,
    as_of: datetime,
    catalog: pl.LazyFrame | None = None,
    trending_days: int = TRENDING_DAYS,
) -> pl.DataFrame:
    """One row per item bought (or listed in the catalog)."""
    pairs, per_buyer, span = item_reductions(events, as_of, catalog)
    return item_table(pairs, per_buyer, span, customers, as_of, catalog, trending_days)


def item_reductions(
    events: pl.LazyFrame, as_of: datetime, catalog: pl.LazyFrame | None
) -> tuple[pl.LazyFrame, pl.LazyFrame, int]:
    """The reductions of the event log the item table needs (``features/spark_features.py``
    computes the same on Spark): one row per (item, buyer) with units, last purchase and
    category; ``buyer_days`` per (category, buyer); the span of the history in days."""
    catalog = with_category(catalog)
    ev = events.filter((pl.col("ts") <= as_of) & pl.col("item_id").is_not_null() & (QTY > 0))
    if catalog is not None:
        ev = ev.join(catalog.select("item_id", "category"), on="item_id", how="left")
    else:
        ev = ev.with_columns(category=pl.lit(None, dtype=pl.String))
    # one row per (item, buyer): every popularity count below is a plain fast-path aggregate
    pairs = (
        ev.group_by("item_id", "customer_id")
        .agg(units=QTY.sum(), last_ts=pl.col("ts").max(), category=pl.col("category").first())
        .collect()
        .lazy()
    )
    total_days = ev.select((pl.col("ts").max() - pl.col("ts").min()).dt.total_days() + 1)
    span = max(int(total_days.collect().item() or 1), 1)
    return pairs, buyer_days(ev.filter(pl.col("category").is_not_null())), span


def item_table(
    pairs: pl.LazyFrame,
    per_buyer: pl.LazyFrame,
    span: int,
    customers: pl.DataFrame,
    as_of: datetime,
    catalog: pl.LazyFrame | None = None,
    trending_days: int = TRENDING_DAYS,
) -> pl.DataFrame:
    """The item table from ``item_reductions`` and the customer table (tiers, segments)."""
    catalog = with_category(catalog)
    since = pl.lit(as_of - timedelta(days=trending_days)).cast(pl.Datetime("us", "UTC"))
    pop = pairs.group_by("item_id").agg(
        purchases=pl.col("units").sum(),
        buyers=pl.len().cast(pl.Int64),
        recent_buyers=(pl.col("last_ts") > since).sum().cast(pl.Int64),
        category=pl.col("category").first(),
    )
    window = min(trending_days, span)
    pop = pop.with_columns(
        popularity=pl.col("buyers").rank("average") / pl.len(),
        # recent share of buyers relative to the share expected from a flat history
        trending=(pl.col("recent_buyers") / pl.col("buyers")) * (span / window),
    )
    seg = customers.lazy().select("customer_id", "tier", "segment")
    tagged = pairs.select("item_id", "customer_id").join(seg, on="customer_id", how="left")
    per_tier = (
        tagged.group_by("item_id", "tier")
        .agg(n=pl.len())
        .collect()
        .pivot(on="tier", index="item_id", values="n")
    )
    per_tier = per_tier.rename({c: f"buyers_tier_{c}" for c in per_tier.columns if c != "item_id"})
    per_seg = (
        tagged.group_by("item_id", "segment")
        .agg(n=pl.len())
        .collect()
        .pivot(on="segment", index="item_id", values="n")
    )
    per_seg = per_seg.rename({c: f"buyers_segment_{c}" for c in per_seg.columns if c != "item_id"})
    # columns in a fixed order (the tier scheme's, then the segments'), not the group order
    tier_order = customers.select("tier", "tier_rank").unique().sort("tier_rank")["tier"]
    per_tier = per_tier.select(
        "item_id",
        *(f"buyers_tier_{t}" for t in tier_order if f"buyers_tier_{t}" in per_tier.columns),
    )
    per_seg = per_seg.select("item_id", *sorted(c for c in per_seg.columns if c != "item_id"))
    out = (
        pop.join(category_repeat(per_buyer), on="category", how="left")
        .collect()
        .join(per_tier, on="item_id", how="left")
        .join(per_seg, on="item_id", how="left")
    )
    if catalog is not None:
        cat = catalog.collect()
        flags = [
            c for c in ("in_stock", "min_tier", "premium", "on_promo", "price") if c in cat.columns
        ]
        out = cat.select("item_id", pl.col("category").alias("_cat"), *flags).join(
            out, on="item_id", how="left"
        )
        out = out.with_columns(category=pl.coalesce("category", "_cat")).drop("_cat")
    counts = [
        c for c in out.columns if c.startswith("buyers") or c in ("purchases", "recent_buyers")
    ]
    return out.with_columns(pl.col(counts).fill_null(0)).sort("item_id")
