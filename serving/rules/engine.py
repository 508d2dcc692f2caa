"""Apply a validated rule set to candidates: numpy and a numba kernel, no FastAPI, no Redis.

The rule set is compiled against the catalog once (``compile_rules``: names to codes, per-item
masks); ``apply_rules_batch`` runs the compiled pass (serving/rules/kernel.py) over a padded
matrix of candidates, one row per customer; ``apply_rules`` (one API request) is the same pass
with one row, so the API and the email export give the same items in the same order for the
same customer and state.

Order of operations per row: candidates + fallback sources (popular in tier, popular) + pins
-> drop duplicates -> eligibility (min tier) -> exclusions (out of stock, blocklist, recently
bought unless the category's repurchase interval has passed, the request's exclude list) ->
boosts (multiply scores) -> sort (pins, then candidates by boosted score, then fallback sources
in chain order) -> diversity cap per category -> top k -> pins moved to their slots.

This module is the pass (and re-exports the engine's public names, so ``from
serving.rules.engine import ...`` keeps working): the data types are in serving/rules/data.py,
compilation in serving/rules/compiled.py, the packed per-item words in
serving/rules/packing.py and the numba kernel in serving/rules/kernel.py.
"""

from __future__ import annotations

import numpy as np

from patron.scoring import CandidateBatch, CandidateSet, Source
from serving.rules.compiled import (
    CompiledRules,
    ConditionTable,
    _CompiledCondition,
    compile_rules,
    compiled_for,
)
from serving.rules.data import (
    _LAST_GROUP,
    COPURCHASE_REASON,
    PIN_SOURCE,
    BatchPicks,
    CustomerBatch,
    CustomerContext,
    ItemTable,
    Picks,
    _one_customer,
    customers_from_contexts,
    take_customers,
    tier_rank_for,
)
from serving.rules.loader import LoadedRules
from serving.rules.models import RuleSet

__all__ = [
    "COPURCHASE_REASON",
    "PIN_SOURCE",
    "_LAST_GROUP",
    "BatchPicks",
    "CandidateBatch",
    "CompiledRules",
    "ConditionTable",
    "CustomerBatch",
    "CustomerContext",
    "ItemTable",
    "Picks",
    "_CompiledCondition",
    "apply_rules",
    "apply_rules_batch",
    "compile_rules",
    "compiled_for",
    "customers_from_contexts",
    "take_customers",
    "tier_rank_for",
    "warm_up",
]

_NO_PAD = np.zeros((1, 0), np.int32)


def _pad_arg(
    pad: np.ndarray | None, n: int, source: Source, group: int
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """A fallback list as (rows, row of each customer, source, group); 1-D = shared by all."""
    if pad is None or pad.size == 0:
        return _NO_PAD, np.zeros(n, np.int64), 0, 0
    pad = np.ascontiguousarray(pad, np.int32)
    if pad.ndim == 1:
        return pad[None, :], np.zeros(n, np.int64), int(source), group
    return pad, np.arange(n, dtype=np.int64), int(source), group


def apply_rules_batch(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None = None,
    popular: np.ndarray | None = None,
) -> BatchPicks:
    """Top-k picks with reasons for every row; see the module docstring for the steps.

    ``popular_tier`` is (n, P1) (each customer's tier list, -1 padded) or (P1,) shared by
    all rows; ``popular`` is (P2,).
    """
    from serving.rules.kernel import apply_kernel, set_size_for

    cr, n = compiled, len(customers)
    pads = {"popular_tier": popular_tier, "popular": popular}
    sources = {"popular_tier": Source.POPULAR_TIER, "popular": Source.POPULAR}
    lists = [
        _pad_arg(pad, n, sources[name], g)
        for g, name in enumerate(cr.pad_order, start=1)
        if (pad := pads[name]) is not None and pad.size
    ]
    while len(lists) < 2:
        lists.append(_pad_arg(None, n, Source.POPULAR, 0))
    (p1, r1, s1, g1), (p2, r2, s2, g2) = lists
    c = customers
    rec_ptr = np.asarray(c.recent_indptr, np.int64)
    ex_ptr = np.asarray(c.exclude_indptr, np.int64)
    if n == 1:
        n_banned = int(rec_ptr[1] - rec_ptr[0] + ex_ptr[1] - ex_ptr[0])
    else:
        n_banned = int((np.diff(rec_ptr) + np.diff(ex_ptr)).max(initial=0))
    width = len(cr.pins) + cands.item_idx.shape[1] + p1.shape[1] + p2.shape[1]
    m, s, src, a, rid, count, group = apply_kernel(
        np.ascontiguousarray(cands.item_idx, np.int32),
        np.ascontiguousarray(cands.score, np.float32),
        np.ascontiguousarray(cands.source, np.int8),
        np.ascontiguousarray(cands.anchor_idx, np.int32),
        p1,
        r1,
        s1,
        g1,
        p2,
        r2,
        s2,
        g2,
        np.asarray(c.tier_rank, np.int64),
        np.asarray(c.typical_spend, np.float64),
        rec_ptr,
        np.asarray(c.recent_item_idx, np.int32),
        np.asarray(c.recent_days_ago, np.float64),
        np.asarray(c.past_cat_indptr, np.int64),
        np.asarray(c.past_cat_code, np.int32),
        ex_ptr,
        np.asarray(c.exclude_idx, np.int32),
        cr.boost_conditions.rows(c),
        cr.pin_conditions.rows(c),
        *cr.kernel_args,
        int(k),
        set_size_for(width),
        set_size_for(n_banned),
    )
    return BatchPicks(
        item_idx=m,
        score=s,
        source=src,
        anchor_idx=a,
        reason_ids=rid,
        count=count,
        reason_table=cr.reason_table,
        copurchase_template=cr.copurchase_template,
        rules_version=cr.version,
        group=group,
    )


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernel before the first request needs it."""
    items = ItemTable(
        item_ids=np.array(["a", "b"]),
        category_code=np.zeros(2, np.int32),
        categories=("c",),
        price=np.ones(2, np.float32),
        in_stock=np.ones(2, bool),
        min_tier_rank=np.zeros(2, np.int8),
        premium=np.zeros(2, bool),
        on_promo=np.zeros(2, bool),
        launched_days_ago=np.zeros(2, np.float32),
        tier_names=("warm-up",),
    )
    compiled = compile_rules(RuleSet.model_validate({"version": "warm-up"}), items)
    ctx = CustomerContext("warm-up", 0, None, None, None, None, np.zeros(0, np.int32), np.zeros(0))
    cands = CandidateBatch.from_sets(
        [
            CandidateSet(
                np.array([0], np.int32),
                np.ones(1, np.float32),
                np.zeros(1, np.int8),
                np.full(1, -1, np.int32),
            )
        ]
    )
    apply_rules_batch(cands, customers_from_contexts([ctx], compiled), compiled, 2, np.array([1]))


def apply_rules(
    cands: CandidateSet,
    ctx: CustomerContext,
    items: ItemTable,
    rules: RuleSet | LoadedRules,
    k: int,
    exclude_idx: np.ndarray | None = None,
    popular_tier_idx: np.ndarray | None = None,
    popular_idx: np.ndarray | None = None,
    version: str = "",
) -> Picks:
    """Top-k picks with reasons for one customer (the API path); same core as the export.

    ``rules`` may be a ``LoadedRules`` (its versioned id is reported) or a bare ``RuleSet``.
    """
    compiled = compiled_for(rules, items, version)
    batch = CandidateBatch(
        item_idx=np.asarray(cands.item_idx, np.int32)[None, :],
        score=np.asarray(cands.score, np.float32)[None, :],
        source=np.asarray(cands.source, np.int8)[None, :],
        anchor_idx=np.asarray(cands.anchor_idx, np.int32)[None, :],
    )
    customers = _one_customer(ctx, compiled, exclude_idx)
    pt = None if popular_tier_idx is None else np.asarray(popular_tier_idx, np.int32)[None, :]
    out = apply_rules_batch(batch, customers, compiled, k, pt, popular_idx)
    c = int(out.count[0])
    return Picks(
        item_idx=out.item_idx[0, :c].copy(),
        score=out.score[0, :c].copy(),
        reasons=out.reasons_of(0, compiled.item_ids),
        rules_version=compiled.version,
        source=out.source[0, :c].copy(),
    )
