"""``patron features build --engine spark``: the event-log reductions on Spark, the rest shared.

The feature build has two kinds of step:

- reductions of the event log, which grow with the events: per customer the behaviour
  (``rfm.behaviour``) and the CLV summary (``clv_data.calibration_summary``); per item and
  buyer the purchase pairs and per category and buyer the purchase days (``items``). These
  run here on Spark SQL, with the same definitions (``tests/spark`` checks them equal to the
  polars build: exact for counts and categories, 1e-9 relative for sums);
- everything after, which works on one row per customer or item: RFM quintiles, tiers
  (rolling spend, grace, downgrade), the loyalty index, CLV scoring, segments. That is the
  polars code of the local build (``customers.customer_table``, ``items.item_table``), run on
  the driver: the customer table is what ``features publish`` loads into Redis, so it fits
  one machine by construction.

The BG/NBD / Pareto/NBD fit takes its data compressed on Spark: unique (x, t_x, T) rows with
their customer counts, so it scales with distinct histories, not customers.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from features import customers as local
from features import items as local_items
from features.tiers import TierRules
from patron.spark import to_polars

if TYPE_CHECKING:
    from pyspark.sql import Column, DataFrame, SparkSession

DAY_US = 86_400.0 * 1e6
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def read_events(spark: SparkSession, uri: str) -> DataFrame:
    """Validated events (EVENTS schema) from Parquet at a local path or any Hadoop URI."""
    from pyspark.sql import functions as F

    sdf = read_table(spark, uri)
    missing = [c for c in ("customer_id", "ts") if c not in sdf.columns]
    if missing:
        raise ValueError(
            f"{uri}: events lack required column(s) {missing}; see features/schemas.py"
        )
    kinds = {
        "customer_id": "string",
        "item_id": "string",
        "ts": "timestamp",
        "quantity": "double",
        "unit_price": "double",
        "order_id": "string",
        "channel": "string",
    }
    return sdf.select(
        *(
            (F.col(c) if c in sdf.columns else F.lit(None)).cast(kind).alias(c)
            for c, kind in kinds.items()
        )
    )


def read_table(spark: SparkSession, uri: str) -> DataFrame:
    """Parquet at a path or URI; a missing or unreadable input is a ValueError (exit 2)."""
    from py4j.protocol import Py4JJavaError
    from pyspark.errors import AnalysisException

    try:
        return spark.read.parquet(uri)  # reads the footers (the schema) now
    except (AnalysisException, Py4JJavaError) as exc:
        text = str(exc.java_exception.getMessage()) if isinstance(exc, Py4JJavaError) else str(exc)
        first = (text.strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ValueError(f"{uri}: cannot read as Parquet ({first})") from None


def _qty() -> Column:
    from pyspark.sql import functions as F

    return F.coalesce(F.col("quantity"), F.lit(1.0))


def _spend() -> Column:
    from pyspark.sql import functions as F

    return _qty() * F.coalesce(F.col("unit_price"), F.lit(0.0))


def _micros(value: datetime) -> int:
    return (value - EPOCH) // timedelta(microseconds=1)


def _ts(value: datetime) -> Column:
    """A timestamp literal from its UTC microseconds (Python datetimes cross into Spark in
    the driver's local timezone; integers do not)."""
    from pyspark.sql import functions as F

    return F.timestamp_micros(F.lit(_micros(value)))


def fill_prices(events: DataFrame, catalog: DataFrame | None) -> DataFrame:
    """``customers.fill_prices``: unknown unit prices take the catalog price."""
    from pyspark.sql import functions as F

    if catalog is None or "price" not in catalog.columns:
        return events
    prices = catalog.select("item_id", F.col("price").cast("double").alias("_price"))
    return (
        events.join(prices, on="item_id", how="left")
        .withColumn("unit_price", F.coalesce("unit_price", "_price"))
        .drop("_price")
    )


def behaviour(
    events: DataFrame, as_of: datetime, catalog: DataFrame | None, window_days: int
) -> DataFrame:
    """``rfm.behaviour`` on Spark (same columns, same definitions)."""
    from pyspark.sql import functions as F

    buy = _qty() > 0
    ev = events.filter(F.col("ts") <= _ts(as_of)).withColumns(
        {"spend": _spend(), "day": F.to_date("ts")}
    )
    cutoff = _ts(as_of - timedelta(days=window_days))
    per = ev.groupBy("customer_id").agg(
        F.min(F.when(buy, F.col("ts"))).alias("first_ts"),
        F.max(F.when(buy, F.col("ts"))).alias("last_ts"),
        F.sum(F.when(buy, _qty()).otherwise(0.0)).alias("units"),
        F.sum(F.when(buy, F.col("spend")).otherwise(0.0)).alias("gross"),
        F.sum("spend").alias("monetary_total"),
        F.sum(F.when(F.col("ts") > cutoff, F.col("spend")).otherwise(0.0)).alias("spend_12m"),
        F.sum((~buy).cast("long")).alias("returns"),
        (
            F.countDistinct(F.when(buy, F.col("order_id")))
            + F.countDistinct(F.when(buy & F.col("order_id").isNull(), F.col("day")))
        ).alias("frequency"),
    )
    if catalog is not None and "category" in catalog.columns:
        cat = (
            ev.filter(buy)
            .select("customer_id", "item_id", "spend")
            .join(catalog.select("item_id", "category"), on="item_id", how="inner")
            .filter(F.col("category").isNotNull())
            .groupBy("customer_id", "category")
            .agg(F.sum("spend").alias("spend"))
            .groupBy("customer_id")
            .agg(
                F.count(F.lit(1)).alias("category_count"),
                F.max("spend").alias("top_cat_spend"),
                F.sum("spend").alias("cat_spend"),
            )
        )
        per = per.join(cat, on="customer_id", how="left")
    else:
        per = per.withColumns(
            {
                "category_count": F.lit(None).cast("long"),
                "top_cat_spend": F.lit(None).cast("double"),
                "cat_spend": F.lit(None).cast("double"),
            }
        )
    as_of_us = F.lit(_micros(as_of)).cast("long")

    def days_since(col: str) -> Column:
        return (as_of_us - F.unix_micros(F.col(col))).cast("double") / DAY_US

    return per.filter(F.col("first_ts").isNotNull()).select(
        "customer_id",
        days_since("last_ts").alias("recency_days"),
        "frequency",
        "monetary_total",
        (F.col("monetary_total") / F.col("frequency")).alias("monetary_avg"),
        (F.col("units") / F.col("frequency")).alias("items_per_order"),
        F.coalesce(F.col("category_count"), F.lit(0).cast("long")).alias("category_count"),
        F.when(F.col("cat_spend") > 0, F.col("top_cat_spend") / F.col("cat_spend")).alias(
            "top_category_share"
        ),
        days_since("first_ts").alias("tenure_days"),
        "spend_12m",
        F.when(F.col("units") > 0, F.col("gross") / F.col("units")).alias("typical_spend"),
        "returns",
        F.col("first_ts").alias("first_purchase"),
        F.col("last_ts").alias("last_purchase"),
    )


def calibration_summary(events: DataFrame, as_of: datetime) -> DataFrame:
    """``clv_data.calibration_summary(daily_transactions(events <= as_of), as_of.date())``."""
    from pyspark.sql import functions as F

    end = as_of.date()
    daily = (
        events.filter(F.col("ts") <= _ts(as_of))
        .withColumns({"day": F.to_date("ts"), "spend": _spend()})
        .groupBy("customer_id", "day")
        .agg(F.sum("spend").alias("spend"), F.max((_qty() > 0).cast("int")).alias("bought"))
        .filter(F.col("bought") == 1)
        .filter(F.col("day") <= F.lit(end))
    )
    per = daily.groupBy("customer_id").agg(
        F.min("day").alias("first"),
        F.max("day").alias("last"),
        F.count(F.lit(1)).alias("n"),
        F.sum("spend").alias("total"),
        F.min_by("spend", "day").alias("first_spend"),
    )
    return per.select(
        "customer_id",
        "first",
        "first_spend",
        (F.col("n") - 1).cast("double").alias("x"),
        (F.datediff("last", "first").cast("double") / 7.0).alias("t_x"),
        (F.datediff(F.lit(end), "first").cast("double") / 7.0).alias("T"),
        F.when(F.col("n") > 1, (F.col("total") - F.col("first_spend")) / (F.col("n") - 1)).alias(
            "monetary"
        ),
    )


def fit_rows(summary: DataFrame) -> local.FitRows:
    """Unique (x, t_x, T) rows and their customer counts, sorted (``clv.compress``)."""
    from pyspark.sql import functions as F

    g = to_polars(
        summary.groupBy("x", "t_x", "T").agg(F.count(F.lit(1)).alias("n")).orderBy("x", "t_x", "T")
    )
    return (
        g["x"].to_numpy(),
        g["t_x"].to_numpy(),
        g["T"].to_numpy(),
        g["n"].to_numpy().astype(np.float64),
    )


def item_reductions(
    events: DataFrame, as_of: datetime, catalog: DataFrame | None
) -> tuple[pl.DataFrame, pl.DataFrame, int]:
    """``items.item_reductions`` on Spark: (item, buyer) pairs, (category, buyer) purchase
    days, and the span of the history in days."""
    from pyspark.sql import functions as F

    ev = events.filter((F.col("ts") <= _ts(as_of)) & F.col("item_id").isNotNull() & (_qty() > 0))
    if catalog is not None and "category" in catalog.columns:
        ev = ev.join(catalog.select("item_id", "category"), on="item_id", how="left")
    else:
        ev = ev.withColumn("category", F.lit(None).cast("string"))
    pairs = ev.groupBy("item_id", "customer_id").agg(
        F.sum(_qty()).alias("units"),
        F.max("ts").alias("last_ts"),
        F.first("category", ignorenulls=False).alias("category"),
    )
    per_buyer = (
        ev.filter(F.col("category").isNotNull())
        .withColumn("day", F.to_date("ts"))
        .groupBy("category", "customer_id")
        .agg(
            F.countDistinct("day").alias("n_days"),
            F.min("day").alias("first"),
            F.max("day").alias("last"),
        )
    )
    # whole days from the first to the last purchase, + 1 (as polars' total_days)
    span = to_polars(ev.agg((F.max(F.unix_micros("ts")) - F.min(F.unix_micros("ts"))).alias("us")))[
        "us"
    ][0]
    days = 1 if span is None else int(span) // 86_400_000_000 + 1
    return to_polars(pairs), to_polars(per_buyer), max(days, 1)


def build(
    spark: SparkSession,
    events_uri: str,
    as_of: datetime | None,
    rules: TierRules,
    catalog: pl.DataFrame | None = None,
    people: pl.LazyFrame | None = None,
    previous: pl.LazyFrame | None = None,
    clv_opts: local.ClvOptions = local.ClvOptions(),
    index_weights: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame, datetime, dict[str, object]]:
    """(customers, items, as_of, report) as ``patron features build`` writes them."""
    from pyspark.sql import functions as F

    events = read_events(spark, events_uri)
    if as_of is None:
        latest = to_polars(events.agg(F.max(F.unix_micros("ts")).alias("us")))["us"][0]
        if latest is None:
            raise ValueError("the events file holds no events")
        as_of = EPOCH + timedelta(microseconds=int(latest))
    cat_s = spark.createDataFrame(catalog.to_arrow()) if catalog is not None else None
    events = fill_prices(events, cat_s).cache()
    try:
        beh = to_polars(behaviour(events, as_of, cat_s, rules.window_days))
        summary_s = calibration_summary(events, as_of).cache()
        summary = to_polars(summary_s)
        rows = fit_rows(summary_s)
        table, info = local.customer_table(
            beh.lazy(), summary, as_of, rules, people, previous, clv_opts, index_weights, rows
        )
        pairs, per_buyer, span = item_reductions(events, as_of, cat_s)
    finally:
        events.unpersist()
    items = local_items.item_table(
        pairs.lazy(),
        per_buyer.lazy(),
        span,
        table,
        as_of,
        catalog.lazy() if catalog is not None else None,
    )
    info["engine"] = "spark"
    return table, items, as_of, info
