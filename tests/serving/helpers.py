"""Test helpers: small bundles with planted structure, and the online-store fallback fake."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from features.schemas import DEFAULT_TIERS
from patron.bundle import BundleData, Manifest, write_bundle

N_CAT = 4


def item_id(j: int) -> str:
    return f"i{j:04d}"


def customer_id(u: int) -> str:
    return f"c{u:05d}"


def make_bundle_data(
    n_items: int = 240, n_customers: int = 300, f: int = 16, seed: int = 0, version: str = "1"
) -> BundleData:
    """Planted structure: items of category c cluster around centre c; each customer likes
    one category and bought 5 of its items; co-purchase neighbours are same-category items."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(N_CAT, f)).astype(np.float32) * 2
    cat = np.arange(n_items) % N_CAT
    y = (centres[cat] + rng.normal(scale=0.5, size=(n_items, f))).astype(np.float32)
    likes = np.arange(n_customers) % N_CAT
    x = (centres[likes] / 4 + rng.normal(scale=0.1, size=(n_customers, f))).astype(np.float32)
    rows, cols = [], []
    for u in range(n_customers):
        pool = np.flatnonzero(cat == likes[u])
        for j in rng.choice(pool, 5, replace=False):
            rows.append(u)
            cols.append(int(j))
    ui = sparse.csr_matrix(
        (np.ones(len(rows), np.float32), (rows, cols)), shape=(n_customers, n_items)
    )
    sim = y @ y.T
    np.fill_diagonal(sim, -np.inf)
    sim[cat[:, None] != cat[None, :]] = -np.inf
    nb = np.argsort(-sim, axis=1)[:, :8]
    cp = sparse.csr_matrix(
        (
            np.tile(np.linspace(1.0, 0.3, 8, dtype=np.float32), n_items),
            nb.ravel(),
            np.arange(0, n_items * 8 + 1, 8),
        ),
        shape=(n_items, n_items),
    )
    counts = np.asarray(ui.sum(axis=0)).ravel() + rng.random(n_items)
    order = np.argsort(-counts)
    pop = [pl.DataFrame({"scope": "overall", "key": "", "item_idx": order, "score": counts[order]})]
    for t, tier in enumerate(DEFAULT_TIERS):
        o = np.roll(order, -3 * t)
        pop.append(
            pl.DataFrame(
                {"scope": "tier", "key": tier, "item_idx": o, "score": np.arange(n_items, 0, -1)}
            )
        )
    for c in range(N_CAT):
        o = order[cat[order] == c]
        pop.append(
            pl.DataFrame({"scope": "category", "key": f"cat{c}", "item_idx": o, "score": counts[o]})
        )
    popularity = pl.concat(
        [
            p.with_columns(
                pl.col("item_idx").cast(pl.Int32),
                pl.col("score").cast(pl.Float64),
                pl.int_range(pl.len()).alias("rank").cast(pl.Int32),
            )
            for p in pop
        ]
    )
    min_tier = [None] * n_items
    for j in range(0, n_items, 17):
        min_tier[j] = "gold"
    in_stock = np.ones(n_items, bool)
    in_stock[5::23] = False
    now = datetime.now(UTC)
    catalog = pl.DataFrame(
        {
            "item_id": [item_id(j) for j in range(n_items)],
            "category": [f"cat{c}" for c in cat],
            "price": rng.uniform(5, 100, n_items),
            "in_stock": in_stock,
            "min_tier": min_tier,
            "premium": np.arange(n_items) % 11 == 0,
            "on_promo": np.arange(n_items) % 7 == 0,
            "launched_at": [now - timedelta(days=int(d)) for d in rng.integers(1, 400, n_items)],
            "margin": rng.uniform(0.1, 0.5, n_items),
        },
        schema_overrides={"min_tier": pl.String},
    )
    return BundleData(
        customer_ids=np.array([customer_id(u) for u in range(n_customers)]),
        item_ids=np.array([item_id(j) for j in range(n_items)]),
        user_factors=x,
        item_factors=y,
        copurchase=cp,
        user_items=ui,
        popularity=popularity,
        catalog=catalog,
        manifest=Manifest(
            model_version=version,
            params={"factors": f, "regularization": 0.05, "alpha": 2.0},
            metrics={"ndcg@10": 0.25},
        ),
    )


def make_bundle(path: Path, **kw: Any) -> Path:
    write_bundle(make_bundle_data(**kw), path)
    return path


def category_of(j: int) -> int:
    return j % N_CAT


# ------------------------------------------------------------------------ online store
def sync_store(client: Any, namespace: str) -> Any:
    from features.online import OnlineStore

    return OnlineStore(client, namespace=namespace)


def customers_frame(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    return pl.DataFrame(
        list(rows),
        schema={
            "customer_id": pl.String,
            "tier": pl.String,
            "segment": pl.String,
            "churn_risk": pl.Float64,
            "clv_band": pl.String,
            "loyalty_index": pl.Float64,
            "marketing_consent": pl.Boolean,
            "next_tier": pl.String,
            "progress_to_next": pl.Float64,
            "typical_spend": pl.Float64,
        },
    )


def items_frame(n_items: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": [item_id(j) for j in range(n_items)],
            "in_stock": [True] * n_items,
            "min_tier": [None] * n_items,
        },
        schema={"item_id": pl.String, "in_stock": pl.Boolean, "min_tier": pl.String},
    )
