"""Business rules over the scoring library's candidates, with the model's fallback lists.

The one place the API (one customer or many), the item routes and the email export hand
candidates to the rules engine. Kept apart from serving/recommend.py and serving/export/ so
either can import it without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from patron.scoring import CandidateBatch, CandidateSet
from serving.model import LoadedModel
from serving.rules.engine import (
    BatchPicks,
    CustomerBatch,
    CustomerContext,
    Picks,
    apply_rules,
    apply_rules_batch,
    compiled_for,
    customers_from_contexts,
)
from serving.rules.loader import LoadedRules


def fallback_lists(model: LoadedModel, tier: str) -> tuple[np.ndarray, np.ndarray]:
    """The fallback chain's popular lists for a tier: (popular in tier, popular overall)."""
    pt = model.popular_tier.get(tier)
    tier_idx = pt.item_idx if pt is not None else np.empty(0, np.int32)
    return tier_idx, model.popular_overall.item_idx


def rank_with_rules(
    model: LoadedModel,
    cands: CandidateSet,
    ctx: CustomerContext,
    rules: LoadedRules,
    k: int,
    exclude_idx: np.ndarray,
) -> Picks:
    """One list's top-k with reasons and the fallback chain (the item routes)."""
    tier_idx, pop_idx = fallback_lists(model, ctx.tier)
    return apply_rules(cands, ctx, model.items, rules, k, exclude_idx, tier_idx, pop_idx)


def _fallback_rows(model: LoadedModel, names: tuple[str, ...]) -> np.ndarray:
    """The tiers' popular-in-tier fallback lists (-1 padded rows), once per model."""
    key = ("fallback_rows", names)
    hit = model.cache.get(key)
    if hit is None:
        lists = [fallback_lists(model, t)[0] for t in names]
        width = max((len(t) for t in lists), default=0)
        hit = np.full((len(names), width), -1, np.int32)
        for i, t in enumerate(lists):
            hit[i, : len(t)] = t
        model.cache[key] = hit
    return hit  # type: ignore[return-value]


def rules_batch(
    model: LoadedModel,
    rules: LoadedRules,
    cands: CandidateBatch,
    exclude: tuple[np.ndarray, np.ndarray],
    ctxs: Sequence[CustomerContext],
    k: int,
    *,
    pad: bool = True,
) -> BatchPicks:
    """Every row's top-k after the rules; ``pad``: the fallback chain fills short rows
    (off for category-filtered lists, where popular items would leave the category)."""
    compiled = compiled_for(rules, model.items)
    customers: CustomerBatch = customers_from_contexts(list(ctxs), compiled)
    customers.exclude_indptr, customers.exclude_idx = exclude[0], exclude[1].astype(np.int32)
    if not pad:
        return apply_rules_batch(cands, customers, compiled, k)
    tiers = tuple(sorted({c.tier for c in ctxs}))
    per_tier = _fallback_rows(model, tiers)
    code = {t: i for i, t in enumerate(tiers)}
    pop_tier = per_tier[np.array([code[c.tier] for c in ctxs], np.int64)]
    return apply_rules_batch(
        cands, customers, compiled, k, pop_tier, model.popular_overall.item_idx
    )
