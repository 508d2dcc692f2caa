"""Recommendation use cases over one LoadedModel (no HTTP; shared by the routes).

Each function takes the model a request started with and the customer's online row (None
when Redis is unusable: the answer then comes from the bundle alone) and returns plain data.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features.online import CustomerOnline
from features.schemas import DEFAULT_TIERS
from serving import ranking
from serving.candidates import (
    CandidateSet,
    Source,
    fold_in,
    generate,
    overfetch,
    precomputed_hits,
)
from serving.errors import NotFound
from serving.index import search
from serving.model import LoadedModel, tier_rank
from serving.render import picks_json
from serving.rules.apply import rank_with_rules
from serving.rules.engine import CustomerContext, apply_rules
from serving.rules.loader import LoadedRules

MAX_RECENT = 50


@dataclass
class Pick:
    item_id: str
    score: float
    reasons: list[str]


@dataclass
class RecResult:
    tier: str
    segment: str | None
    items: list[Pick]
    rules_version: str = ""
    fallback: str | None = None  # "fold_in" | "popular" when the customer has no model vector
    extra: dict[str, str] = field(default_factory=dict)

    def items_json(self) -> bytes:
        """The items as the response JSON array (serving/render.py)."""
        return picks_json(self.items)


def item_index(model: LoadedModel, item_id: str) -> int:
    pos = model.item_pos.get(item_id)
    if pos is None:
        raise NotFound(f"item {item_id!r} is not in the catalog of model {model.version}")
    return pos


def category_code(model: LoadedModel, category: str) -> int:
    try:
        return model.items.categories.index(category)
    except ValueError:
        raise NotFound(
            f"category {category!r} is not in the catalog of model {model.version}"
        ) from None


def context_for(
    model: LoadedModel, online: CustomerOnline | None, now: float | None = None
) -> CustomerContext:
    """Customer context from the online row; defaults (lowest tier, nothing recent) without."""
    now = time.time() if now is None else now
    tier = (online.tier if online is not None else None) or DEFAULT_TIERS[0]
    recent_idx: list[int] = []
    recent_age: list[float] = []
    if online is not None:
        for item_id, ts in online.recent_items[:MAX_RECENT]:
            pos = model.item_pos.get(item_id)
            if pos is not None and pos not in recent_idx:
                recent_idx.append(pos)
                recent_age.append(max(0.0, (now - float(ts)) / 86_400.0))
    return CustomerContext(
        tier=tier,
        tier_rank=tier_rank(tier),
        segment=online.segment if online else None,
        churn_risk=online.churn_risk if online else None,
        clv_band=online.clv_band if online else None,
        typical_spend=online.typical_spend if online else None,
        recent_item_idx=np.asarray(recent_idx, dtype=np.int32) if recent_idx else _NO_ITEMS,
        recent_days_ago=np.asarray(recent_age, dtype=np.float32) if recent_idx else _NO_DAYS,
    )


# most customers bought nothing recently: one shared, read-only empty pair for all of them
_NO_ITEMS = np.empty(0, np.int32)
_NO_DAYS = np.empty(0, np.float32)
_NO_ITEMS.flags.writeable = False
_NO_DAYS.flags.writeable = False


def _picks(
    model: LoadedModel,
    cands: CandidateSet,
    ctx: CustomerContext,
    k: int,
    excl: np.ndarray,
    rules: LoadedRules | None,
    fallback: bool = False,
) -> tuple[list[Pick], str]:
    """Business rules when given (the API always gives them), else model-only ranking (offline
    evaluation). ``fallback`` pads with popular-in-tier / popular so k items come back."""
    if rules is None:
        p = ranking.rank(cands, ctx, model.items, k, excl)
    elif fallback:
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


def recommend(
    model: LoadedModel,
    customer_id: str,
    online: CustomerOnline | None,
    k: int,
    *,
    category: str | None = None,
    exclude: Sequence[str] = (),
    context_item: str | None = None,
    rules: LoadedRules | None = None,
) -> RecResult:
    """Personalised top-k: ALS (own or folded-in vector) + co-purchase + popular, then rank."""
    ctx = context_for(model, online)
    ctx_idx = item_index(model, context_item) if context_item else None
    code = category_code(model, category) if category else None
    trained = model.training_items(customer_id)
    extra = [model.item_pos[e] for e in exclude if e in model.item_pos]
    if ctx_idx is not None:
        extra.append(ctx_idx)
    excl = np.concatenate([trained, np.asarray(extra, dtype=np.int32)])
    n_blocked = len(excl) + len(ctx.recent_item_idx)

    fallback = None
    user_vec = model.user_vector(customer_id)
    if user_vec is None and len(ctx.recent_item_idx):
        user_vec = fold_in(
            model.data.item_factors,
            model.item_gram,
            ctx.recent_item_idx,
            reg=model.reg,
            alpha=model.alpha,
        )
        fallback = "fold_in"
    elif user_vec is None:
        fallback = "popular"
    anchors = ctx.recent_item_idx
    if ctx_idx is not None:
        anchors = np.concatenate([[ctx_idx], anchors]).astype(np.int32)
    elif len(anchors) == 0 and len(trained):
        anchors = trained[:10]
    weights = dict(model.manifest.blend)
    if ctx_idx is not None:  # the item on screen: its neighbours matter as much as taste
        weights["copurchase"] = max(weights.get("copurchase", 0.0), weights.get("als", 0.0))
    pop = model.popular_for(ctx.tier, category)
    n_items = len(model.item_pos)
    want = overfetch(k, n_blocked, n_items)
    if code is not None:  # a category filter discards most ALS hits: fetch deeper
        want = min(n_items, want * 8)
    als = None
    table, pos = model.data.als_candidates, model.customer_pos.get(customer_id)
    if table is not None and pos is not None and user_vec is not None and want <= table.shape[1]:
        scores = model.data.als_scores
        als = precomputed_hits(
            table[pos],
            model.data.item_factors,
            user_vec,
            want,
            None if scores is None else scores[pos],
        )
    cands = generate(
        als=als,
        index=model.index,
        copurchase=model.data.copurchase,
        popular_idx=pop.item_idx,
        popular_score=pop.score,
        popular_source=Source.POPULAR_TIER if ctx.tier in model.popular_tier else Source.POPULAR,
        weights=weights,
        user_vec=user_vec,
        recent_idx=anchors,
        n_als=want,
        n_popular=min(len(pop.item_idx), max(50, 2 * k + n_blocked)),
    )
    if code is not None:
        cands = _in_category(model, cands, code)
    items, rules_version = _picks(model, cands, ctx, k, excl, rules, fallback=code is None)
    return RecResult(ctx.tier, ctx.segment, items, rules_version, fallback)


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
    for p in items:
        p.reasons = [f"similar to {item_id}", *p.reasons[1:]]
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
    tier_name = tier or DEFAULT_TIERS[0]
    pop = model.popular_for(tier, category)
    ctx = CustomerContext(
        tier=tier_name,
        tier_rank=tier_rank(tier_name),
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
