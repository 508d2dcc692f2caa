"""Small synthetic catalogs, customers and candidates for rule tests (no I/O)."""

from __future__ import annotations

import numpy as np

from patron.scoring import CandidateSet, Source
from serving.rules.engine import CustomerContext, ItemTable

TIERS = ("bronze", "silver", "gold", "platinum")


def item_table(
    n: int,
    *,
    seed: int = 0,
    n_categories: int = 4,
    p_exclusive: float = 0.2,
    p_out_of_stock: float = 0.1,
) -> ItemTable:
    rng = np.random.default_rng(seed)
    cats = tuple(f"cat{c}" for c in range(n_categories))
    min_rank = np.where(rng.random(n) < p_exclusive, rng.integers(1, len(TIERS), n), 0).astype(
        np.int8
    )
    return ItemTable(
        item_ids=np.array([f"i{j}" for j in range(n)]),
        category_code=rng.integers(0, n_categories, n).astype(np.int32),
        categories=cats,
        price=rng.uniform(1, 100, n).astype(np.float32),
        in_stock=rng.random(n) >= p_out_of_stock,
        min_tier_rank=min_rank,
        premium=rng.random(n) < 0.2,
        on_promo=rng.random(n) < 0.2,
        launched_days_ago=rng.uniform(0, 400, n).astype(np.float32),
        tier_names=tuple(TIERS),
    )


def candidates(item_idx: np.ndarray, seed: int = 0, anchors: int | None = None) -> CandidateSet:
    """Candidates over the given items, best first, with mixed sources."""
    rng = np.random.default_rng(seed)
    m = len(item_idx)
    score = np.sort(rng.uniform(-0.5, 2.0, m))[::-1].astype(np.float32)
    source = rng.integers(0, 4, m).astype(np.int8)
    anchor = np.where(
        source == int(Source.COPURCHASE),
        anchors if anchors is not None else rng.integers(0, max(1, int(item_idx.max()) + 1), m),
        -1,
    ).astype(np.int32)
    return CandidateSet(
        item_idx=np.asarray(item_idx, np.int32), score=score, source=source, anchor_idx=anchor
    )


def customer(
    tier: str = "bronze",
    *,
    segment: str | None = "regular",
    churn_risk: float | None = 0.1,
    clv_band: str | None = "medium",
    typical_spend: float | None = 30.0,
    recent: dict[int, float] | None = None,
    past_categories: tuple[str, ...] = (),
) -> CustomerContext:
    recent = recent or {}
    return CustomerContext(
        tier=tier,
        tier_rank=TIERS.index(tier) if tier in TIERS else 0,
        segment=segment,
        churn_risk=churn_risk,
        clv_band=clv_band,
        typical_spend=typical_spend,
        recent_item_idx=np.array(list(recent.keys()), np.int32),
        recent_days_ago=np.array(list(recent.values()), np.float32),
        past_categories=past_categories,
    )
