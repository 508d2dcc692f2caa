"""Property tests: rule invariants hold for arbitrary customers, catalogs and rule sets.

Each invariant is checked against a plain-Python oracle written independently of the engine.
"""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patron.scoring import CandidateSet, Source
from serving.rules.engine import (
    BatchPicks,
    CandidateBatch,
    CustomerContext,
    apply_rules,
    apply_rules_batch,
    compile_rules,
    customers_from_contexts,
)
from serving.rules.models import RuleSet
from tests.rules import numpy_reference as ref
from tests.rules import numpy_reference_steps as steps
from tests.rules.rule_cases import (
    SOURCE_NAME,
    Case,
    cases,
)
from tests.rules.synth import TIERS


def _blocked(c: Case, j: int) -> bool:
    """Oracle: may item j be shown to this customer at all?"""
    r, it = c.rules, c.items
    if r.eligibility.enforce_min_tier and int(it.min_tier_rank[j]) > TIERS.index(c.ctx.tier):
        return True
    if r.exclusions.out_of_stock and not it.in_stock[j]:
        return True
    if str(it.item_ids[j]) in r.exclusions.blocklist:
        return True
    if j in set(c.exclude.tolist()):
        return True
    cat = it.categories[int(it.category_code[j])]
    window = r.exclusions.repurchase_days.get(cat, r.exclusions.recently_bought_days)
    recent = zip(c.ctx.recent_item_idx.tolist(), c.ctx.recent_days_ago.tolist(), strict=True)
    return any(ri == j and window > 0 and days <= window for ri, days in recent)


def _matches(c: Case, when: object) -> bool:
    w = when.model_dump()  # type: ignore[attr-defined]
    ctx = c.ctx
    if w["tier_at_least"] and TIERS.index(ctx.tier) < TIERS.index(w["tier_at_least"]):
        return False
    if w["segment_in"] and ctx.segment not in w["segment_in"]:
        return False
    return not (
        w["churn_risk_at_least"] is not None
        and (ctx.churn_risk is None or ctx.churn_risk < w["churn_risk_at_least"])
    )


def _pool(c: Case) -> list[int]:
    """Oracle: every item that could be picked (candidates, fallbacks, pins), eligible only."""
    allowed = set(c.rules.fallback)
    pool = [
        int(j)
        for j, s in zip(c.cands.item_idx.tolist(), c.cands.source.tolist(), strict=True)
        if SOURCE_NAME[s] in allowed
    ]
    if "popular_tier" in allowed:
        pool += c.pop_tier.tolist()
    if "popular" in allowed:
        pool += c.pop.tolist()
    for p in c.rules.pins:
        j = int(p.item_id[1:])
        if p.slot <= c.k and _matches(c, p.when):
            pool.append(j)
    return sorted({j for j in pool if not _blocked(c, j)})


def _run(c: Case) -> list[int]:
    picks = apply_rules(c.cands, c.ctx, c.items, c.rules, c.k, c.exclude, c.pop_tier, c.pop)
    assert len(picks.reasons) == len(picks.item_idx)
    assert all(len(r) >= 1 for r in picks.reasons), picks.reasons
    assert picks.rules_version == "t"
    return picks.item_idx.tolist()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_invariants(c: Case) -> None:
    got = _run(c)
    # never an item above the tier, excluded, out of stock, blocked or recently bought
    assert not [j for j in got if _blocked(c, j)]
    assert len(set(got)) == len(got), "duplicate item"
    assert len(got) <= c.k
    # never more than the diversity cap per category
    cap = c.rules.diversity.max_per_category
    cats = [int(c.items.category_code[j]) for j in got]
    if cap is not None:
        assert max((cats.count(x) for x in set(cats)), default=0) <= cap
    # exactly min(k, what the cap allows from the eligible pool) items: k when k exist
    pool = _pool(c)
    pool_cats = [int(c.items.category_code[j]) for j in pool]
    available = sum(
        min(pool_cats.count(x), cap if cap is not None else len(pool)) for x in set(pool_cats)
    )
    assert len(got) == min(c.k, available)
    assert set(got) <= set(pool)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_pins_sit_in_their_slot(c: Case) -> None:
    got = _run(c)
    cap = c.rules.diversity.max_per_category
    taken: dict[int, int] = {}
    used_slots: set[int] = set()
    for p in c.rules.pins:
        j = int(p.item_id[1:])
        if _blocked(c, j) or not _matches(c, p.when) or p.slot > len(got):
            continue
        if j in taken.values() or p.slot in used_slots:
            continue  # the same item pinned twice: the first pin wins
        cat = int(c.items.category_code[j])
        pinned_same_cat = sum(int(c.items.category_code[i]) == cat for i in taken.values())
        if cap is not None and pinned_same_cat >= cap:
            continue
        taken[p.slot] = j
        used_slots.add(p.slot)
    if len(got) == c.k:
        for slot, j in taken.items():
            assert got[slot - 1] == j, (slot, j, got)


def _same_picks(got: BatchPicks, want: BatchPicks) -> None:
    """Every output of two rules passes equal, slot for slot (scores to float32 rounding)."""
    assert got.count.tolist() == want.count.tolist()
    assert got.item_idx.shape == want.item_idx.shape
    for r, cnt in enumerate(got.count.tolist()):
        assert got.item_idx[r, :cnt].tolist() == want.item_idx[r, :cnt].tolist(), r
        assert np.allclose(got.score[r, :cnt], want.score[r, :cnt], rtol=1e-6), r
        assert got.source[r, :cnt].tolist() == want.source[r, :cnt].tolist(), r
        assert got.anchor_idx[r, :cnt].tolist() == want.anchor_idx[r, :cnt].tolist(), r
        assert got.group[r, :cnt].tolist() == want.group[r, :cnt].tolist(), r
        assert got.reason_ids[r, :cnt].tolist() == want.reason_ids[r, :cnt].tolist(), r
    assert (got.item_idx[got.count[:, None] <= np.arange(got.item_idx.shape[1])] == -1).all()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.lists(cases(), min_size=0, max_size=5))
def test_kernel_equals_numpy_reference(first: Case, others: list[Case]) -> None:
    """The compiled pass against the independent vectorised implementation, on a batch of
    different customers (each case's customer, candidates and exclusions, on the first
    case's catalog and rules; items out of that catalog are dropped)."""
    compiled = compile_rules(first.rules, first.items)
    n_items = len(first.items)

    def fit(a: np.ndarray) -> np.ndarray:
        return a[a < n_items]

    sets, ctxs, excl, tiers = [], [], [], []
    for c in (first, *others):
        keep = c.cands.item_idx < n_items
        sets.append(
            CandidateSet(
                c.cands.item_idx[keep],
                c.cands.score[keep],
                c.cands.source[keep],
                np.minimum(c.cands.anchor_idx[keep], n_items - 1),
            )
        )
        rk = c.ctx.recent_item_idx < n_items
        ctxs.append(
            CustomerContext(
                **{
                    **c.ctx.__dict__,
                    "recent_item_idx": c.ctx.recent_item_idx[rk],
                    "recent_days_ago": c.ctx.recent_days_ago[rk],
                }
            )
        )
        excl.append(fit(c.exclude))
        tiers.append(fit(c.pop_tier))
    width = max(len(t) for t in tiers)
    pt = np.full((len(tiers), width), -1, np.int32)
    for i, t in enumerate(tiers):
        pt[i, : len(t)] = t
    batch = CandidateBatch.from_sets(sets)
    cust = customers_from_contexts(ctxs, compiled, excl)
    for pop_tier in (pt, None):
        got = apply_rules_batch(batch, cust, compiled, first.k, pop_tier, first.pop)
        _same_picks(got, ref.apply_rules_batch(batch, cust, compiled, first.k, pop_tier, first.pop))
        _same_picks(got, ref._apply_core(batch, cust, compiled, first.k, pop_tier, first.pop))


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(cases(), min_size=1, max_size=1), st.integers(1, 4))
def test_batch_equals_single(cs: list[Case], copies: int) -> None:
    c = cs[0]
    single = apply_rules(c.cands, c.ctx, c.items, c.rules, c.k, c.exclude, c.pop_tier, c.pop)
    compiled = compile_rules(c.rules, c.items)
    batch = CandidateBatch.from_sets([c.cands] * copies)
    cust = customers_from_contexts([c.ctx] * copies, compiled, [c.exclude] * copies)
    pt = np.tile(c.pop_tier, (copies, 1))
    out = apply_rules_batch(batch, cust, compiled, c.k, pt, c.pop)
    for row in range(copies):
        cnt = int(out.count[row])
        assert out.item_idx[row, :cnt].tolist() == single.item_idx.tolist()
        assert np.allclose(out.score[row, :cnt], single.score)
        assert out.reasons_of(row, compiled.item_ids) == single.reasons


def test_long_fallback_lists_match_reference() -> None:
    """Long popular lists, many rows short of candidates: equal to the reference, which
    cuts the lists for speed and recomputes the rows that need more."""
    from tests.rules.synth import candidates, customer, item_table

    items = item_table(400, seed=3, p_exclusive=0.0, p_out_of_stock=0.5)
    rules = RuleSet.model_validate({"version": "t", "diversity": {"max_per_category": 2}})
    compiled = compile_rules(rules, items)
    cands = [candidates(np.arange(5) + 10 * i, seed=i) for i in range(300)]
    ctxs = [customer(TIERS[i % 4]) for i in range(300)]
    pop_tier = np.stack([np.random.default_rng(i).permutation(400) for i in range(300)])
    pop = np.random.default_rng(99).permutation(400)
    cb, cust = CandidateBatch.from_sets(cands), customers_from_contexts(ctxs, compiled)
    got = apply_rules_batch(cb, cust, compiled, 8, pop_tier, pop)
    _same_picks(got, ref.apply_rules_batch(cb, cust, compiled, 8, pop_tier, pop))
    assert (got.count == 8).all()
    assert (got.source == int(Source.POPULAR_TIER)).any()


def test_rank_within_column_and_sort_paths_agree() -> None:
    """The diversity cap's per-category rank: the column-by-column path (many rows) equals
    the sort path (few rows) row for row."""
    _rank_within = steps._rank_within

    rng = np.random.default_rng(4)
    cats = rng.integers(0, 12, (300, 57))
    many = _rank_within(cats)
    for i in range(0, 300, 37):
        assert np.array_equal(_rank_within(cats[i : i + 1]), many[i : i + 1])
    want = np.array([[int((row[:j] == row[j]).sum()) for j in range(57)] for row in cats[:20]])
    assert np.array_equal(many[:20], want)


def test_member_paths_agree() -> None:
    """Per-row membership (exclusions): the key-column path equals np.isin."""
    _member = steps._member

    rng = np.random.default_rng(8)
    n, w, stride = 300, 40, 1_000
    values = np.arange(n)[:, None] * stride + rng.integers(0, 60, (n, w))
    for per_row in (3, 16, 40):  # the last one takes the sorted-search path
        rows = np.repeat(np.arange(n), rng.integers(0, per_row + 1, n))
        keys = rows * stride + rng.integers(0, 60, len(rows))
        assert np.array_equal(_member(values, keys, stride), np.isin(values, keys))
        assert np.array_equal(_member(values, keys), np.isin(values, keys))


def test_first_in_row_equals_first_occurrence() -> None:
    """Duplicate removal for big batches (pins | unique candidates | fallback lists) equals
    the general sort-based version on valid entries."""
    _first_in_row, _first_occurrence = steps._first_in_row, steps._first_occurrence

    rng = np.random.default_rng(12)
    n, n_items, n_pin, n_cand, n_tail = 200, 90, 2, 30, 25
    pins = rng.integers(0, n_items, (n, n_pin))
    cands = np.stack([rng.permutation(n_items)[:n_cand] for _ in range(n)])
    tail = np.concatenate(
        [np.tile(rng.integers(0, n_items, n_tail - 5), (n, 1)), rng.integers(0, n_items, (n, 5))],
        axis=1,
    )
    m = np.concatenate([pins, cands, tail], axis=1)
    valid = rng.random(m.shape) > 0.15
    mi = np.where(valid, m, 0)
    keyed = np.where(valid, mi, -1 - np.arange(m.shape[1]))
    want = _first_occurrence(keyed)
    got = _first_in_row(mi, valid, n_pin, n_pin + n_cand, n_items)
    assert np.array_equal(got[valid], want[valid])


def test_more_boosts_than_bits_match_reference() -> None:
    """Past 64 boosts the kernel reads the boolean table instead of the packed bits."""
    from tests.rules.synth import candidates, customer, item_table

    items = item_table(300, seed=5)
    boosts = [
        {
            "name": f"b{j}",
            "when": {"tier_at_least": TIERS[j % 4]},
            "item": [{"premium": True}, {"on_promo": True}, {"exclusive": False}][j % 3],
            "multiply": 1.0 + (j % 7) / 10,
            "reason": f"boost {j}",
        }
        for j in range(70)
    ]
    rules = RuleSet.model_validate({"version": "t", "boosts": boosts})
    compiled = compile_rules(rules, items)
    cands = [candidates(np.arange(40) + 7 * i, seed=i) for i in range(20)]
    ctxs = [customer(TIERS[i % 4]) for i in range(20)]
    cb, cust = CandidateBatch.from_sets(cands), customers_from_contexts(ctxs, compiled)
    pop = np.random.default_rng(3).permutation(300)
    got = apply_rules_batch(cb, cust, compiled, 10, None, pop)
    _same_picks(got, ref.apply_rules_batch(cb, cust, compiled, 10, None, pop))
    assert (got.reason_ids[..., 2 + 64 :] >= 0).any()  # boosts past the bits did apply


_LABELS = st.sampled_from(["", "regular", "at_risk", "new", "high_value"])


@settings(max_examples=200, deadline=None)
@given(data=st.data())
def test_condition_table_equals_masks(data) -> None:  # type: ignore[no-untyped-def]
    """The per-state cache of customer conditions answers as the column masks do, for any
    conditions and customers (nan churn, thresholds hit exactly), on a repeat too."""
    from serving.rules.engine import ConditionTable, CustomerBatch, _CompiledCondition

    opt = st.none() | st.integers(0, 3)
    labels = st.none() | st.frozensets(_LABELS, max_size=3)
    churns = st.sampled_from([0.0, 0.25, 0.5, 0.7, 1.0])
    conds = data.draw(
        st.lists(
            st.builds(_CompiledCondition, opt, opt, labels, st.none() | churns, labels),
            max_size=6,
        )
    )
    n = data.draw(st.integers(2, 40))
    churn = data.draw(
        st.lists(st.floats(0, 1) | churns | st.just(float("nan")), min_size=n, max_size=n)
    )
    empty_i, empty_f = np.zeros(n + 1, np.int64), np.zeros(0)
    cb = CustomerBatch(
        tier_rank=np.array(
            data.draw(st.lists(st.integers(0, 3), min_size=n, max_size=n)), np.int16
        ),
        segment=np.array(data.draw(st.lists(_LABELS, min_size=n, max_size=n)), dtype=object),
        churn_risk=np.array(churn, np.float64),
        clv_band=np.array(data.draw(st.lists(_LABELS, min_size=n, max_size=n)), dtype=object),
        typical_spend=np.full(n, np.nan),
        recent_indptr=empty_i,
        recent_item_idx=np.zeros(0, np.int32),
        recent_days_ago=empty_f,
        past_cat_indptr=empty_i,
        past_cat_code=np.zeros(0, np.int32),
        exclude_indptr=empty_i,
        exclude_idx=np.zeros(0, np.int32),
    )
    want = np.stack([c.mask(cb) for c in conds], axis=1) if conds else np.zeros((n, 0), bool)
    table = ConditionTable(conds)
    for _ in range(2):
        assert np.array_equal(table.rows(cb), want)
