"""Fixtures for the training tests: tiny synthetic purchase data and ML-100K events."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from scipy import sparse

from features.schemas import EVENTS


def to_events(rows: pl.DataFrame) -> pl.DataFrame:
    """customer_id, item_id, ts (Unix seconds or datetime) -> EVENTS-schema frame."""
    ts = pl.col("ts")
    if rows.schema["ts"].is_integer():
        ts = pl.from_epoch("ts", time_unit="s").dt.replace_time_zone("UTC")
    out = rows.select(
        pl.col("customer_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        ts.alias("ts"),
        (pl.col("quantity") if "quantity" in rows.columns else pl.lit(1.0)).alias("quantity"),
        pl.lit(None, dtype=pl.Float64).alias("unit_price"),
        (pl.col("order_id") if "order_id" in rows.columns else pl.lit(None)).alias("order_id"),
        pl.lit(None, dtype=pl.String).alias("channel"),
    )
    return out.cast(EVENTS)  # type: ignore[arg-type]


def block_events(
    n_groups: int = 4, per_group_users: int = 12, per_group_items: int = 8, seed: int = 0
) -> pl.DataFrame:
    """Customers in group g buy (most of) group g's items: a known-answer data set."""
    rng = np.random.default_rng(seed)
    start = datetime(2024, 1, 1, tzinfo=UTC)
    rows = []
    for g in range(n_groups):
        for u in range(per_group_users):
            items = rng.choice(per_group_items, size=per_group_items - 2, replace=False)
            for n, i in enumerate(items):
                rows.append(
                    {
                        "customer_id": f"c{g}_{u}",
                        "item_id": f"i{g}_{i}",
                        "ts": start + timedelta(days=int(n) + g, hours=u),
                        "quantity": 1.0,
                        "order_id": f"o{g}_{u}_{n // 2}",
                    }
                )
    return to_events(pl.DataFrame(rows))


@pytest.fixture
def blocks() -> pl.DataFrame:
    return block_events()


@pytest.fixture
def block_matrix() -> sparse.csr_matrix:
    """Binary customers x items with 4 disjoint blocks of 12 x 8, two holes per row."""
    from training.interactions import build_interactions

    return build_interactions(block_events()).binary()


@pytest.fixture(scope="session")
def ml100k_split(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Protocol (a) split of ML-100K as raw rows (customer_id, item_id, rating, ts)."""
    from training.evaluate import ml100k_rows
    from training.splits import stratified_split

    rows = ml100k_rows(data_dir)
    return stratified_split(rows, ratio=0.75, filter_by="item", seed=42)
