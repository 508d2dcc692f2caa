"""POST /v1/events: validate each event, record the valid ones, report per event."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from features.online import PurchaseEvent
from serving.routes.deps import GatewayDep, MetricsDep, ModelsDep
from serving.routes.schemas import (
    BodyErrorResponse,
    ErrorResponse,
    EventIn,
    EventResult,
    EventsRequest,
    EventsResponse,
)

router = APIRouter(prefix="/v1", tags=["events"])
MAX_CLOCK_SKEW = timedelta(days=1)


def check_event(
    raw: dict[str, object], known_items: dict[str, int]
) -> tuple[PurchaseEvent | None, list[str]]:
    """The batch validator's rules for one event: types, ids, sign of quantity by type,
    price >= 0, no future timestamps, item in the catalog."""
    try:
        ev = EventIn.model_validate(raw)
    except ValidationError as exc:
        return None, [
            f"{'.'.join(str(p) for p in e['loc']) or 'event'}: {e['msg']}" for e in exc.errors()
        ]
    errors: list[str] = []
    ts = ev.ts if ev.ts.tzinfo is not None else ev.ts.replace(tzinfo=UTC)
    if ts > datetime.now(UTC) + MAX_CLOCK_SKEW:
        errors.append("ts: in the future")
    if ev.quantity == 0:
        errors.append("quantity: must not be 0")
    elif ev.type == "purchase" and ev.quantity < 0:
        errors.append("quantity: a purchase needs quantity > 0 (send type=return for returns)")
    elif ev.type == "return" and ev.quantity > 0:
        errors.append("quantity: a return needs a negative quantity")
    if ev.item_id not in known_items:
        errors.append(f"item_id: {ev.item_id!r} is not in the catalog")
    if errors:
        return None, errors
    return (
        PurchaseEvent(
            customer_id=ev.customer_id,
            item_id=ev.item_id,
            ts=ts,
            quantity=ev.quantity,
            unit_price=ev.unit_price,
            type=ev.type,
        ),
        [],
    )


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON"},
        422: {
            "model": EventsResponse | BodyErrorResponse,  # per-event report, or a bad body
            "description": "Some events were rejected (the valid ones were recorded)",
        },
        503: {"model": ErrorResponse},
    },
    summary="Record purchases/returns (recent-purchase exclusions, trending, tier progress)",
)
async def events(
    body: EventsRequest, models: ModelsDep, gateway: GatewayDep, metrics: MetricsDep
) -> EventsResponse | JSONResponse:
    known = models.champion.item_pos
    valid: list[PurchaseEvent] = []
    results: list[EventResult] = []
    for i, raw in enumerate(body.events):
        ev, errors = check_event(raw, known)
        results.append(EventResult(index=i, accepted=ev is not None, errors=errors))
        if ev is not None:
            valid.append(ev)
    if valid:
        await gateway.record(valid)
    rejected = len(results) - len(valid)
    metrics.events.labels("accepted").inc(len(valid))
    metrics.events.labels("rejected").inc(rejected)
    out = EventsResponse(accepted=len(valid), rejected=rejected, results=results)
    if rejected:
        return JSONResponse(out.model_dump(), status_code=422)
    return out
