"""The ranking hook the recommendation path calls: candidates -> final top-k picks.

Minimal filtering until the rules engine (serving/rules/) is switched in here: excluded and
recently bought items, out-of-stock items, items reserved for a higher tier. Pure numpy.
"""

from __future__ import annotations

import numpy as np

from features.schemas import DEFAULT_TIERS
from serving.candidates import CandidateSet, Source
from serving.rules.engine import CustomerContext, ItemTable, Picks


def eligible(
    cands: CandidateSet, ctx: CustomerContext, items: ItemTable, exclude_idx: np.ndarray
) -> np.ndarray:
    """Boolean mask over ``cands``: in stock, tier allows it, not excluded or recently bought."""
    idx = cands.item_idx
    ok = items.in_stock[idx] & (items.min_tier_rank[idx] <= ctx.tier_rank)
    blocked = np.concatenate(
        [np.asarray(exclude_idx, np.int32), np.asarray(ctx.recent_item_idx, np.int32)]
    )
    if len(blocked):
        ok &= ~np.isin(idx, blocked)
    return ok


def reasons_for(
    source: int, anchor: int, item: int, ctx: CustomerContext, items: ItemTable
) -> list[str]:
    out: list[str]
    if source == Source.ALS:
        out = ["recommended for you"]
    elif source == Source.COPURCHASE and anchor >= 0:
        out = [f"bought together with {items.item_ids[anchor]}"]
    elif source == Source.POPULAR_TIER:
        out = ["popular", f"popular in {ctx.tier} tier"]
    else:
        out = ["popular"]
    rank = int(items.min_tier_rank[item])
    if rank > 0:
        out.append(f"{DEFAULT_TIERS[rank]} exclusive")
    if items.on_promo[item]:
        out.append("on promotion")
    return out


def rank(
    cands: CandidateSet, ctx: CustomerContext, items: ItemTable, k: int, exclude_idx: np.ndarray
) -> Picks:
    """Top-k eligible candidates, best first, each with its reasons."""
    keep = np.flatnonzero(eligible(cands, ctx, items, exclude_idx))[:k]
    return Picks(
        item_idx=cands.item_idx[keep].astype(np.int32),
        score=cands.score[keep].astype(np.float32),
        reasons=[
            reasons_for(
                int(cands.source[i]), int(cands.anchor_idx[i]), int(cands.item_idx[i]), ctx, items
            )
            for i in keep
        ],
        rules_version="",
    )
