"""Personalised recommendations: the scoring library, then the business rules (no HTTP).

Every personalised answer comes from here: ``GET /v1/customers/{id}/recommendations`` (one
customer is a batch of one), the API's coalesced requests and ``POST /v1/recommendations/
batch`` (``recommend_batch_rendered``), and the email export (serving/export/, the same
``customer_request`` and ``rules_batch``). Candidates and their scores are
``patron.scoring.score_batch``'s, unchanged: the API adds nothing to what evaluation measures
but the rules.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from features.online import CustomerOnline
from patron.scoring import CandidateBatch, ScoreRequest, exclusions, score_batch
from serving.errors import NotFound
from serving.model import LoadedModel
from serving.render import RenderedResult, picks_json
from serving.rules.apply import rules_batch
from serving.rules.engine import BatchPicks, CustomerContext
from serving.rules.loader import LoadedRules, fallback_only

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

    def served_items(self, item_ids: Sequence[str]) -> list[str]:
        return [p.item_id for p in self.items]


# most customers bought nothing recently: one shared, read-only empty pair for all of them
_NO_ITEMS = np.empty(0, np.int32)
_NO_DAYS = np.empty(0, np.float32)
_NO_ITEMS.flags.writeable = False
_NO_DAYS.flags.writeable = False


def context_for(
    model: LoadedModel, online: CustomerOnline | None, now: float | None = None
) -> CustomerContext:
    """Customer context from the online row; defaults (lowest tier, nothing recent) without."""
    now = time.time() if now is None else now
    tier = (online.tier if online is not None else None) or model.tiers[0]
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
        tier_rank=model.tier_rank(tier),
        segment=online.segment if online else None,
        churn_risk=online.churn_risk if online else None,
        clv_band=online.clv_band if online else None,
        typical_spend=online.typical_spend if online else None,
        recent_item_idx=np.asarray(recent_idx, dtype=np.int32) if recent_idx else _NO_ITEMS,
        recent_days_ago=np.asarray(recent_age, dtype=np.float32) if recent_idx else _NO_DAYS,
    )


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


def customer_request(
    model: LoadedModel,
    customer_ids: Sequence[str],
    ctxs: Sequence[CustomerContext],
    exclude: Sequence[Sequence[str]] | None = None,
    category: str | None = None,
    context_item: str | None = None,
) -> ScoreRequest:
    """The scoring library's request for these customers: their rows in the model, tiers,
    real-time purchases, the request's exclusions, category and item on screen."""
    code = category_code(model, category) if category else -1
    ctx_idx = item_index(model, context_item) if context_item else -1
    n = len(customer_ids)
    pos = model.item_pos
    ex = None
    if exclude is not None and any(exclude):
        ex = [[pos[e] for e in row if e in pos] for row in exclude]
    return ScoreRequest.build(
        model.scoring,
        [model.customer_pos.get(c, -1) for c in customer_ids],
        tiers=[c.tier for c in ctxs],
        recent=[c.recent_item_idx for c in ctxs],
        exclude=ex,
        context=np.full(n, ctx_idx, np.int32),
        category=np.full(n, code, np.int32),
    )


def _fallback(model: LoadedModel, customer_id: str, ctx: CustomerContext) -> str | None:
    if customer_id in model.customer_pos:
        return None
    return "fold_in" if len(ctx.recent_item_idx) else "popular"


def _batch_picks(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules | None,
    exclude: Sequence[Sequence[str]] | None,
    category: str | None,
    context_item: str | None,
    now: float | None,
) -> tuple[list[CustomerContext], BatchPicks]:
    ctxs = [context_for(model, r, now) for r in online]
    req = customer_request(model, customer_ids, ctxs, exclude, category, context_item)
    cands: CandidateBatch = score_batch(model.scoring, req)
    rules = rules if rules is not None else fallback_only()
    if category is not None:  # one category is the point: no padding, no diversity cap
        rules = rules.item_anchored
    out = rules_batch(
        model, rules, cands, exclusions(model.scoring, req), ctxs, k, pad=category is None
    )
    return ctxs, out


def recommend_batch(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules | None = None,
    exclude: Sequence[Sequence[str]] | None = None,
    now: float | None = None,
    *,
    category: str | None = None,
    context_item: str | None = None,
) -> list[RecResult]:
    """Top-k picks with reasons for every customer (``rules=None``: the fallback-only rules)."""
    if len(customer_ids) == 0:
        return []
    ctxs, out = _batch_picks(
        model, customer_ids, online, k, rules, exclude, category, context_item, now
    )
    item_ids = model.item_id_list
    reasons = out.all_reasons(item_ids)
    idx, scores, counts = out.item_idx.tolist(), out.score.tolist(), out.count.tolist()
    results = []
    for row, (cid, ctx) in enumerate(zip(customer_ids, ctxs, strict=True)):
        c = counts[row]
        picks = [
            Pick(item_ids[i], s, r)
            for i, s, r in zip(idx[row][:c], scores[row][:c], reasons[row], strict=True)
        ]
        fallback = _fallback(model, cid, ctx)
        results.append(RecResult(ctx.tier, ctx.segment, picks, out.rules_version, fallback))
    return results


def recommend_batch_rendered(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules | None = None,
    exclude: Sequence[Sequence[str]] | None = None,
    now: float | None = None,
    *,
    category: str | None = None,
    context_item: str | None = None,
) -> list[RenderedResult]:
    """``recommend_batch`` with each row's items rendered as response JSON (the API's path:
    no pick objects, no response model; same bytes, tests/serving/test_render.py)."""
    if len(customer_ids) == 0:
        return []
    ctxs, out = _batch_picks(
        model, customer_ids, online, k, rules, exclude, category, context_item, now
    )
    rows = model.items_json.rows(out)
    idx, counts = out.item_idx, out.count.tolist()
    return [
        RenderedResult(
            ctx.tier, ctx.segment, out.rules_version, _fallback(model, cid, ctx), js, idx[i, :c]
        )
        for i, (cid, ctx, js, c) in enumerate(zip(customer_ids, ctxs, rows, counts, strict=True))
    ]


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
    """One customer's top-k: ``recommend_batch`` of one."""
    return recommend_batch(
        model,
        [customer_id],
        [online],
        k,
        rules,
        [list(exclude)] if exclude else None,
        category=category,
        context_item=context_item,
    )[0]


def warm_model(model: LoadedModel) -> None:
    """Score once a customer the model knows and one it does not (with a purchase and a
    context item, so fold-in and the FAISS path run), so the compiled pass exists for this
    model's array types before the model serves a request, not during one."""
    n = len(model.item_id_list)
    pos = [0 if len(model.customer_pos) else -1, -1]
    recent = [np.zeros(0, np.int32), np.zeros(min(n, 1), np.int32)]
    req = ScoreRequest.build(
        model.scoring, pos, recent=recent, context=np.array([-1, 0 if n else -1], np.int32)
    )
    score_batch(model.scoring, req)
    exclusions(model.scoring, req)
