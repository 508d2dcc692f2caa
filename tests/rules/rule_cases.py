"""Random rule-engine cases for the property tests (tests/rules/test_properties.py): a
catalog, customers, candidates (unsorted, with duplicates) and a valid rule set."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st

from patron.scoring import CandidateSet
from serving.rules.engine import (
    CustomerContext,
    ItemTable,
)
from serving.rules.models import RuleSet
from tests.rules.synth import TIERS

CHAIN = ("personalised", "copurchase", "popular_tier", "popular")
SOURCE_NAME = {0: "personalised", 1: "copurchase", 2: "popular_tier", 3: "popular"}
SEGMENTS = ("regular", "at_risk", "new", "high_value")


@dataclass
class Case:
    items: ItemTable
    rules: RuleSet
    ctx: CustomerContext
    cands: CandidateSet
    exclude: np.ndarray
    pop_tier: np.ndarray
    pop: np.ndarray
    k: int


@st.composite
def cases(draw: st.DrawFn) -> Case:
    n = draw(st.integers(3, 40))
    n_cat = draw(st.integers(1, 4))
    cats = tuple(f"c{i}" for i in range(n_cat))
    bools = st.lists(st.booleans(), min_size=n, max_size=n)
    items = ItemTable(
        item_ids=np.array([f"i{j}" for j in range(n)]),
        category_code=np.array(
            draw(st.lists(st.integers(0, n_cat - 1), min_size=n, max_size=n)), np.int32
        ),
        categories=cats,
        price=np.array(draw(st.lists(st.floats(1, 100), min_size=n, max_size=n)), np.float32),
        in_stock=np.array(draw(bools), bool),
        min_tier_rank=np.array(draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int8),
        premium=np.array(draw(bools), bool),
        on_promo=np.array(draw(bools), bool),
        launched_days_ago=np.array(
            draw(st.lists(st.floats(0, 400), min_size=n, max_size=n)), np.float32
        ),
        tier_names=("bronze", "silver", "gold", "platinum"),
    )
    item_idx = st.integers(0, n - 1)
    cond = st.fixed_dictionaries(
        {},
        optional={
            "tier_at_least": st.sampled_from(TIERS),
            "segment_in": st.lists(st.sampled_from(SEGMENTS), min_size=1, max_size=2),
            "churn_risk_at_least": st.floats(0, 1),
        },
    )
    item_cond = st.fixed_dictionaries(
        {},
        optional={
            "premium": st.booleans(),
            "on_promo": st.booleans(),
            "exclusive": st.booleans(),
            "new_within_days": st.floats(1, 300),
            "category_in": st.lists(st.sampled_from(cats), min_size=1, max_size=2),
            "in_past_categories": st.booleans(),
            "price_band": st.fixed_dictionaries(
                {"min_ratio": st.floats(0, 1), "max_ratio": st.floats(1, 5)}
            ),
            "source_in": st.lists(st.sampled_from(CHAIN), min_size=1, max_size=2),
        },
    )
    boosts = draw(
        st.lists(
            st.fixed_dictionaries(
                {
                    "when": cond,
                    "item": item_cond,
                    "multiply": st.floats(0.1, 10),
                    "reason": st.sampled_from(["b", "{tier} pick", "{category}!"]),
                }
            ),
            max_size=3,
        )
    )
    k = draw(st.integers(1, 10))
    n_pins = draw(st.integers(0, min(2, k)))
    pin_slots = draw(st.lists(st.integers(1, k), min_size=n_pins, max_size=n_pins, unique=True))
    pins = [
        {"name": f"p{j}", "item_id": f"i{draw(item_idx)}", "slot": s, "when": draw(cond)}
        for j, s in enumerate(pin_slots)
    ]
    fallback = draw(st.permutations(CHAIN))[: draw(st.integers(1, 4))]
    rules = RuleSet.model_validate(
        {
            "version": "t",
            "eligibility": {"enforce_min_tier": draw(st.booleans())},
            "exclusions": {
                "recently_bought_days": draw(st.sampled_from([0, 5, 30, 90])),
                "repurchase_days": draw(
                    st.dictionaries(st.sampled_from(cats), st.sampled_from([0, 2, 10]), max_size=2)
                ),
                "out_of_stock": draw(st.booleans()),
                "blocklist": [f"i{j}" for j in draw(st.lists(item_idx, max_size=3))],
            },
            "boosts": [{"name": f"b{j}", **b} for j, b in enumerate(boosts)],
            "diversity": {"max_per_category": draw(st.none() | st.integers(1, 4))},
            "pins": pins,
            "fallback": list(fallback),
        }
    )
    tier = draw(st.sampled_from(TIERS))
    recent = draw(st.dictionaries(item_idx, st.floats(0, 120), max_size=5))
    ctx = CustomerContext(
        tier=tier,
        tier_rank=TIERS.index(tier),
        segment=draw(st.sampled_from(SEGMENTS)),
        churn_risk=draw(st.none() | st.floats(0, 1)),
        clv_band=None,
        typical_spend=draw(st.none() | st.floats(1, 100)),
        recent_item_idx=np.array(list(recent), np.int32),
        recent_days_ago=np.array(list(recent.values()), np.float32),
        past_categories=tuple(draw(st.lists(st.sampled_from(cats), max_size=2))),
    )
    cand_items = draw(st.lists(item_idx, unique=True, max_size=n))
    m = len(cand_items)
    scores = draw(st.lists(st.floats(-2, 2), min_size=m, max_size=m))
    if draw(st.booleans()):  # the scoring library's order; item routes may hand any order
        scores = sorted(scores, reverse=True)
    cands = CandidateSet(
        item_idx=np.array(cand_items, np.int32),
        score=np.array(scores, np.float32),
        source=np.array(draw(st.lists(st.integers(0, 3), min_size=m, max_size=m)), np.int8),
        anchor_idx=np.array(draw(st.lists(item_idx, min_size=m, max_size=m)), np.int32),
    )
    perm = st.permutations(list(range(n)))
    return Case(
        items=items,
        rules=rules,
        ctx=ctx,
        cands=cands,
        exclude=np.array(draw(st.lists(item_idx, max_size=3)), np.int32),
        pop_tier=np.array(draw(perm)[: draw(st.integers(0, n))], np.int32),
        pop=np.array(draw(perm)[: draw(st.integers(0, n))], np.int32),
        k=k,
    )
