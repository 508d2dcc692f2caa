"""Polars schemas of the input contracts (DESIGN.md, "Contracts").

Clean, validated tables always have exactly these columns and dtypes; optional input columns
are filled with nulls (or the documented default) so downstream code never branches on them.
"""

from __future__ import annotations

import polars as pl

TS = pl.Datetime("us", "UTC")

# Purchase events. quantity < 0 is a return/refund and is kept (never silently dropped).
EVENTS: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "item_id": pl.String(),  # null allowed for transaction-only data (CDNOW)
    "ts": TS,
    "quantity": pl.Float64(),  # default 1
    "unit_price": pl.Float64(),  # null allowed (unknown price)
    "order_id": pl.String(),  # null allowed
    "channel": pl.String(),  # null allowed
}
EVENTS_REQUIRED = ("customer_id", "ts")

CATALOG: dict[str, pl.DataType] = {
    "item_id": pl.String(),
    "category": pl.String(),
    "price": pl.Float64(),
    "in_stock": pl.Boolean(),
    "min_tier": pl.String(),  # null = available to every tier
    "premium": pl.Boolean(),
    "on_promo": pl.Boolean(),
    "launched_at": TS,
    "margin": pl.Float64(),
}
CATALOG_REQUIRED = ("item_id",)

CUSTOMERS: dict[str, pl.DataType] = {
    "customer_id": pl.String(),
    "marketing_consent": pl.Boolean(),
    "nps": pl.Float64(),  # 0-10, optional attitudinal input
    "csat": pl.Float64(),  # optional
    "signup_at": TS,
    "tier_floor": pl.String(),  # optional manual tier floor
}
CUSTOMERS_REQUIRED = ("customer_id",)

DEFAULT_TIERS = ("bronze", "silver", "gold", "platinum")


def empty(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    return pl.DataFrame(schema=schema)
