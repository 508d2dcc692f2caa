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
"""

from __future__ import annotations

import bisect
import functools
from dataclasses import dataclass, field

import numpy as np

from features.schemas import DEFAULT_TIERS
from patron.scoring import CandidateBatch, CandidateSet, Source
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


def take_customers(cb: CustomerBatch, rows: np.ndarray) -> CustomerBatch:
    """A sub-batch of customers (rows in the given order)."""
    from patron.scoring.kernel import take_rows

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

    def all_reasons(self, item_ids: np.ndarray | list[str]) -> list[list[list[str]]]:
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
        return self.holds(
            int(cb.tier_rank[0]), cb.segment[0], float(cb.churn_risk[0]), cb.clv_band[0]
        )

    def holds(self, rank: int, segment: str, churn: float, band: str) -> bool:
        """The test on one customer's values (``mask`` for one row)."""
        return (
            (self.tier_min is None or rank >= self.tier_min)
            and (self.tier_max is None or rank <= self.tier_max)
            and (self.segments is None or segment in self.segments)
            and (self.churn_min is None or churn >= self.churn_min)  # nan compares False
            and (self.bands is None or band in self.bands)
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
    kernel_args: tuple[object, ...] = field(repr=False, default=())  # _kernel_rules(self)
    boost_conditions: ConditionTable = field(init=False, repr=False)
    pin_conditions: ConditionTable = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.kernel_args = _kernel_rules(self)
        self.boost_conditions = ConditionTable([b.when for b in self.boosts])
        self.pin_conditions = ConditionTable([p.when for p in self.pins])


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


def _label_in(labels: np.ndarray, allowed: frozenset[str]) -> np.ndarray:
    return np.fromiter((x in allowed for x in labels), bool, len(labels))


# --------------------------------------------------------------------------------------------
# The pass itself: serving/rules/kernel.py (numba), one loop per row

_NO_PAD = np.zeros((1, 0), np.int32)


def _kernel_rules(cr: CompiledRules) -> tuple[object, ...]:
    """The compiled rules as the kernel's arguments (fixed dtypes: one compiled version)."""
    boosts = cr.boosts
    nb = len(boosts)
    b_sources = np.ones((nb, len(Source) + 1), bool)
    for bi, b in enumerate(cr.boosts):
        if b.sources is not None:
            b_sources[bi] = b.sources

    def col(values: list[float | int], dtype: type) -> np.ndarray:
        return np.asarray(values, dtype).reshape(len(values))

    nan = float("nan")
    return (
        np.ascontiguousarray(cr.cat, np.int32),
        np.ascontiguousarray(cr.min_rank, np.int16),
        np.ascontiguousarray(cr.window, np.float64),
        np.ascontiguousarray(cr.chain_sources, bool),
        bool(cr.enforce_tier),
        int(cr.n_cat),
        np.ascontiguousarray(cr.price, np.float64),
        np.ascontiguousarray(cr.boost_static, bool),
        _item_info(cr),
        col([b.multiply for b in cr.boosts], np.float64),
        b_sources,
        col(
            [-1 if b.past_categories is None else int(b.past_categories) for b in cr.boosts],
            np.int8,
        ),
        col([nan if b.price_min is None else b.price_min for b in cr.boosts], np.float64),
        col([nan if b.price_max is None else b.price_max for b in cr.boosts], np.float64),
        col([b.reason_base for b in cr.boosts], np.int64),
        col([b.reason_tier_stride for b in cr.boosts], np.int64),
        col([b.reason_cat_stride for b in cr.boosts], np.int64),
        col([p.item for p in cr.pins], np.int32),
        col([p.slot for p in cr.pins], np.int64),
        col([p.reason_id for p in cr.pins], np.int32),
        -1 if cr.max_per_category is None else int(cr.max_per_category),
        int(cr.exclusive_base),
        len(cr.tiers),
        np.ascontiguousarray(cr.source_reason, np.int32),
    )


def _item_info(cr: CompiledRules) -> np.ndarray:
    """Per item, packed for the kernel: [allowed | min tier << 1 | category << 17, the
    catalog-only boost conditions as bits (boost b = bit b, the first 64)]."""
    static = cr.boost_static
    bits = np.zeros(static.shape[0], np.uint64)
    for b in range(min(static.shape[1], 64)):
        bits |= static[:, b].astype(np.uint64) << np.uint64(b)
    word = (
        cr.item_ok.astype(np.int64)
        | (cr.min_rank.astype(np.int64) & 0xFFFF) << 1
        | (cr.cat.astype(np.int64) & 0xFFFFFFFF) << 17
    )
    return np.ascontiguousarray(np.stack([word, bits.view(np.int64)], axis=1))


class ConditionTable:
    """A rule set's customer conditions (of its boosts, or of its pins) for a batch.

    A condition depends on a customer only through (tier rank, segment, CLV band, which churn
    thresholds are met), and customers fall into a few such states: for small batches each
    state is evaluated once and its row of answers kept (bounded); big batches are masked
    column by column.
    """

    MAX_STATES = 4096

    def __init__(self, conds: list[_CompiledCondition]) -> None:
        self.conds = conds
        self.thresholds = sorted({c.churn_min for c in conds if c.churn_min is not None})
        self._states: dict[tuple[int, str, str, int], tuple[bool, ...]] = {}

    def rows(self, cb: CustomerBatch) -> np.ndarray:
        """(customers, conditions) bool."""
        n, conds = len(cb), self.conds
        if not conds:
            return np.zeros((n, 0), bool)
        if n >= 64:
            return np.ascontiguousarray(np.stack([c.mask(cb) for c in conds], axis=1))
        states, ts = self._states, self.thresholds
        if len(states) > self.MAX_STATES:
            states.clear()
        out = []
        for rank, seg, churn, band in zip(
            cb.tier_rank.tolist(), cb.segment, cb.churn_risk.tolist(), cb.clv_band, strict=True
        ):
            # churn >= t for exactly the first ``met`` thresholds (none when churn is nan)
            met = bisect.bisect_right(ts, churn) if churn == churn else -1
            key = (rank, seg, band, met)
            row = states.get(key)
            if row is None:
                row = states[key] = tuple(c.holds(rank, seg, churn, band) for c in conds)
            out.append(row)
        return np.array(out, bool).reshape(n, len(conds))


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
    )
    compiled = compile_rules(RuleSet.model_validate({"version": "warm-up"}), items)
    ctx = CustomerContext("bronze", 0, None, None, None, None, np.zeros(0, np.int32), np.zeros(0))
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
