"""Train/test splits: the Microsoft Recommenders ML-100K protocol and a temporal split.

``stratified_split`` reproduces ``python_stratified_split(ratio, min_rating=1, filter_by, seed)``
of Microsoft Recommenders: one uniform random number per row is drawn with the legacy global
NumPy generator seeded with ``seed`` *in input row order*; within each group (item or user) rows
are ranked by that number and a row goes to train when ``rank / group_size <= ratio``. On the
ML-100K file order with ratio 0.75, item groups and seed 42 this gives 75,066 / 24,934 rows.

``temporal_split`` holds out each customer's most recent purchases (the production situation).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import polars as pl


def stratified_split(
    rows: pl.DataFrame,
    *,
    ratio: float = 0.75,
    filter_by: Literal["item", "user"] = "item",
    seed: int = 42,
    user_col: str = "customer_id",
    item_col: str = "item_id",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per-group random split; ``rows`` must be in the original file order."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"ratio must be strictly between 0 and 1, got {ratio}")
    group = item_col if filter_by == "item" else user_col
    if group not in rows.columns:
        raise ValueError(f"split needs a {group!r} column; got {rows.columns}")
    rand = np.random.RandomState(seed).rand(rows.height)  # same stream as np.random.seed(seed)
    ranked = rows.with_columns(pl.Series("_rand", rand)).with_columns(
        pl.col("_rand").rank("ordinal").over(group).alias("_rank"),
        (pl.len().over(group).cast(pl.Float64) * ratio).round(mode="half_to_even").alias("_cut"),
    )
    in_train = pl.col("_rank") <= pl.col("_cut")
    train = ranked.filter(in_train).drop("_rand", "_rank", "_cut")
    test = ranked.filter(~in_train).drop("_rand", "_rank", "_cut")
    return train, test


def temporal_split(
    events: pl.DataFrame,
    *,
    test_fraction: float = 0.2,
    user_col: str = "customer_id",
    ts_col: str = "ts",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each customer's last ``test_fraction`` of rows by time go to test.

    A customer with n >= 2 rows holds out max(1, round(test_fraction * n)) of them, the latest;
    a customer with a single row stays in train (nothing to predict from). Ties in time are
    broken by input order, which keeps the split deterministic.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be strictly between 0 and 1, got {test_fraction}")
    n = pl.len().over(user_col)
    n_test = (
        pl.when(n >= 2)
        .then(pl.max_horizontal((n.cast(pl.Float64) * test_fraction).round(), pl.lit(1.0)))
        .otherwise(0.0)
    )
    ranked = (
        events.with_row_index("_row")
        .sort([user_col, ts_col, "_row"])
        .with_columns(
            pl.int_range(pl.len()).over(user_col).alias("_rank"),
            (n.cast(pl.Float64) - n_test).alias("_cut"),
        )
        .sort("_row")
    )
    in_train = pl.col("_rank") < pl.col("_cut")
    train = ranked.filter(in_train).drop("_row", "_rank", "_cut")
    test = ranked.filter(~in_train).drop("_row", "_rank", "_cut")
    return train, test
