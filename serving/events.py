"""Validation of real-time events: the batch validator's rules (features.validation), one
verdict per event, so a bad event never sinks the valid ones sent with it.

Two stages: the typed shape (ids, bounded numbers, a timestamp within
``PATRON_EVENT_MAX_AGE_DAYS``) per event with Pydantic, then, for purchases and returns,
``features.validation.validate`` over the shape-valid events against the served catalog
(future timestamps, quantity sign, negative prices, unknown items, duplicates). Impressions,
clicks and add_to_cart events feed no features: they are checked for a future timestamp and
a known item only. Every accepted event that names a recommendation id (and is not a return)
is also an ``Outcome`` for attribution (serving/attribution/store.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
from pydantic import ValidationError

from features.online import PurchaseEvent
from features.validation import validate
from serving.attribution.store import Outcome
from serving.routes.schemas import EventIn

FUTURE_SLACK = timedelta(minutes=5)  # as features.validation allows
SIGNALS = ("impression", "click", "add_to_cart")  # outcome-only events

MESSAGES = {
    "future_timestamp": "ts: in the future",
    "non_positive_quantity": "quantity: must not be 0, and > 0 for a purchase (type=return "
    "for returns)",
    "negative_price": "unit_price: must be >= 0 (refunds are negative quantities)",
    "unknown_item": "item_id: not in the catalog of the served model",
    "duplicate_row": "duplicate of an earlier event in this request",
}


@dataclass
class Verdict:
    index: int
    errors: list[str] = field(default_factory=list)


@dataclass
class Checked:
    """What a request's events are once checked: purchases and returns for the features,
    outcomes (with the event's index) for attribution, and one verdict per event."""

    events: list[PurchaseEvent]
    outcomes: list[tuple[int, Outcome]]
    verdicts: list[Verdict]


def _outcome(e: EventIn, amount: float) -> Outcome:
    assert e.recommendation_id is not None
    return Outcome(
        e.recommendation_id,
        e.type,
        e.customer_id,
        e.item_id,
        _utc(e.ts).timestamp(),
        amount,
        e.event_id,
    )


def _signals(
    shaped: list[tuple[int, EventIn]], catalog_ids: pl.Series, verdicts: list[Verdict]
) -> list[tuple[int, Outcome]]:
    """Impressions, clicks, add_to_cart: a known item (if any), not in the future."""
    if not shaped:
        return []
    items = pl.Series([e.item_id for _, e in shaped], dtype=pl.String)
    known = (items.is_null() | items.is_in(catalog_ids.implode())).to_list()
    latest = datetime.now(UTC) + FUTURE_SLACK
    out = []
    for (i, e), ok in zip(shaped, known, strict=True):
        if not ok:
            verdicts[i].errors = [MESSAGES["unknown_item"]]
        elif _utc(e.ts) > latest:
            verdicts[i].errors = [MESSAGES["future_timestamp"]]
        elif e.recommendation_id is not None:
            out.append((i, _outcome(e, 0.0)))
    return out


def _utc(ts: datetime) -> datetime:
    return (ts if ts.tzinfo else ts.replace(tzinfo=UTC)).astimezone(UTC)


def check_events(
    raw: Sequence[dict[str, Any]], catalog_ids: pl.Series, max_age_days: int = 90
) -> Checked:
    """Accepted purchases and returns (returns carry a negative quantity), outcomes, and one
    verdict per input event."""
    verdicts = [Verdict(i) for i in range(len(raw))]
    shaped: list[tuple[int, EventIn]] = []
    signals: list[tuple[int, EventIn]] = []
    oldest = datetime.now(UTC) - timedelta(days=max_age_days)
    for i, ev in enumerate(raw):
        try:
            event = EventIn.model_validate(ev)
        except ValidationError as exc:
            verdicts[i].errors = [
                f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
            ]
            continue
        if _utc(event.ts) < oldest:
            verdicts[i].errors = [
                f"ts: older than {max_age_days} days (PATRON_EVENT_MAX_AGE_DAYS); history is "
                "imported by the batch jobs, not the real-time API"
            ]
            continue
        (signals if event.type in SIGNALS else shaped).append((i, event))
    outcomes = _signals(signals, catalog_ids, verdicts)
    if not shaped:
        return Checked([], outcomes, verdicts)
    frame = pl.DataFrame(
        {
            "customer_id": [e.customer_id for _, e in shaped],
            "item_id": [e.item_id for _, e in shaped],
            "ts": [_utc(e.ts) for _, e in shaped],
            "quantity": [e.quantity for _, e in shaped],
            "unit_price": [e.unit_price for _, e in shaped],
            "event_type": [e.type for _, e in shaped],
            "order_id": [e.order_id for _, e in shaped],
            "channel": [e.channel for _, e in shaped],
        },
        schema={
            "customer_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "quantity": pl.Float64,
            "unit_price": pl.Float64,
            "event_type": pl.String,
            "order_id": pl.String,
            "channel": pl.String,
        },
    )
    result = validate(frame, catalog=pl.DataFrame({"item_id": catalog_ids}))
    rejected: dict[int, str] = dict(
        zip(
            result.quarantined["row_number"].to_list(),
            result.quarantined["reason"].to_list(),
            strict=True,
        )
    )
    for row, (i, _) in enumerate(shaped, start=1):
        if row in rejected:
            reason = str(rejected[row])
            verdicts[i].errors = [MESSAGES.get(reason, reason)]
    # accepted rows keep the input order: the shaped events that were not rejected
    kept = [(i, e) for row, (i, e) in enumerate(shaped, start=1) if row not in rejected]
    events = [
        PurchaseEvent(
            customer_id=str(r["customer_id"]),
            item_id=str(r["item_id"]),
            ts=r["ts"],
            quantity=float(r["quantity"]),
            unit_price=r["unit_price"],
            type="return" if r["quantity"] < 0 else "purchase",
            event_id=e.event_id,
        )
        for r, (_, e) in zip(result.accepted.iter_rows(named=True), kept, strict=True)
    ]
    for got, (i, e) in zip(events, kept, strict=True):
        if e.recommendation_id is not None and got.type == "purchase":
            outcomes.append((i, _outcome(e, got.quantity * (got.unit_price or 0.0))))
    outcomes.sort(key=lambda pair: pair[0])
    return Checked(events, outcomes, verdicts)
