"""Behavioural tests of the shipped rule set (config/rules.yaml)."""

from __future__ import annotations

import numpy as np
import pytest

from patron.scoring import CandidateSet, Source
from serving.rules.engine import ItemTable, apply_rules
from serving.rules.loader import DEFAULT_RULES_FILE, LoadedRules, load_rules
from tests.rules.synth import TIERS, customer, item_table


@pytest.fixture(scope="module")
def rules() -> LoadedRules:
    return load_rules(DEFAULT_RULES_FILE)


def _catalog(n: int = 60) -> ItemTable:
    """Six categories, all in stock, no exclusives (tests set what they need)."""
    base = item_table(n, seed=7, n_categories=6, p_exclusive=0.0, p_out_of_stock=0.0)
    cats = ("grocery", "books", "music", "garden", "toys", "tools")
    return ItemTable(**{**base.__dict__, "categories": cats})


def _with(items: ItemTable, **cols: np.ndarray) -> ItemTable:
    return ItemTable(**{**items.__dict__, **cols})


def _cands(idx: list[int] | np.ndarray, source: Source = Source.ALS) -> CandidateSet:
    idx = np.asarray(idx, np.int32)
    return CandidateSet(
        item_idx=idx,
        score=np.linspace(2.0, 1.0, len(idx)).astype(np.float32),
        source=np.full(len(idx), int(source), np.int8),
        anchor_idx=np.full(len(idx), -1, np.int32),
    )


def test_default_rules_load_and_version(rules: LoadedRules) -> None:
    assert rules.rules.tiers == list(TIERS)
    assert rules.version.startswith(rules.rules.version + "+")
    assert "win_back" in rules.summary()["boosts"]


def test_bronze_never_gets_gold_exclusive_gold_does(rules: LoadedRules) -> None:
    items = _catalog()
    min_rank = np.zeros(len(items), np.int8)
    min_rank[:20] = 2  # the 20 best-scored candidates are gold exclusives
    items = _with(items, min_tier_rank=min_rank)
    cands = _cands(np.arange(60))
    bronze = apply_rules(cands, customer("bronze"), items, rules, 8)
    assert len(bronze.item_idx) == 8
    assert (items.min_tier_rank[bronze.item_idx] == 0).all()
    gold = apply_rules(cands, customer("gold"), items, rules, 8)
    exclusive = [r for j, r in zip(gold.item_idx, gold.reasons, strict=True) if j < 20]
    assert exclusive, "a gold customer sees gold exclusives"
    assert all("gold exclusive" in r for r in exclusive)
    assert gold.rules_version == rules.version


def test_item_bought_yesterday_is_not_recommended_today(rules: LoadedRules) -> None:
    items = _catalog()
    books = int(np.flatnonzero(items.category_code == 1)[0])  # 60-day window
    cands = _cands([books, *[j for j in range(60) if j != books]])
    fresh = apply_rules(cands, customer("silver"), items, rules, 8)
    assert books in fresh.item_idx.tolist()
    bought = apply_rules(cands, customer("silver", recent={books: 1.0}), items, rules, 8)
    assert books not in bought.item_idx.tolist()
    long_ago = apply_rules(cands, customer("silver", recent={books: 200.0}), items, rules, 8)
    assert books in long_ago.item_idx.tolist()


def test_repurchasable_category_comes_back_after_its_interval(rules: LoadedRules) -> None:
    items = _catalog()
    grocery = int(np.flatnonzero(items.category_code == 0)[0])  # 7-day override
    cands = _cands([grocery, *[j for j in range(60) if j != grocery]])
    yesterday = apply_rules(cands, customer("bronze", recent={grocery: 1.0}), items, rules, 8)
    assert grocery not in yesterday.item_idx.tolist()
    ten_days = apply_rules(cands, customer("bronze", recent={grocery: 10.0}), items, rules, 8)
    assert grocery in ten_days.item_idx.tolist()


def test_at_risk_customer_gets_win_back_in_past_categories(rules: LoadedRules) -> None:
    items = _catalog()
    cands = _cands(np.arange(60))
    at_risk = customer("silver", segment="at-risk", churn_risk=0.8, past_categories=("music",))
    picks = apply_rules(cands, at_risk, items, rules, 8)
    win_back = [
        j for j, r in zip(picks.item_idx, picks.reasons, strict=True) if "win-back offer" in r
    ]
    assert win_back
    music = items.categories.index("music")
    assert any(items.category_code[j] == music for j in win_back)
    regular = apply_rules(cands, customer("silver", segment="regular"), items, rules, 8)
    assert not any("win-back offer" in r for r in regular.reasons)


def test_out_of_stock_never_and_diversity_cap(rules: LoadedRules) -> None:
    items = _catalog()
    stock = np.ones(len(items), bool)
    stock[::2] = False
    items = _with(items, in_stock=stock, category_code=np.zeros(len(items), np.int32))
    picks = apply_rules(_cands(np.arange(60)), customer("gold"), items, rules, 8)
    assert stock[picks.item_idx].all()
    # one category only and a cap of 3: only 3 items can be shown
    assert len(picks.item_idx) == rules.rules.diversity.max_per_category


def test_reasons_name_the_source(rules: LoadedRules) -> None:
    items = _catalog()
    cands = CandidateSet(
        item_idx=np.array([5, 6], np.int32),
        score=np.array([1.0, 0.9], np.float32),
        source=np.array([Source.COPURCHASE, Source.ALS], np.int8),
        anchor_idx=np.array([42, -1], np.int32),
    )
    picks = apply_rules(
        cands,
        customer("bronze"),
        items,
        rules,
        4,
        popular_tier_idx=np.array([7], np.int32),
        popular_idx=np.array([8], np.int32),
    )
    assert picks.item_idx.tolist() == [5, 6, 7, 8]
    assert picks.reasons[0][-1] == "bought together with i42"
    assert picks.reasons[1][-1] == "recommended for you"
    assert picks.reasons[2][-1] == "popular in your tier"
    assert picks.reasons[3][-1] == "popular"


def test_new_customer_without_candidates_gets_popular_fallback(rules: LoadedRules) -> None:
    items = _catalog()
    picks = apply_rules(
        CandidateSet(*(np.zeros(0, t) for t in (np.int32, np.float32, np.int8, np.int32))),
        customer("bronze", segment="new", typical_spend=None),
        items,
        rules,
        8,
        popular_tier_idx=np.arange(10, 30, dtype=np.int32),
        popular_idx=np.arange(60, dtype=np.int32),
    )
    assert len(picks.item_idx) == 8
    assert all("popular in your tier" in r for r in picks.reasons)
    assert set(picks.item_idx.tolist()) <= set(range(10, 30))


def test_request_exclude_list_is_respected(rules: LoadedRules) -> None:
    items = _catalog()
    cands = _cands(np.arange(60))
    first = apply_rules(cands, customer("bronze"), items, rules, 8)
    excl = first.item_idx[:3]
    again = apply_rules(cands, customer("bronze"), items, rules, 8, exclude_idx=excl)
    assert not set(excl.tolist()) & set(again.item_idx.tolist())
    assert len(again.item_idx) == 8
