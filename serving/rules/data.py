"""The rules engine's data types: customer state, the catalog as arrays, and the picks.

``CustomerContext`` (one customer) and ``CustomerBatch`` (many, columnar, lists as CSR) go
in, with the catalog as an ``ItemTable``; ``Picks`` (one customer) and ``BatchPicks`` (many,
reasons as ids into the compiled rule set's table, decoded by ``BatchPicks.decode_reasons``)
come out. The CSR helpers build and slice customer batches.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from serving.rules.models import norm_label

if TYPE_CHECKING:
    from serving.rules.compiled import CompiledRules

PIN_SOURCE = -1  # a pinned item that was not among the candidates
_LAST_GROUP = 127  # sort group of ineligible entries
COPURCHASE_REASON = 0  # reason id of the co-purchase template (formatted with the anchor)


@dataclass(frozen=True)
class CustomerContext:
    tier: str  # tier name; unknown customers get the lowest tier
    tier_rank: int  # 0 = lowest tier
    segment: str | None
    churn_risk: float | None
    clv_band: str | None
    typical_spend: float | None
    recent_item_idx: np.ndarray  # int32 items bought recently (bundle index)
    recent_days_ago: np.ndarray  # float32 days since each of those purchases
    past_categories: tuple[str, ...] = ()  # categories the customer used to buy (win-back)


@dataclass(frozen=True, eq=False)
class ItemTable:
    """Catalog columns aligned to bundle item index, as arrays (built once per bundle)."""

    item_ids: np.ndarray  # str
    category_code: np.ndarray  # int32 index into categories (-1 = unknown)
    categories: tuple[str, ...]
    price: np.ndarray  # float32 (nan = unknown)
    in_stock: np.ndarray  # bool
    min_tier_rank: np.ndarray  # int8 (0 = everyone)
    premium: np.ndarray  # bool
    on_promo: np.ndarray  # bool
    launched_days_ago: np.ndarray  # float32 (nan = unknown)
    tier_names: tuple[str, ...]  # the model's tiers, lowest first: what min_tier_rank ranks

    def __len__(self) -> int:
        return len(self.item_ids)


@dataclass
class Picks:
    item_idx: np.ndarray  # int32, final order
    score: np.ndarray  # float32
    reasons: list[list[str]] = field(default_factory=list)
    rules_version: str = ""
    source: np.ndarray | None = None  # int8 Source of each pick (-1 = pinned, not a candidate)


# --------------------------------------------------------------------------------------------
# Batch inputs and outputs


def _csr(parts: list[np.ndarray], dtype: type) -> tuple[np.ndarray, np.ndarray]:
    indptr = np.zeros(len(parts) + 1, np.int64)
    values: np.ndarray
    if parts:
        indptr[1:] = np.cumsum([len(p) for p in parts])
        values = np.concatenate(parts).astype(dtype) if indptr[-1] else np.zeros(0, dtype)
    else:
        values = np.zeros(0, dtype)
    return indptr, values


@dataclass
class CustomerBatch:
    """Customer state of many customers, columnar; lists are CSR (indptr, values)."""

    tier_rank: np.ndarray  # int16, in the rule set's tier order
    segment: np.ndarray  # str, normalised label ("" = unknown)
    churn_risk: np.ndarray  # float64 (nan = unknown)
    clv_band: np.ndarray  # str, normalised label ("" = unknown)
    typical_spend: np.ndarray  # float64 (nan = unknown)
    recent_indptr: np.ndarray
    recent_item_idx: np.ndarray  # int32
    recent_days_ago: np.ndarray  # float64
    past_cat_indptr: np.ndarray
    past_cat_code: np.ndarray  # int32 codes into ItemTable.categories
    exclude_indptr: np.ndarray
    exclude_idx: np.ndarray  # int32

    def __len__(self) -> int:
        return len(self.tier_rank)


@functools.lru_cache(maxsize=1024)
def _label(value: str | None) -> str:
    return norm_label(value) if value else ""


def tier_rank_for(tier: str, fallback_rank: int, tiers: tuple[str, ...]) -> int:
    """Rank of a tier name in the rule set's order; the given rank when the name is unknown."""
    try:
        return tiers.index(tier)
    except ValueError:
        return max(0, min(int(fallback_rank), len(tiers) - 1))


def customers_from_contexts(
    ctxs: list[CustomerContext],
    compiled: CompiledRules,
    exclude: list[np.ndarray | None] | None = None,
) -> CustomerBatch:
    """Columnar batch of customer contexts (the request's exclude lists optional)."""
    cat_index = compiled.category_index
    tiers = compiled.tiers
    n = len(ctxs)
    rec_ptr, rec_idx = _csr([np.asarray(c.recent_item_idx) for c in ctxs], np.int32)
    _, rec_days = _csr([np.asarray(c.recent_days_ago) for c in ctxs], np.float64)
    # one pass over the contexts: small arrays per customer cost more than their contents
    past_ptr = np.zeros(n + 1, np.int64)
    codes: list[int] = []
    ranks, segs, churn, bands, spend = [], [], [], [], []
    nan = float("nan")
    for i, c in enumerate(ctxs):
        if c.past_categories:
            codes += [cat_index[p] for p in c.past_categories if p in cat_index]
        past_ptr[i + 1] = len(codes)
        ranks.append(tier_rank_for(c.tier, c.tier_rank, tiers))
        segs.append(_label(c.segment))
        churn.append(nan if c.churn_risk is None else c.churn_risk)
        bands.append(_label(c.clv_band))
        spend.append(nan if c.typical_spend is None else c.typical_spend)
    if exclude is None:
        ex_ptr, ex_idx = np.zeros(n + 1, np.int64), np.zeros(0, np.int32)
    else:
        ex_ptr, ex_idx = _csr(
            [np.asarray(e, np.int32) if e is not None else np.zeros(0, np.int32) for e in exclude],
            np.int32,
        )
    return CustomerBatch(
        tier_rank=np.array(ranks, np.int16),
        segment=np.array(segs, dtype=object),
        churn_risk=np.array(churn, np.float64),
        clv_band=np.array(bands, dtype=object),
        typical_spend=np.array(spend, np.float64),
        recent_indptr=rec_ptr,
        recent_item_idx=rec_idx,
        recent_days_ago=rec_days,
        past_cat_indptr=past_ptr,
        past_cat_code=np.asarray(codes, np.int32),
        exclude_indptr=ex_ptr,
        exclude_idx=ex_idx,
    )


def _one_customer(
    ctx: CustomerContext, compiled: CompiledRules, exclude: np.ndarray | None
) -> CustomerBatch:
    """``customers_from_contexts([ctx])`` without the list machinery (the per-request path)."""
    cat_index = compiled.category_index
    # copies: a context may hold the shared read-only empty array, and a read-only array is
    # another type to the compiled kernel (a compilation during a request)
    rec = np.array(ctx.recent_item_idx, np.int32)
    past = np.array([cat_index[p] for p in ctx.past_categories if p in cat_index], np.int32)
    ex = np.zeros(0, np.int32) if exclude is None else np.asarray(exclude, np.int32)
    return CustomerBatch(
        tier_rank=np.array([tier_rank_for(ctx.tier, ctx.tier_rank, compiled.tiers)], np.int16),
        segment=np.array([_label(ctx.segment)], dtype=object),
        churn_risk=np.array([np.nan if ctx.churn_risk is None else ctx.churn_risk], np.float64),
        clv_band=np.array([_label(ctx.clv_band)], dtype=object),
        typical_spend=np.array(
            [np.nan if ctx.typical_spend is None else ctx.typical_spend], np.float64
        ),
        recent_indptr=np.array([0, len(rec)], np.int64),
        recent_item_idx=rec,
        recent_days_ago=np.array(ctx.recent_days_ago, np.float64),
        past_cat_indptr=np.array([0, len(past)], np.int64),
        past_cat_code=past,
        exclude_indptr=np.array([0, len(ex)], np.int64),
        exclude_idx=ex,
    )


def take_customers(cb: CustomerBatch, rows: np.ndarray) -> CustomerBatch:
    """A sub-batch of customers (rows in the given order)."""
    from patron.scoring.rows import take_rows

    rows = np.asarray(rows, np.int64)
    rp, ri = take_rows(cb.recent_indptr, cb.recent_item_idx, rows)
    _, rd = take_rows(cb.recent_indptr, cb.recent_days_ago, rows)
    pp, pc = take_rows(cb.past_cat_indptr, cb.past_cat_code, rows)
    ep, ei = take_rows(cb.exclude_indptr, cb.exclude_idx, rows)
    return CustomerBatch(
        tier_rank=cb.tier_rank[rows],
        segment=cb.segment[rows],
        churn_risk=cb.churn_risk[rows],
        clv_band=cb.clv_band[rows],
        typical_spend=cb.typical_spend[rows],
        recent_indptr=rp,
        recent_item_idx=ri,
        recent_days_ago=rd,
        past_cat_indptr=pp,
        past_cat_code=pc,
        exclude_indptr=ep,
        exclude_idx=ei,
    )


@dataclass
class BatchPicks:
    """Top-k of many customers: (n, k) matrices, -1 = no item; reasons as ids into a table."""

    item_idx: np.ndarray  # int32
    score: np.ndarray  # float32
    source: np.ndarray  # int8
    anchor_idx: np.ndarray  # int32
    reason_ids: np.ndarray  # int32 (n, k, R); -1 = none; COPURCHASE_REASON = formatted w/ anchor
    count: np.ndarray  # int64 picks per row
    reason_table: tuple[str, ...]
    copurchase_template: str
    rules_version: str
    group: np.ndarray  # int8 (n, k): -1 pin, 0 candidate, 1.. fallback list in chain order

    def merge_rows(self, rows: np.ndarray, other: BatchPicks) -> None:
        """Overwrite ``rows`` with the rows of ``other`` (same k)."""
        for name in ("item_idx", "score", "source", "anchor_idx", "reason_ids", "count", "group"):
            getattr(self, name)[rows] = getattr(other, name)

    def decode_reasons(
        self, item_ids: np.ndarray | Sequence[str], rows: slice = slice(None)
    ) -> list[list[list[str]]]:
        """The reasons of the picks of ``rows`` (all by default) as strings, row by row: the one
        decoder of reason ids (``COPURCHASE_REASON``: the template with the pick's anchor).

        A loop over each row's picks: its callers decode one row per request, where this is
        about twice as fast as a vectorised decode (faster from about ten rows; the API's
        batches are rendered by serving/render.py instead).
        """
        kk = self.item_idx.shape[1]
        table, template = self.reason_table, self.copurchase_template
        return [
            [
                [
                    template.format(anchor=item_ids[a]) if v == COPURCHASE_REASON else table[v]
                    for v in ids
                    if v >= 0
                ]
                for ids, a in zip(rid[:c], anchors, strict=False)
            ]
            for c, rid, anchors in zip(
                self.count[rows].tolist(),
                self.reason_ids[rows, :kk].tolist(),
                self.anchor_idx[rows].tolist(),
                strict=True,
            )
        ]

    def all_reasons(self, item_ids: np.ndarray | Sequence[str]) -> list[list[list[str]]]:
        """``reasons_of`` for every row (``recommend_batch``)."""
        return self.decode_reasons(item_ids)

    def reasons_of(self, row: int, item_ids: np.ndarray | Sequence[str]) -> list[list[str]]:
        """The reasons of one row's picks as strings (API responses, tests)."""
        return self.decode_reasons(item_ids, slice(row, row + 1 or None))[0]  # -1: the last
