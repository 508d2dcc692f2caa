"""INTERFACE STUB: apply a validated rule set to one customer's candidates.

Pure functions over arrays and plain data: no FastAPI, no Redis. The same call serves the API
and the email export.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from serving.candidates import CandidateSet  # noqa: F401  (used by apply_rules)


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


@dataclass(frozen=True)
class ItemTable:
    """Catalog columns aligned to bundle item index, as arrays (built once per bundle)."""

    item_ids: np.ndarray  # str
    category_code: np.ndarray  # int32 index into categories
    categories: tuple[str, ...]
    price: np.ndarray  # float32 (nan = unknown)
    in_stock: np.ndarray  # bool
    min_tier_rank: np.ndarray  # int8 (0 = everyone)
    premium: np.ndarray  # bool
    on_promo: np.ndarray  # bool
    launched_days_ago: np.ndarray  # float32 (nan = unknown)


@dataclass
class Picks:
    item_idx: np.ndarray  # int32, final order
    score: np.ndarray  # float32
    reasons: list[list[str]] = field(default_factory=list)
    rules_version: str = ""
