"""The one call the API's ranking hook and the email export share: rules + fallback lists.

Kept apart from serving/service.py and serving/picks.py so either can import it without a cycle.
"""

from __future__ import annotations

import numpy as np

from serving.candidates import CandidateSet
from serving.model import LoadedModel
from serving.rules.engine import CustomerContext, Picks, apply_rules
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
    """One customer's top-k with reasons: what ``serving.service._picks`` should call."""
    tier_idx, pop_idx = fallback_lists(model, ctx.tier)
    return apply_rules(cands, ctx, model.items, rules, k, exclude_idx, tier_idx, pop_idx)
