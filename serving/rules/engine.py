"""Apply a validated rule set to candidates: pure numpy, no FastAPI, no Redis.

One vectorised core (``apply_rules_batch``) works on a padded matrix of candidates, one row per
customer; ``apply_rules`` (one API request) is the same core with one row, so the API and the
email export give the same items in the same order for the same customer and state.

Order of operations per row: candidates + fallback sources (popular in tier, popular) + pins
-> drop duplicates -> eligibility (min tier) -> exclusions (out of stock, blocklist, recently
bought unless the category's repurchase interval has passed, the request's exclude list) ->
boosts (multiply scores) -> sort (pins, then candidates by boosted score, then fallback sources
in chain order) -> diversity cap per category -> top k -> pins moved to their slots.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from features.schemas import DEFAULT_TIERS
from serving.candidates import CandidateSet, Source
from serving.rules.loader import LoadedRules
from serving.rules.models import FallbackSource, RuleSet, norm_label

_CHAIN_SOURCE = {
    "personalised": int(Source.ALS),
    "copurchase": int(Source.COPURCHASE),
    "popular_tier": int(Source.POPULAR_TIER),
    "popular": int(Source.POPULAR),
}
PIN_SOURCE = -1  # a pinned item that was not among the candidates
_LAST_GROUP = 127  # sort group of ineligible entries


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
    tier_names: tuple[str, ...] = DEFAULT_TIERS  # the order min_tier_rank was built with

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


@dataclass
class CandidateBatch:
    """Candidates of many customers as (n, C) matrices, best first per row, -1 = padding."""

    item_idx: np.ndarray  # int32
    score: np.ndarray  # float32
    source: np.ndarray  # int8
    anchor_idx: np.ndarray  # int32

    @classmethod
    def from_sets(cls, sets: list[CandidateSet]) -> CandidateBatch:
        n, width = len(sets), max((len(c) for c in sets), default=0)
        out = cls(
            item_idx=np.full((n, width), -1, np.int32),
            score=np.zeros((n, width), np.float32),
            source=np.full((n, width), int(Source.ALS), np.int8),
            anchor_idx=np.full((n, width), -1, np.int32),
        )
        for i, c in enumerate(sets):
            m = len(c)
            out.item_idx[i, :m] = c.item_idx
            out.score[i, :m] = c.score
            out.source[i, :m] = c.source
            out.anchor_idx[i, :m] = c.anchor_idx
        return out


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
    rec = np.asarray(ctx.recent_item_idx, np.int32)
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
        recent_days_ago=np.asarray(ctx.recent_days_ago, np.float64),
        past_cat_indptr=np.array([0, len(past)], np.int64),
        past_cat_code=past,
        exclude_indptr=np.array([0, len(ex)], np.int64),
        exclude_idx=ex,
    )


def _csr_take(
    indptr: np.ndarray, values: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a CSR list (indptr, values), vectorised; O(len(rows)), whatever the
    size of the list (the API takes a few customers' rows out of millions per batch)."""
    rows = np.asarray(rows, np.int64)
    first = indptr[rows].astype(np.int64)
    lengths = indptr[rows + 1].astype(np.int64) - first
    new_ptr = np.zeros(len(rows) + 1, np.int64)
    np.cumsum(lengths, out=new_ptr[1:])
    starts = np.repeat(first - new_ptr[:-1], lengths)
    return new_ptr, values[np.arange(new_ptr[-1]) + starts]


def take_customers(cb: CustomerBatch, rows: np.ndarray) -> CustomerBatch:
    """A sub-batch of customers (rows in the given order)."""
    rp, ri = _csr_take(cb.recent_indptr, cb.recent_item_idx, rows)
    _, rd = _csr_take(cb.recent_indptr, cb.recent_days_ago, rows)
    pp, pc = _csr_take(cb.past_cat_indptr, cb.past_cat_code, rows)
    ep, ei = _csr_take(cb.exclude_indptr, cb.exclude_idx, rows)
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

    def all_reasons(self, item_ids: np.ndarray) -> list[list[list[str]]]:
        """``reasons_of`` for every row, decoded in one pass (the API's batches)."""
        kk = self.item_idx.shape[1]
        rid = self.reason_ids[:, :kk]
        on = (rid >= 0) & (np.arange(kk)[None, :] < self.count[:, None])[:, :, None]
        rr, cc, _ = np.nonzero(on)
        anchors = self.anchor_idx[rr, cc].tolist()
        table, template = self.reason_table, self.copurchase_template
        texts = [
            template.format(anchor=item_ids[a]) if v == COPURCHASE_REASON else table[v]
            for v, a in zip(rid[on].tolist(), anchors, strict=True)
        ]
        per_pick = on.sum(axis=2).tolist()
        out: list[list[list[str]]] = []
        at = 0
        for row, c in enumerate(self.count.tolist()):
            picks = []
            for j in range(c):
                m = per_pick[row][j]
                picks.append(texts[at : at + m])
                at += m
            out.append(picks)
        return out

    def reasons_of(self, row: int, item_ids: np.ndarray) -> list[list[str]]:
        """The reasons of one row's picks as strings (API responses, tests)."""
        c = int(self.count[row])
        table = self.reason_table
        anchors = self.anchor_idx[row, :c].tolist()
        out: list[list[str]] = []
        for j, ids in enumerate(self.reason_ids[row, :c].tolist()):
            out.append(
                [
                    self.copurchase_template.format(anchor=item_ids[anchors[j]])
                    if rid == COPURCHASE_REASON
                    else table[rid]
                    for rid in ids
                    if rid >= 0
                ]
            )
        return out


COPURCHASE_REASON = 0


# --------------------------------------------------------------------------------------------
# Compilation: the rule set resolved against one item table (names -> codes, masks)


@dataclass
class _CompiledCondition:
    tier_min: int | None
    tier_max: int | None
    segments: frozenset[str] | None
    churn_min: float | None
    bands: frozenset[str] | None

    def mask(self, cb: CustomerBatch) -> np.ndarray:
        if len(cb) == 1:
            return np.array([self._one(cb)])
        m = np.ones(len(cb), bool)
        if self.tier_min is not None:
            m &= cb.tier_rank >= self.tier_min
        if self.tier_max is not None:
            m &= cb.tier_rank <= self.tier_max
        if self.segments is not None:
            m &= _label_in(cb.segment, self.segments)
        if self.churn_min is not None:
            with np.errstate(invalid="ignore"):
                m &= cb.churn_risk >= self.churn_min
        if self.bands is not None:
            m &= _label_in(cb.clv_band, self.bands)
        return m

    def _one(self, cb: CustomerBatch) -> bool:
        """The same test for a single customer with Python scalars (the per-request path)."""
        rank = int(cb.tier_rank[0])
        churn = float(cb.churn_risk[0])
        return (
            (self.tier_min is None or rank >= self.tier_min)
            and (self.tier_max is None or rank <= self.tier_max)
            and (self.segments is None or cb.segment[0] in self.segments)
            and (self.churn_min is None or churn >= self.churn_min)  # nan compares False
            and (self.bands is None or cb.clv_band[0] in self.bands)
        )


@dataclass
class _CompiledBoost:
    name: str
    when: _CompiledCondition
    static: np.ndarray  # bool per item (catalog-only conditions)
    past_categories: bool | None
    price_min: float | None
    price_max: float | None
    sources: np.ndarray | None  # bool lookup by Source value + 1
    multiply: float
    reason_base: int  # -1 = no reason
    reason_tier_stride: int
    reason_cat_stride: int


@dataclass
class _CompiledPin:
    name: str
    item: int  # -1 when the item is not in the catalog
    slot: int  # 0-based
    when: _CompiledCondition
    reason_id: int


@dataclass
class CompiledRules:
    """A rule set resolved against an item table; built once per (rules, bundle)."""

    version: str
    tiers: tuple[str, ...]
    category_index: dict[str, int]
    n_cat: int  # categories + 1 ("unknown")
    cat: np.ndarray  # int32 per item, unknown -> n_cat - 1
    min_rank: np.ndarray  # int16 per item, in the rule set's tier order
    item_ok: np.ndarray  # bool per item: in stock (if required) and not blocklisted
    enforce_tier: bool
    window: np.ndarray  # float64 per category: exclude if bought within this many days
    chain_sources: np.ndarray  # bool lookup by Source value + 1: source allowed
    pad_order: tuple[str, ...]  # "popular_tier" / "popular" in chain order
    boosts: list[_CompiledBoost]
    pins: list[_CompiledPin]
    max_per_category: int | None
    reason_table: tuple[str, ...]
    copurchase_template: str
    source_reason: np.ndarray  # reason id per Source value
    exclusive_base: int  # id = base + min_rank * T + tier_rank
    item_ids: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, str))
    price: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))
    # (n_items, n_boosts) bool: every boost's catalog-only condition, one gather per batch
    boost_static: np.ndarray = field(repr=False, default_factory=lambda: np.zeros((0, 0), bool))


def _condition(c: object, tiers: tuple[str, ...]) -> _CompiledCondition:
    from serving.rules.models import CustomerCondition

    assert isinstance(c, CustomerCondition)
    return _CompiledCondition(
        tier_min=tiers.index(c.tier_at_least) if c.tier_at_least else None,
        tier_max=tiers.index(c.tier_at_most) if c.tier_at_most else None,
        segments=frozenset(norm_label(s) for s in c.segment_in) if c.segment_in else None,
        churn_min=c.churn_risk_at_least,
        bands=frozenset(norm_label(s) for s in c.clv_band_in) if c.clv_band_in else None,
    )


def _source_lookup(names: list[str] | list[FallbackSource]) -> np.ndarray:
    table = np.zeros(len(Source) + 1, bool)
    table[0] = True  # PIN_SOURCE
    for name in names:
        table[_CHAIN_SOURCE[name] + 1] = True
    return table


def compile_rules(rules: RuleSet, items: ItemTable, version: str = "") -> CompiledRules:
    """Resolve names to codes and precompute per-item masks (unknown ids/categories ignored)."""
    tiers = tuple(rules.tiers)
    n_items = len(items.item_ids)
    categories = tuple(items.categories)
    cat_index = {c: i for i, c in enumerate(categories)}
    n_cat = len(categories) + 1
    code = np.asarray(items.category_code, np.int64)
    cat = np.where((code < 0) | (code >= len(categories)), n_cat - 1, code).astype(np.int32)

    # min tier: item table order -> rule set order (a tier the rules don't know: nobody sees it)
    remap = np.array(
        [tiers.index(t) if t in tiers else len(tiers) for t in items.tier_names] or [0], np.int16
    )
    raw_rank = np.clip(np.asarray(items.min_tier_rank, np.int64), 0, len(remap) - 1)
    min_rank = np.where(np.asarray(items.min_tier_rank) <= 0, 0, remap[raw_rank]).astype(np.int16)

    ex = rules.exclusions
    item_ok = np.ones(n_items, bool)
    if ex.out_of_stock:
        item_ok &= np.asarray(items.in_stock, bool)
    if ex.blocklist:
        item_ok &= ~np.isin(items.item_ids, np.array(ex.blocklist, dtype=str))
    window = np.full(n_cat, ex.recently_bought_days, np.float64)
    for name, days in ex.repurchase_days.items():
        if name in cat_index:
            window[cat_index[name]] = days

    table: list[str] = [rules.reasons.copurchase]  # id 0 = COPURCHASE_REASON (uses the anchor)

    def add(text: str) -> int:
        table.append(text)
        return len(table) - 1

    source_reason = np.full(4, -1, np.int32)
    source_reason[int(Source.ALS)] = add(rules.reasons.personalised)
    source_reason[int(Source.COPURCHASE)] = COPURCHASE_REASON
    source_reason[int(Source.POPULAR_TIER)] = add(rules.reasons.popular_tier)
    source_reason[int(Source.POPULAR)] = add(rules.reasons.popular)

    exclusive_base = len(table)
    for mt in (*tiers, "?"):
        for t in tiers:
            table.append(rules.eligibility.exclusive_reason.format(min_tier=mt, tier=t))

    premium = np.asarray(items.premium, bool)
    promo = np.asarray(items.on_promo, bool)
    launched = np.asarray(items.launched_days_ago, np.float64)
    boosts: list[_CompiledBoost] = []
    for b in rules.boosts:
        ic = b.item
        static = np.ones(n_items, bool)
        if ic.premium is not None:
            static &= premium == ic.premium
        if ic.on_promo is not None:
            static &= promo == ic.on_promo
        if ic.exclusive is not None:
            static &= (min_rank > 0) == ic.exclusive
        if ic.new_within_days is not None:
            with np.errstate(invalid="ignore"):
                static &= launched <= ic.new_within_days
        if ic.category_in is not None:
            codes = [cat_index[c] for c in ic.category_in if c in cat_index]
            static &= np.isin(cat, np.array(codes, np.int32))
        base, st_t, st_c = -1, 0, 0
        if b.reason is not None:
            uses_t, uses_c = "{tier}" in b.reason, "{category}" in b.reason
            base = len(table)
            cat_names = (*categories, "other") if uses_c else ("",)
            st_c = 1 if uses_c else 0
            st_t = len(cat_names) if uses_t else 0
            for t in tiers if uses_t else ("",):
                for c in cat_names:
                    table.append(b.reason.format(tier=t, category=c))
        boosts.append(
            _CompiledBoost(
                name=b.name,
                when=_condition(b.when, tiers),
                static=static,
                past_categories=ic.in_past_categories,
                price_min=ic.price_band.min_ratio if ic.price_band else None,
                price_max=ic.price_band.max_ratio if ic.price_band else None,
                sources=_source_lookup(ic.source_in) if ic.source_in else None,
                multiply=float(b.multiply),
                reason_base=base,
                reason_tier_stride=st_t,
                reason_cat_stride=st_c,
            )
        )

    id_pos = {str(v): i for i, v in enumerate(items.item_ids)} if rules.pins else {}
    pins = [
        _CompiledPin(
            name=p.name,
            item=id_pos.get(p.item_id, -1),
            slot=p.slot - 1,
            when=_condition(p.when, tiers),
            reason_id=add(p.reason),
        )
        for p in rules.pins
    ]
    return CompiledRules(
        version=version or rules.version,
        tiers=tiers,
        category_index=cat_index,
        n_cat=n_cat,
        cat=cat,
        min_rank=min_rank,
        item_ok=item_ok,
        enforce_tier=rules.eligibility.enforce_min_tier,
        window=window,
        chain_sources=_source_lookup(rules.fallback),
        pad_order=tuple(s for s in rules.fallback if s in ("popular_tier", "popular")),
        boosts=boosts,
        pins=pins,
        max_per_category=rules.diversity.max_per_category,
        reason_table=tuple(table),
        copurchase_template=rules.reasons.copurchase,
        source_reason=source_reason,
        exclusive_base=exclusive_base,
        item_ids=np.asarray(items.item_ids),
        price=np.asarray(items.price, np.float64),
        boost_static=(
            np.stack([b.static for b in boosts], axis=1)
            if boosts
            else np.zeros((len(cat), 0), bool)
        ),
    )


_CACHE: dict[tuple[int, int, str], tuple[RuleSet, ItemTable, CompiledRules]] = {}


def compiled_for(
    rules: RuleSet | LoadedRules, items: ItemTable, version: str = ""
) -> CompiledRules:
    """``compile_rules`` cached per (rule set object, item table object)."""
    if isinstance(rules, LoadedRules):
        version = version or rules.version
        rules = rules.rules
    key = (id(rules), id(items), version)
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is rules and hit[1] is items:
        return hit[2]
    compiled = compile_rules(rules, items, version)
    if len(_CACHE) > 8:
        _CACHE.clear()
    _CACHE[key] = (rules, items, compiled)
    return compiled


# --------------------------------------------------------------------------------------------
# The vectorised core


def _member(values: np.ndarray, keys: np.ndarray, stride: int | None = None) -> np.ndarray:
    """``np.isin`` for int64 keys. ``values`` (n, w) and ``keys`` are ``row * stride + x``:
    given ``stride``, with few keys per row and many rows, each key column is compared with
    the whole matrix (a handful of sequential passes); else a sorted search."""
    if keys.size == 0:
        return np.zeros(values.shape, bool)
    if stride is not None and values.ndim == 2 and values.shape[0] >= 64:
        n = values.shape[0]
        rows = keys // stride
        counts = np.bincount(rows, minlength=n)
        e = int(counts.max())
        if e <= 16:
            order = np.argsort(rows, kind="stable")
            col = np.arange(keys.size) - np.repeat(np.cumsum(counts) - counts, counts)
            padded = np.full((n, e), -1, np.int64)
            padded[rows[order], col] = keys[order]
            out = values == padded[:, :1]
            for j in range(1, e):
                out |= values == padded[:, j : j + 1]
            return out
    ks = np.sort(keys)
    pos = np.minimum(np.searchsorted(ks, values), ks.size - 1)
    return ks[pos] == values


def _label_in(labels: np.ndarray, allowed: frozenset[str]) -> np.ndarray:
    return np.fromiter((x in allowed for x in labels), bool, len(labels))


def _row_keys(indptr: np.ndarray, values: np.ndarray, stride: int) -> np.ndarray:
    if len(indptr) == 2:  # one row: key = value
        return values.astype(np.int64)
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return rows * stride + values.astype(np.int64)


@functools.lru_cache(maxsize=16)
def _pad_scores(width: int) -> np.ndarray:
    """Reported base score of fallback items: decays with popularity rank."""
    out = 1.0 / (2.0 + np.arange(width))
    out.flags.writeable = False
    return out


def _tk(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``take_along_axis(a, idx, axis=1)`` without its per-call overhead."""
    if a.shape[0] == 1:
        return a[0][idx]
    return a[np.arange(a.shape[0])[:, None], idx]


def _stable_order(keys: np.ndarray) -> np.ndarray:
    return np.argsort(keys, axis=1, kind="stable")


def _first_occurrence(m: np.ndarray) -> np.ndarray:
    """True where the value in a row is seen for the first time (left to right)."""
    order = _stable_order(m)
    s = _tk(m, order)
    new = np.ones(s.shape, bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])
    first = np.empty_like(new)
    if m.shape[0] == 1:
        first[0, order[0]] = new[0]
    else:
        first[np.arange(m.shape[0])[:, None], order] = new
    return first


def _first_in_row(
    mi: np.ndarray, valid: np.ndarray, n_pin: int, n_head: int, n_items: int
) -> np.ndarray:
    """``_first_occurrence`` for rows laid out as [pins | candidates | fallback lists] whose
    candidates hold no repeats (a blend's output), without sorting every row: a candidate
    can only repeat a pin, and a fallback entry an earlier column, tracked in a (row, item)
    table over the few items the fallback lists hold. Only valid entries are meaningful."""
    n, width = mi.shape
    first = np.ones((n, width), bool)
    for j in range(n_pin):  # a later pin or candidate repeating pin j
        pin = np.where(valid[:, j], mi[:, j], -1)[:, None]
        first[:, j + 1 : n_head] &= mi[:, j + 1 : n_head] != pin
    if n_head >= width:
        return first
    tail_items = np.unique(mi[:, n_head:][valid[:, n_head:]])
    sink = len(tail_items)  # column for entries that are not fallback items (never read)
    lookup = np.full(n_items, sink, np.int64)
    lookup[tail_items] = np.arange(sink)
    cell = np.where(valid, lookup[mi], sink) + (np.arange(n, dtype=np.int64) * (sink + 1))[:, None]
    seen = np.zeros(n * (sink + 1), bool)
    seen[cell[:, :n_head].ravel()] = True
    for j in range(n_head, width):
        c = cell[:, j]
        first[:, j] = ~seen[c]
        seen[c] = True
    return first


def _rank_within(cats: np.ndarray) -> np.ndarray:
    """For each entry, how many entries of the same value precede it in its row."""
    n, w = cats.shape
    if w == 0:
        return np.zeros((n, 0), np.int64)
    if n >= 256:  # many rows: count column by column in a (row, value) table, no sort
        width = int(cats.max()) + 1
        flat = np.arange(n, dtype=np.int64)[:, None] * width + cats  # (row, value) cell
        seen = np.zeros(n * width, np.int64)
        occ_cols = np.empty((n, w), np.int64)
        for j in range(w):  # a row's cells in one column are distinct: plain fancy +=
            cell = flat[:, j]
            occ_cols[:, j] = seen[cell]
            seen[cell] += 1
        return occ_cols
    order = _stable_order(cats)
    s = _tk(cats, order)
    pos = np.arange(w)[None, :]
    start = np.zeros((n, w), bool)
    start[:, 0] = True
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    run_start = np.maximum.accumulate(np.where(start, pos, 0), axis=1)
    occ = np.empty((n, w), np.int64)
    if n == 1:
        occ[0, order[0]] = (pos - run_start)[0]
    else:
        occ[np.arange(n)[:, None], order] = pos - run_start
    return occ


def _keep(
    eligible: np.ndarray, item_cat: np.ndarray, order: np.ndarray, cr: CompiledRules
) -> np.ndarray:
    """Eligible and within the diversity cap, for the columns ``order`` lists (in that order)."""
    elig_s = _tk(eligible, order)
    if cr.max_per_category is None:
        return elig_s
    cat_s = _tk(np.where(eligible, item_cat, cr.n_cat), order)
    return elig_s & (_rank_within(cat_s) < cr.max_per_category)


def apply_rules_batch(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None = None,
    popular: np.ndarray | None = None,
) -> BatchPicks:
    """Top-k picks with reasons for every row; see the module docstring for the steps.

    ``popular_tier`` is (n, P1) (each customer's tier list, -1 padded), ``popular`` is (P2,).
    Fallback lists are first cut to a short prefix; rows whose answer could depend on the cut
    (short of k, or a pick from after a cut list) are recomputed with the full lists, so the
    result is exactly that of the uncut computation, only faster.

    Before that, the candidates (and pins) alone: fallback entries sort after every eligible
    candidate and cannot change a candidate's eligibility, duplicate status or diversity
    rank, so a row that candidates fill to k is final without them.
    """
    has_pads = any(p is not None and p.size for p in (popular_tier, popular))
    if has_pads and cands.item_idx.shape[1] >= k:
        out = _apply_core(cands, customers, compiled, k, None, None)
        need = np.flatnonzero(out.count < k)
        if need.size == 0:
            return out
        return _recompute_rows(
            _with_fallback, out, need, cands, customers, compiled, k, popular_tier, popular
        )
    return _with_fallback(cands, customers, compiled, k, popular_tier, popular)


def _recompute_rows(
    step: Callable[..., BatchPicks],
    out: BatchPicks,
    rows: np.ndarray,
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    """Redo ``rows`` of ``out`` with ``step`` (a wider computation) and merge them in."""
    sub = step(
        CandidateBatch(
            item_idx=cands.item_idx[rows],
            score=cands.score[rows],
            source=cands.source[rows],
            anchor_idx=cands.anchor_idx[rows],
        ),
        take_customers(customers, rows),
        compiled,
        k,
        popular_tier[rows] if popular_tier is not None and popular_tier.ndim == 2 else popular_tier,
        popular,
    )
    out.merge_rows(rows, sub)
    return out


def _with_fallback(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    """``apply_rules_batch`` with the fallback lists: cut first, whole where needed."""
    limit = max(4 * k, 32)
    pads = {"popular_tier": popular_tier, "popular": popular}
    cut = {name: pad is not None and pad.shape[-1] > limit for name, pad in pads.items()}
    if not any(cut.values()):
        return _apply_core(cands, customers, compiled, k, popular_tier, popular)
    short_t = popular_tier[..., :limit] if popular_tier is not None else None
    short_p = popular[..., :limit] if popular is not None else None
    out = _apply_core(cands, customers, compiled, k, short_t, short_p)
    # first fallback group (1-based, in chain order) that was cut
    first_cut = next(
        (g for g, name in enumerate(compiled.pad_order, start=1) if cut[name]), _LAST_GROUP
    )
    if len(out.count) == 1:  # one request: Python scalars
        g = out.group[0][out.item_idx[0] >= 0]
        if int(out.count[0]) >= k and (g.size == 0 or int(g.max()) <= first_cut):
            return out
        redo = np.zeros(1, np.int64)
    else:
        max_group = np.where(out.item_idx >= 0, out.group, -1).max(axis=1, initial=-1)
        redo = np.nonzero((out.count < k) | (max_group > first_cut))[0]
    if redo.size == 0:
        return out
    return _recompute_rows(
        _apply_core, out, redo, cands, customers, compiled, k, popular_tier, popular
    )


def _apply_core(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    n = len(customers)
    cr = compiled
    n_items = len(cr.cat)
    blocks_m = [np.asarray(cands.item_idx, np.int32)]
    blocks_s = [np.asarray(cands.score, np.float64)]
    blocks_src = [np.asarray(cands.source, np.int8)]
    blocks_a = [np.asarray(cands.anchor_idx, np.int32)]
    blocks_g = [np.zeros(cands.item_idx.shape, np.int8)]
    # fallback sources in chain order; base score decays with popularity rank
    for gi, name in enumerate(cr.pad_order, start=1):
        pad = popular_tier if name == "popular_tier" else popular
        if pad is None or pad.size == 0:
            continue
        pad = np.asarray(pad, np.int32)
        if pad.ndim == 2:
            pad2 = pad
        elif n == 1:
            pad2 = pad[None, :]
        else:
            pad2 = np.broadcast_to(pad, (n, pad.shape[-1]))
        w = pad2.shape[1]
        blocks_m.append(pad2)
        ps = _pad_scores(w)
        blocks_s.append(ps[None, :] if n == 1 else np.broadcast_to(ps, (n, w)))
        pad_src = Source.POPULAR_TIER if name == "popular_tier" else Source.POPULAR
        blocks_src.append(np.full((n, w), int(pad_src), np.int8))
        blocks_a.append(np.full((n, w), -1, np.int32))
        blocks_g.append(np.full((n, w), gi, np.int8))

    # pins go first (group -1); a pin also found among the candidates keeps its score/source
    pin_cols: list[int] = []
    if cr.pins:
        cand_m = blocks_m[0]
        pm = np.full((n, len(cr.pins)), -1, np.int32)
        ps = np.zeros((n, len(cr.pins)), np.float64)
        psrc = np.full((n, len(cr.pins)), PIN_SOURCE, np.int8)
        pa = np.full((n, len(cr.pins)), -1, np.int32)
        for j, pin in enumerate(cr.pins):
            if pin.item < 0 or pin.slot >= k:
                continue
            active = pin.when.mask(customers)
            pm[active, j] = pin.item
            if cand_m.size:
                eq = cand_m == pin.item
                has = eq.any(axis=1) & active
                col = eq.argmax(axis=1)
                r = np.nonzero(has)[0]
                ps[r, j] = blocks_s[0][r, col[r]]
                psrc[r, j] = blocks_src[0][r, col[r]]
                pa[r, j] = blocks_a[0][r, col[r]]
        blocks_m.insert(0, pm)
        blocks_s.insert(0, ps)
        blocks_src.insert(0, psrc)
        blocks_a.insert(0, pa)
        blocks_g.insert(0, np.full((n, len(cr.pins)), -1, np.int8))
        pin_cols = list(range(len(cr.pins)))

    m = np.concatenate(blocks_m, axis=1) if len(blocks_m) > 1 else blocks_m[0]
    score = np.concatenate(blocks_s, axis=1)
    src = np.concatenate(blocks_src, axis=1)
    anchor = np.concatenate(blocks_a, axis=1)
    group = np.concatenate(blocks_g, axis=1)
    width = m.shape[1]

    valid = (m >= 0) & (m < n_items)
    valid &= cr.chain_sources[src.astype(np.int64) + 1] | (group < 0)
    mi = np.where(valid, m, 0)
    # duplicates: keep the first (pins, then candidates, then fallback order)
    if n >= 64:  # batches: candidates are unique per row (blend), only the rest is checked
        n_head = len(pin_cols) + cands.item_idx.shape[1]
        eligible = valid & _first_in_row(mi, valid, len(pin_cols), n_head, n_items)
    else:
        keyed = np.where(valid, mi.astype(np.int64), -1 - np.arange(width, dtype=np.int64))
        eligible = valid & _first_occurrence(keyed)
    eligible &= cr.item_ok[mi]
    cust_rank = customers.tier_rank.astype(np.int16)
    item_rank = cr.min_rank[mi]
    if cr.enforce_tier:
        eligible &= item_rank <= cust_rank[:, None]
    item_cat = cr.cat[mi]

    # exclusions: recent purchases within the category's window, and the request's list
    excl_parts = []
    if customers.recent_item_idx.size:
        ri = customers.recent_item_idx.astype(np.int64)
        ok = (ri >= 0) & (ri < n_items)
        ri_c = np.where(ok, ri, 0)
        days = np.nan_to_num(customers.recent_days_ago, nan=0.0)
        win = cr.window[cr.cat[ri_c]]
        hit = ok & (win > 0) & (days <= win)
        keys = _row_keys(customers.recent_indptr, customers.recent_item_idx, n_items)
        excl_parts.append(keys[hit])
    if customers.exclude_idx.size:
        excl_parts.append(_row_keys(customers.exclude_indptr, customers.exclude_idx, n_items))
    if excl_parts:
        excl = np.concatenate(excl_parts)
        if excl.size:
            cand_keys = np.arange(n, dtype=np.int64)[:, None] * n_items + mi
            eligible &= ~_member(cand_keys, excl, n_items)

    # boosts
    mult = np.ones((n, width), np.float64)
    applied: list[np.ndarray | None] = []
    past_hit: np.ndarray | None = None
    static = cr.boost_static[mi] if cr.boosts else None  # (n, width, n_boosts)
    for bi, b in enumerate(cr.boosts):
        if n == 1:  # Python scalars: a dozen numpy calls fewer per boost
            cm = None
            if not b.when._one(customers):
                applied.append(None)
                continue
        else:
            cm = b.when.mask(customers)
            if not cm.any():
                applied.append(None)
                continue
        assert static is not None
        hit = static[..., bi] & eligible
        if cm is not None:
            hit &= cm[:, None]
        if b.sources is not None:
            hit &= b.sources[src.astype(np.int64) + 1]
        if b.past_categories is not None:
            if past_hit is None:
                pk = _row_keys(customers.past_cat_indptr, customers.past_cat_code, cr.n_cat)
                ck = np.arange(n, dtype=np.int64)[:, None] * cr.n_cat + item_cat
                if n * cr.n_cat <= 50_000_000:  # a (customer, category) table: one gather
                    seen = np.zeros(n * cr.n_cat + 1, bool)
                    seen[pk] = True
                    past_hit = seen[np.minimum(ck, n * cr.n_cat)]
                else:
                    past_hit = _member(ck, pk)
            hit &= past_hit == b.past_categories
        if b.price_min is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = cr.price[mi] / customers.typical_spend[:, None]
                inside = ratio >= b.price_min
                if b.price_max is not None:
                    inside &= ratio <= b.price_max
            hit &= inside
        np.multiply(mult, b.multiply, out=mult, where=hit)
        applied.append(hit)
    boosted = np.where(score >= 0, score * mult, score / mult)

    # order: group, then boosted score (desc) among candidates, then column; ineligible last.
    # Fallback lists keep their popularity order so a cut prefix orders exactly like the whole.
    g = np.where(eligible, group, _LAST_GROUP).astype(np.int16)
    order = np.lexsort((np.where(group == 0, -boosted, 0.0), g), axis=1)
    kk = min(k, width)
    # Only the first kk kept columns (in this order) are picked: look at a head of the
    # order first; rows that do not fill kk there (rare) look at the whole row.
    head = min(width, max(4 * kk, 32))
    keep = _keep(eligible, item_cat, order[:, :head], cr)
    short = np.flatnonzero(keep.sum(axis=1) < kk) if head < width else np.zeros(0, np.int64)
    if short.size == 0:
        sel = _tk(order[:, :head], _stable_order(~keep)[:, :kk])  # (n, kk) columns
        count = np.minimum(keep.sum(axis=1), kk)
    else:
        full = np.zeros((n, width), bool)
        full[:, :head] = keep
        full[short] = _keep(eligible[short], item_cat[short], order[short], cr)
        sel = _tk(order, _stable_order(~full)[:, :kk])
        count = np.minimum(full.sum(axis=1), kk)
    in_range = np.arange(kk)[None, :] < count[:, None]

    # pins to their slots; the rest fill the free slots in order
    rows = np.arange(n)
    final = sel
    if pin_cols and kk:
        occupied = np.zeros((n, kk), bool)
        placed = np.zeros((n, kk), bool)
        target = np.full((n, kk), -1, np.int64)
        for j in pin_cols:
            slot = cr.pins[j].slot
            if slot >= kk:
                continue
            at = (sel == j) & in_range
            has = at.any(axis=1)
            pos = at.argmax(axis=1)
            ok = has & (slot < count) & ~occupied[:, slot]
            r = rows[ok]
            occupied[r, slot] = True
            placed[r, pos[ok]] = True
            target[r, pos[ok]] = slot
        if placed.any():
            free = ~occupied & in_range
            free_slots = _stable_order(~free)
            ordinary = _stable_order(placed | ~in_range)
            n_ord = (~placed & in_range).sum(axis=1)
            jj = np.broadcast_to(np.arange(kk), (n, kk))
            use = jj < n_ord[:, None]
            rr = np.broadcast_to(rows[:, None], (n, kk))
            target[rr[use], ordinary[use]] = free_slots[use]
            final = np.full((n, kk), 0, sel.dtype)
            src_pos = np.broadcast_to(np.arange(kk), (n, kk))
            m_in = in_range
            final[rr[m_in], target[m_in]] = sel[rr[m_in], src_pos[m_in]]

    pick_m = _tk(m, final)
    pick_m = np.where(in_range, pick_m, -1).astype(np.int32)
    pick_s = _tk(boosted, final).astype(np.float32)
    pick_src = _tk(src, final)
    pick_a = _tk(anchor, final)
    pick_g = _tk(group, final)

    # reasons: [pin] [exclusive] [boosts...] [source]
    n_r = 3 + len(cr.boosts)
    rid = np.full((n, kk, n_r), -1, np.int32)
    pick_c = np.where(in_range, final, 0)
    if pin_cols:
        pin_ids = np.array([p.reason_id for p in cr.pins], np.int32)
        is_pin = (pick_g < 0) & in_range
        rid[..., 0] = np.where(is_pin, pin_ids[np.clip(pick_c, 0, len(cr.pins) - 1)], -1)
    pick_mi = np.where(in_range, pick_m, 0)
    p_rank = cr.min_rank[pick_mi].astype(np.int64)
    t = len(cr.tiers)
    excl_id = cr.exclusive_base + np.minimum(p_rank, t) * t + cust_rank[:, None]
    rid[..., 1] = np.where(in_range & (p_rank > 0) & cr.enforce_tier, excl_id, -1)
    for bi, (b, hit) in enumerate(zip(cr.boosts, applied, strict=True)):
        if hit is None or b.reason_base < 0:
            continue
        on = _tk(hit, final) & in_range
        ids = (
            b.reason_base
            + cust_rank[:, None].astype(np.int64) * b.reason_tier_stride
            + cr.cat[pick_mi].astype(np.int64) * b.reason_cat_stride
        )
        rid[..., 2 + bi] = np.where(on, ids, -1)
    src_ok = (pick_src >= 0) & in_range
    rid[..., -1] = np.where(src_ok, cr.source_reason[np.minimum(np.maximum(pick_src, 0), 3)], -1)

    return BatchPicks(
        item_idx=pick_m,
        score=np.where(in_range, pick_s, 0.0).astype(np.float32),
        source=np.where(in_range, pick_src, PIN_SOURCE).astype(np.int8),
        anchor_idx=np.where(in_range, pick_a, -1).astype(np.int32),
        reason_ids=rid,
        count=count.astype(np.int64),
        reason_table=cr.reason_table,
        copurchase_template=cr.copurchase_template,
        rules_version=cr.version,
        group=np.where(in_range, pick_g, _LAST_GROUP).astype(np.int8),
    )


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
