"""MovieLens 100K adapter: ratings become purchases, movies become a catalog.

ML-100K has no prices, stock, tiers or promotions; the catalog fields Patron needs are filled
with deterministic, seeded SYNTHETIC values (documented in docs/data.md) so that every part of
the system can run on a real interaction matrix. Only the interactions are real.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from features.schemas import CATALOG, EVENTS

INTER_FILE = "ml-100k.inter"
ITEM_FILE = "ml-100k.item"

# Shares of the synthetic catalog attributes (documented in docs/data.md).
IN_STOCK_SHARE = 0.95
PREMIUM_SHARE = 0.10
PROMO_SHARE = 0.10
TIER_EXCLUSIVE_SHARE = 0.05
EXCLUSIVE_TIERS = ("silver", "gold", "platinum")
EXCLUSIVE_TIER_WEIGHTS = (0.5, 0.3, 0.2)
PRICE_LOG_MEAN = np.log(12.0)  # median price 12.00
PRICE_LOG_SIGMA = 0.6


def _read_tsv(path: Path) -> pl.DataFrame:
    """Read one ML-100K atomic file (tab-separated, typed header ``name:type``) as strings."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: ML-100K file not found (expected {path.name})")
    df = pl.read_csv(
        path,
        separator="\t",
        quote_char=None,
        infer_schema=False,
        truncate_ragged_lines=True,
    )
    return df.rename({c: c.split(":", 1)[0] for c in df.columns})


def _require(df: pl.DataFrame, path: Path, cols: tuple[str, ...]) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {', '.join(missing)}; found {df.columns}")


def read_ml100k_ratings(directory: Path) -> pl.DataFrame:
    """The raw ratings in ORIGINAL FILE ORDER: user_id, item_id (strings), rating, timestamp.

    The benchmark split (stratified per item, seeded in file order) depends on this order.
    """
    path = Path(directory) / INTER_FILE
    raw = _read_tsv(path)
    _require(raw, path, ("user_id", "item_id", "rating", "timestamp"))
    return raw.select(
        pl.col("user_id"),
        pl.col("item_id"),
        pl.col("rating").cast(pl.Float64),
        pl.col("timestamp").cast(pl.Float64).cast(pl.Int64).alias("timestamp"),
    )


def read_ml100k_catalog(directory: Path, seed: int = 42) -> pl.DataFrame:
    """The movies as a CATALOG table; category is the first genre, the rest is synthetic.

    Synthetic values are drawn from ``numpy.random.default_rng(seed)`` in item-file order, so
    the same seed always yields the same catalog.
    """
    path = Path(directory) / ITEM_FILE
    raw = _read_tsv(path)
    _require(raw, path, ("item_id", "release_year", "class"))
    n = raw.height
    rng = np.random.default_rng(seed)
    price = np.round(rng.lognormal(PRICE_LOG_MEAN, PRICE_LOG_SIGMA, n), 2).clip(0.99, None)
    in_stock = rng.random(n) < IN_STOCK_SHARE
    premium = rng.random(n) < PREMIUM_SHARE
    on_promo = rng.random(n) < PROMO_SHARE
    exclusive = rng.random(n) < TIER_EXCLUSIVE_SHARE
    tier_idx = rng.choice(len(EXCLUSIVE_TIERS), size=n, p=EXCLUSIVE_TIER_WEIGHTS)
    margin = np.round(rng.uniform(0.10, 0.45, n), 3)
    min_tier = [EXCLUSIVE_TIERS[t] if x else None for t, x in zip(tier_idx, exclusive, strict=True)]
    return raw.select(
        pl.col("item_id"),
        pl.col("class").str.split(" ").list.first().fill_null("unknown").alias("category"),
        pl.Series("price", price, dtype=pl.Float64),
        pl.Series("in_stock", in_stock, dtype=pl.Boolean),
        pl.Series("min_tier", min_tier, dtype=pl.String),
        # tier-exclusive items are premium by construction
        pl.Series("premium", premium | exclusive, dtype=pl.Boolean),
        pl.Series("on_promo", on_promo, dtype=pl.Boolean),
        pl.date(pl.col("release_year").cast(pl.Int32, strict=False), 1, 1)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
        .alias("launched_at"),
        pl.Series("margin", margin, dtype=pl.Float64),
    ).cast(CATALOG)  # type: ignore[arg-type]


def read_ml100k(directory: Path, seed: int = 42) -> tuple[pl.DataFrame, pl.DataFrame]:
    """ML-100K as (events in EVENTS schema, in original file order; catalog in CATALOG schema).

    Every rating is one purchase of quantity 1 at the item's synthetic catalog price.
    """
    catalog = read_ml100k_catalog(directory, seed)
    ratings = read_ml100k_ratings(directory)
    prices = dict(zip(catalog["item_id"].to_list(), catalog["price"].to_list(), strict=True))
    events = ratings.select(
        pl.col("user_id").alias("customer_id"),
        pl.col("item_id"),
        pl.from_epoch(pl.col("timestamp"), time_unit="s").dt.replace_time_zone("UTC").alias("ts"),
        pl.lit(1.0).alias("quantity"),
        pl.col("item_id")
        .replace_strict(prices, default=None, return_dtype=pl.Float64)
        .alias("unit_price"),
        pl.lit(None, dtype=pl.String).alias("order_id"),
        pl.lit(None, dtype=pl.String).alias("channel"),
    )
    return events.cast(EVENTS).select(list(EVENTS)), catalog  # type: ignore[arg-type]


__all__ = ["read_ml100k", "read_ml100k_catalog", "read_ml100k_ratings"]
