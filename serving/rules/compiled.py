"""Compilation of a rule set against an item table: names to codes, per-item masks, the
customer conditions, and the kernel's arguments (built once per (rules, bundle), cached).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

import numpy as np

from patron.scoring import Source
from serving.rules.data import COPURCHASE_REASON, CustomerBatch, ItemTable
from serving.rules.loader import LoadedRules
from serving.rules.models import FallbackSource, RuleSet, norm_label
from serving.rules.packing import pack_item_info

_CHAIN_SOURCE = {
    "personalised": int(Source.ALS),
    "copurchase": int(Source.COPURCHASE),
    "popular_tier": int(Source.POPULAR_TIER),
    "popular": int(Source.POPULAR),
}


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


def _label_in(labels: np.ndarray, allowed: frozenset[str]) -> np.ndarray:
    return np.fromiter((x in allowed for x in labels), bool, len(labels))


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
    tiers = tuple(rules.tiers) if rules.tiers else tuple(items.tier_names)
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
    """Per item, packed for the kernel (serving/rules/packing.py): allowed, min tier and
    category in one word, the catalog-only boost conditions as bits in the other."""
    return pack_item_info(cr.item_ok, cr.min_rank, cr.cat, cr.boost_static)


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
