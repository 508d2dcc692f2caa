"""Validation of real-time events: the batch validator's rules (features.validation), one
verdict per event, so a bad event never sinks the valid ones sent with it.

Two stages: the typed shape (ids, numbers, timestamp) per event with Pydantic, then
``features.validation.validate`` over the shape-valid events against the served catalog
(future timestamps, quantity sign, negative prices, unknown items, duplicates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import polars as pl
from pydantic import ValidationError

from features.online import PurchaseEvent
from features.validation import validate
from serving.routes.schemas import EventIn

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


def check_events(
    raw: Sequence[dict[str, Any]], catalog_ids: pl.Series
) -> tuple[list[PurchaseEvent], list[Verdict]]:
    """Accepted events (returns carry a negative quantity) and one verdict per input event."""
    verdicts = [Verdict(i) for i in range(len(raw))]
    shaped: list[tuple[int, EventIn]] = []
    for i, ev in enumerate(raw):
        try:
            shaped.append((i, EventIn.model_validate(ev)))
        except ValidationError as exc:
            verdicts[i].errors = [
                f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
            ]
    if not shaped:
        return [], verdicts
    frame = pl.DataFrame(
        {
            "customer_id": [e.customer_id for _, e in shaped],
            "item_id": [e.item_id for _, e in shaped],
            "ts": [
                (e.ts if e.ts.tzinfo else e.ts.replace(tzinfo=UTC)).astimezone(UTC)
                for _, e in shaped
            ],
            "quantity": [e.quantity for _, e in shaped],
            "unit_price": [e.unit_price for _, e in shaped],
            "event_type": [e.type for _, e in shaped],
        },
        schema={
            "customer_id": pl.String,
            "item_id": pl.String,
            "ts": pl.Datetime("us", "UTC"),
            "quantity": pl.Float64,
            "unit_price": pl.Float64,
            "event_type": pl.String,
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
    events = [
        PurchaseEvent(
            customer_id=str(r["customer_id"]),
            item_id=str(r["item_id"]),
            ts=r["ts"],
            quantity=float(r["quantity"]),
            unit_price=r["unit_price"],
            type="return" if r["quantity"] < 0 else "purchase",
        )
        for r in result.accepted.iter_rows(named=True)
    ]
    return events, verdicts
