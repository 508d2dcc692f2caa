"""Online customer rows: the packed value format of features/online.py and its decoding.

A customer's row is one string, ``tier|segment|churn|band|index|consent|next_tier|progress|
typical_spend|clv_low|clv_high``, categoricals as indexes into the version's codebook
(features/online.py describes the Redis key layout around it). The CLV interval is empty unless
the features were built with ``--clv-intervals``; rows of versions published before it existed
end after typical_spend and decode with no interval.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

PACKED_FIELDS = (
    "tier",
    "segment",
    "churn_risk",
    "clv_band",
    "loyalty_index",
    "marketing_consent",
    "next_tier",
    "progress_to_next",
    "typical_spend",
    "clv_low",
    "clv_high",
)
CODED = ("tier", "segment", "clv_band", "next_tier")
ROUNDING = {
    "churn_risk": 3,
    "loyalty_index": 1,
    "progress_to_next": 2,
    "typical_spend": 2,
    "clv_low": 2,
    "clv_high": 2,
}


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
    clv_low: float | None = None  # the CLV's bootstrap interval (features build --clv-intervals)
    clv_high: float | None = None
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
    event_id: str | None = None  # set: applied once, however often it is sent


def bucket_of(customer_id: str) -> int:
    """Version-independent hash; the bucket is this modulo the version's bucket count."""
    return zlib.crc32(customer_id.encode("utf-8"))


def _codebook(customers: pl.DataFrame) -> dict[str, list[str]]:
    tiers = sorted(
        set(customers["tier"].drop_nulls().unique().to_list())
        | set(customers["next_tier"].drop_nulls().unique().to_list())
    )
    return {
        "tier": tiers,
        "next_tier": tiers,
        "segment": sorted(customers["segment"].drop_nulls().unique().to_list()),
        "clv_band": sorted(customers["clv_band"].drop_nulls().unique().to_list()),
    }


def _typed_customers(customers: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    """customer_id and every packed field in its storage type (missing ones as nulls)."""
    return customers.select(
        pl.col("customer_id").cast(pl.String),
        *[
            (
                (pl.col(c) if c in cols else pl.lit(None)).cast(
                    pl.String if c in CODED else pl.Float64
                )
                if c != "marketing_consent"
                else (pl.col(c) if c in cols else pl.lit(False)).cast(pl.Boolean).fill_null(False)
            ).alias(c)  # a missing optional column becomes nulls under its own name
            for c in PACKED_FIELDS
        ],
    )


def pack_customers(customers: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """customer_id, packed value string (vectorised) and the codebook used for categoricals."""
    cols = customers.columns
    if "customer_id" not in cols:
        raise ValueError("customers table needs a customer_id column")
    try:
        filled = _typed_customers(customers, cols)
    except pl.exceptions.PolarsError as exc:  # e.g. a text column where a number belongs
        msg = " ".join(str(exc).split())[:200]
        raise ValueError(f"customers table has a column of the wrong type: {msg}") from None
    book = _codebook(filled)
    parts: list[pl.Expr] = []
    for c in PACKED_FIELDS:
        if c in CODED:
            mapping = {v: str(i) for i, v in enumerate(book[c])}
            e = pl.col(c).replace_strict(mapping, default=None, return_dtype=pl.String)
        elif c == "marketing_consent":
            e = pl.col(c).cast(pl.Int8).cast(pl.String)
        else:
            e = pl.col(c).round(ROUNDING[c]).cast(pl.String).str.replace(r"\.0$", "")
        parts.append(e.fill_null(""))
    packed = filled.select("customer_id", pl.concat_str(parts, separator="|").alias("packed"))
    return packed, book


def _num(s: str) -> float | None:
    return float(s) if s else None


def parse_customer(
    customer_id: str,
    version: str | None,
    book: dict[str, list[str]] | None,
    packed: bytes | str | None,
    spend: bytes | str | None,
    recent: Sequence[Any],
) -> CustomerOnline:
    """Decode one reply of the read script (shared by the sync and async readers)."""
    items = tuple((text(recent[i]), float(recent[i + 1])) for i in range(0, len(recent) - 1, 2))
    spent = float(spend) if spend else 0.0
    if not packed or book is None:
        return CustomerOnline(
            customer_id, False, spend_since_build=spent, recent_items=items, version=version
        )
    f = text(packed).split("|")

    def code(name: str, v: str) -> str | None:
        return book[name][int(v)] if v else None

    return CustomerOnline(
        customer_id=customer_id,
        known=True,
        tier=code("tier", f[0]),
        segment=code("segment", f[1]),
        churn_risk=_num(f[2]),
        clv_band=code("clv_band", f[3]),
        loyalty_index=_num(f[4]),
        marketing_consent=f[5] == "1",
        next_tier=code("next_tier", f[6]),
        progress_to_next=_num(f[7]),
        spend_since_build=spent,
        typical_spend=_num(f[8]),
        clv_low=_num(f[9]) if len(f) > 10 else None,
        clv_high=_num(f[10]) if len(f) > 10 else None,
        recent_items=items,
        version=version,
    )


def text(v: bytes | str) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else v
