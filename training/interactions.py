"""Validated purchase events -> customer x item confidence matrix (CSR float32) + id maps.

Confidence of (customer, item) = sum over that pair's events of
``quantity * 0.5 ** (age_days / half_life_days)`` (decay only when a half-life is given; age is
measured from the newest event). Returns are negative quantities and subtract; pairs whose net
is <= 0 are dropped and counted. ``log_scale`` then maps c -> log1p(c) so a customer who buys
an item 50 times does not drown out everything else. Events without an item_id
(transaction-only data) carry no item signal and are counted, not used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl
from scipy import sparse


@dataclass
class Interactions:
    """Confidence matrix and id maps: row i is ``customer_ids[i]``, column j ``item_ids[j]``."""

    matrix: sparse.csr_matrix
    customer_ids: np.ndarray
    item_ids: np.ndarray
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.customer_ids), len(self.item_ids))

    def binary(self) -> sparse.csr_matrix:
        """1.0 where the customer bought the item (net of returns)."""
        b = self.matrix.copy()
        b.data = np.ones_like(b.data, dtype=np.float32)
        return b

    def customer_index(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"customer_id": self.customer_ids.astype(str), "u": np.arange(len(self.customer_ids))}
        )

    def item_index(self) -> pl.DataFrame:
        return pl.DataFrame(
            {"item_id": self.item_ids.astype(str), "i": np.arange(len(self.item_ids))}
        )


def _ordered_ids(seen: pl.Series, preferred: np.ndarray | None) -> np.ndarray:
    """``preferred`` ids first (in their order), then any other seen id in sorted order."""
    seen_u = seen.unique().sort()
    if preferred is None:
        return seen_u.to_numpy().astype(str)
    pref = pl.Series(np.asarray(preferred).astype(str)).unique(maintain_order=True)
    extra = seen_u.filter(~seen_u.is_in(pref.implode()))
    return pl.concat([pref, extra]).to_numpy().astype(str)


def build_interactions(
    events: pl.DataFrame | pl.LazyFrame,
    *,
    item_ids: np.ndarray | None = None,
    customer_ids: np.ndarray | None = None,
    half_life_days: float | None = None,
    log_scale: bool = False,
) -> Interactions:
    """Aggregate events into a confidence matrix (see the module docstring for the formula).

    ``item_ids`` / ``customer_ids`` fix the index order (e.g. the catalog order); ids seen only
    in the events are appended after them.
    """
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    cols = lf.collect_schema().names()
    for c in ("customer_id", "item_id"):
        if c not in cols:
            raise ValueError(f"events need a {c!r} column (EVENTS schema, features/schemas.py)")
    qty = pl.col("quantity").fill_null(1.0) if "quantity" in cols else pl.lit(1.0)
    weight = qty.cast(pl.Float64)
    if half_life_days is not None:
        if "ts" not in cols:
            raise ValueError("recency decay needs a 'ts' column")
        if half_life_days <= 0:
            raise ValueError(f"half_life_days must be > 0, got {half_life_days}")
        age_days = (pl.col("ts").max() - pl.col("ts")).dt.total_seconds() / 86400.0
        weight = weight * (0.5 ** (age_days / half_life_days))
    base = lf.select(
        pl.col("customer_id").cast(pl.String),
        pl.col("item_id").cast(pl.String),
        weight.alias("w"),
    )
    pairs_all = (
        base.filter(pl.col("item_id").is_not_null())
        .group_by("customer_id", "item_id")
        .agg(pl.col("w").sum())
        .collect()
    )
    n_events = int(base.select(pl.len()).collect().item())
    no_item = int(base.filter(pl.col("item_id").is_null()).select(pl.len()).collect().item())
    return interactions_from_pairs(
        pairs_all,
        n_events=n_events,
        events_without_item=no_item,
        item_ids=item_ids,
        customer_ids=customer_ids,
        log_scale=log_scale,
    )


def interactions_from_pairs(
    pairs_all: pl.DataFrame,
    *,
    n_events: int,
    events_without_item: int,
    item_ids: np.ndarray | None = None,
    customer_ids: np.ndarray | None = None,
    log_scale: bool = False,
) -> Interactions:
    """The matrix from per-(customer_id, item_id) summed weights ``w`` (``build_interactions``
    or the same sums computed on Spark, training/spark_engine.py)."""
    no_item = events_without_item
    pairs = pairs_all.filter(pl.col("w") > 0)
    cust = _ordered_ids(pairs["customer_id"], customer_ids)
    items = _ordered_ids(pairs["item_id"], item_ids)
    cmap = pl.DataFrame({"customer_id": cust, "u": np.arange(len(cust), dtype=np.int64)})
    imap = pl.DataFrame({"item_id": items, "i": np.arange(len(items), dtype=np.int64)})
    idx = pairs.join(cmap, on="customer_id").join(imap, on="item_id")
    w = idx["w"].to_numpy().astype(np.float64)
    if log_scale:
        w = np.log1p(w)
    matrix = sparse.csr_matrix(
        (w.astype(np.float32), (idx["u"].to_numpy(), idx["i"].to_numpy())),
        shape=(len(cust), len(items)),
        dtype=np.float32,
    )
    matrix.sort_indices()
    counts = {
        "events": n_events,
        "events_without_item": no_item,
        "pairs": pairs.height,
        "pairs_net_nonpositive": pairs_all.height - pairs.height,
    }
    return Interactions(matrix=matrix, customer_ids=cust, item_ids=items, counts=counts)


def baskets_matrix(
    events: pl.DataFrame | pl.LazyFrame, item_ids: np.ndarray
) -> sparse.csr_matrix | None:
    """Order x item binary matrix from ``order_id`` (None when the events carry no order ids).

    Only orders with two or more distinct items are kept: single-item orders say nothing about
    what is bought together.
    """
    lf = events.lazy() if isinstance(events, pl.DataFrame) else events
    if "order_id" not in lf.collect_schema().names():
        return None
    imap = pl.DataFrame({"item_id": np.asarray(item_ids).astype(str)}).with_row_index("i")
    pairs = (
        lf.filter(pl.col("order_id").is_not_null() & pl.col("item_id").is_not_null())
        .select(pl.col("order_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .unique()
        .join(imap.lazy(), on="item_id")
        .with_columns(pl.len().over("order_id").alias("n"))
        .filter(pl.col("n") >= 2)
        .with_columns(pl.col("order_id").rank("dense").cast(pl.Int64).alias("o") - 1)
        .collect()
    )
    if pairs.height == 0:
        return None
    n_orders = int(pairs["o"].max()) + 1  # type: ignore[arg-type]
    return sparse.csr_matrix(
        (
            np.ones(pairs.height, np.float32),
            (pairs["o"].to_numpy(), pairs["i"].to_numpy().astype(np.int64)),
        ),
        shape=(n_orders, len(item_ids)),
    )
