"""Recommendation use cases over one LoadedModel (no HTTP; shared by the routes).

Each function takes the model a request started with and the customer's online row (None
when Redis is unusable: the answer then comes from the bundle alone) and returns plain data.
"""

from __future__ import annotations

import numpy as np

from features.online import CustomerOnline
from patron.scoring import CandidateSet, Source
from serving.index import search
from serving.model import LoadedModel
from serving.recommend import (
    Pick,
    RecResult,
    category_code,
    context_for,
    item_index,
    recommend,
)
from serving.rules.apply import rank_with_rules
from serving.rules.engine import CustomerContext, apply_rules
from serving.rules.loader import LoadedRules, fallback_only

__all__ = ["Pick", "RecResult", "bought_together", "popular", "recommend", "similar"]


def overfetch(k: int, n_excluded: int, n_items: int) -> int:
    """How many nearest items to ask FAISS for so that k survive filtering."""
    return int(min(n_items, max(4 * k, k + n_excluded + 20)))


def _picks(
    model: LoadedModel,
    cands: CandidateSet,
    ctx: CustomerContext,
    k: int,
    excl: np.ndarray,
    rules: LoadedRules | None,
    fallback: bool = False,
) -> tuple[list[Pick], str]:
    """Business rules (``None``: the fallback-only rules) over an item's list. ``fallback``
    pads with popular-in-tier / popular so k items come back."""
    rules = rules if rules is not None else fallback_only()
    if fallback:
        p = rank_with_rules(model, cands, ctx, rules, k, excl)
    else:  # item-anchored lists: no popular padding, no diversity cap
        p = apply_rules(cands, ctx, model.items, rules.item_anchored, k, excl)
    ids = model.item_id_list
    items = [
        Pick(ids[i], float(s), r)
        for i, s, r in zip(p.item_idx.tolist(), p.score.tolist(), p.reasons, strict=True)
    ]
    return items, p.rules_version


def _anchored_exclusions(model: LoadedModel, pos: int, customer_id: str | None) -> np.ndarray:
    """The anchor item itself and, for a known customer, what they bought in training."""
    own = model.training_items(customer_id) if customer_id else np.empty(0, np.int32)
    return np.concatenate([[pos], own]).astype(np.int32)


def _in_category(model: LoadedModel, cands: CandidateSet, code: int) -> CandidateSet:
    m = model.items.category_code[cands.item_idx] == code
    return CandidateSet(cands.item_idx[m], cands.score[m], cands.source[m], cands.anchor_idx[m])


def similar(
    model: LoadedModel,
    item_id: str,
    k: int,
    customer_id: str | None = None,
    online: CustomerOnline | None = None,
    rules: LoadedRules | None = None,
) -> RecResult:
    """Nearest items by factor inner product, excluding the item (and the customer's own)."""
    pos = item_index(model, item_id)
    ctx = context_for(model, online)
    excl = _anchored_exclusions(model, pos, customer_id)
    n = overfetch(k, len(excl) + len(ctx.recent_item_idx), len(model.item_pos))
    idx, score = search(model.index, model.data.item_factors[pos], n)
    cands = CandidateSet(
        idx, score, np.full(len(idx), Source.ALS, np.int8), np.full(len(idx), -1, np.int32)
    )
    items, rules_version = _picks(model, cands, ctx, k, excl, rules)
    personalised = (rules or fallback_only()).rules.reasons.personalised
    for p in items:  # "similar to X" in place of the personalised reason; the rules' stay
        p.reasons = [f"similar to {item_id}", *(r for r in p.reasons if r != personalised)]
    return RecResult(ctx.tier, ctx.segment, items, rules_version)


def bought_together(
    model: LoadedModel,
    item_id: str,
    k: int,
    customer_id: str | None = None,
    online: CustomerOnline | None = None,
    rules: LoadedRules | None = None,
) -> RecResult:
    """The item's co-purchase neighbours (may be fewer than k)."""
    pos = item_index(model, item_id)
    ctx = context_for(model, online)
    cp = model.data.copurchase
    lo, hi = int(cp.indptr[pos]), int(cp.indptr[pos + 1])
    idx = np.asarray(cp.indices[lo:hi], np.int32)
    cands = CandidateSet(
        idx,
        np.asarray(cp.data[lo:hi], np.float32),
        np.full(len(idx), Source.COPURCHASE, np.int8),
        np.full(len(idx), pos, np.int32),
    )
    excl = _anchored_exclusions(model, pos, customer_id)
    items, rules_version = _picks(model, cands, ctx, k, excl, rules)
    return RecResult(ctx.tier, ctx.segment, items, rules_version)


def popular(
    model: LoadedModel,
    k: int,
    tier: str | None = None,
    category: str | None = None,
    rules: LoadedRules | None = None,
) -> RecResult:
    """Popular items (in a tier or category when given) the tier may buy, in stock."""
    code = category_code(model, category) if category else None
    tier_name = tier or model.tiers[0]
    pop = model.popular_for(tier, category)
    ctx = CustomerContext(
        tier=tier_name,
        tier_rank=model.tier_rank(tier_name),
        segment=None,
        churn_risk=None,
        clv_band=None,
        typical_spend=None,
        recent_item_idx=np.empty(0, np.int32),
        recent_days_ago=np.empty(0, np.float32),
    )
    src = Source.POPULAR_TIER if tier and tier in model.popular_tier else Source.POPULAR
    cands = CandidateSet(
        pop.item_idx,
        pop.score,
        np.full(len(pop.item_idx), src, np.int8),
        np.full(len(pop.item_idx), -1, np.int32),
    )
    if code is not None:
        cands = _in_category(model, cands, code)
    items, rules_version = _picks(model, cands, ctx, k, np.empty(0, np.int32), rules)
    return RecResult(tier_name, None, items, rules_version)
