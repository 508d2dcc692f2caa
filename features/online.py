"""Online features in Redis: atomic versioned publish, one-round-trip reads, real-time events.

INTERFACE STUB — signatures are the contract between features/ (writer) and serving/ (reader).

Key layout (namespace ``ns``, default "patron"):
  {ns}:current                   -> id of the current published version (the pointer)
  {ns}:v:{version}:...           -> per-customer and per-item features of one version (TTL'd
                                    once superseded)
  {ns}:rt:...                    -> real-time state written by /v1/events (recent purchases,
                                    spend since the last build, trending counters), capped and
                                    expiring; not versioned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl


@dataclass(frozen=True)
class CustomerOnline:
    """Everything serving needs about one customer, read in one round trip."""

    customer_id: str
    known: bool  # False when the current version has no row for this customer
    tier: str | None = None
    segment: str | None = None
    churn_risk: float | None = None
    clv_band: str | None = None
    loyalty_index: float | None = None
    marketing_consent: bool = False
    next_tier: str | None = None
    progress_to_next: float | None = None  # amount still needed at build time
    spend_since_build: float = 0.0  # from real-time events
    typical_spend: float | None = None  # average spend per item, for price-band boosts
    recent_items: tuple[tuple[str, float], ...] = ()  # (item_id, unix ts), newest first
    version: str | None = None


@dataclass(frozen=True)
class PurchaseEvent:
    customer_id: str
    item_id: str
    ts: datetime
    quantity: float = 1.0
    unit_price: float | None = None
    type: str = "purchase"  # purchase | return


@dataclass
class PublishReport:
    version: str
    customers: int
    items: int
    seconds: float
    bytes_per_customer: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class OnlineStore:
    """Sync (redis.Redis) access: publish jobs, tests, batch picks."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        raise NotImplementedError

    def publish(
        self, customers: pl.DataFrame, items: pl.DataFrame, ttl_s: int = 86_400
    ) -> PublishReport:
        raise NotImplementedError

    def current_version(self) -> str | None:
        raise NotImplementedError

    def read_customer(self, customer_id: str) -> CustomerOnline:
        raise NotImplementedError

    def read_customers(self, customer_ids: Sequence[str]) -> list[CustomerOnline]:
        raise NotImplementedError

    def read_item_flags(self) -> pl.DataFrame:
        """item_id, in_stock, min_tier of the current version (serving caches it)."""
        raise NotImplementedError

    def record_events(self, events: Sequence[PurchaseEvent]) -> int:
        raise NotImplementedError


class AsyncOnlineStore:
    """The same over redis.asyncio for the API; same key layout and parsing."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        raise NotImplementedError

    async def read_customer(self, customer_id: str) -> CustomerOnline:
        raise NotImplementedError

    async def record_events(self, events: Sequence[PurchaseEvent]) -> int:
        raise NotImplementedError

    async def current_version(self) -> str | None:
        raise NotImplementedError
