"""POST /v1/events: validate each event, record the valid ones, report per event."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from serving.events import check_events
from serving.routes.deps import GatewayDep, MetricsDep, ModelsDep, SettingsDep
from serving.routes.schemas import (
    BodyErrorResponse,
    ErrorResponse,
    EventResult,
    EventsRequest,
    EventsResponse,
)

router = APIRouter(prefix="/v1", tags=["events"])


@router.post(
    "/events",
    response_model=EventsResponse,
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON"},
        422: {
            # per-event report, a bad body, or more than PATRON_MAX_EVENTS events
            "model": EventsResponse | BodyErrorResponse | ErrorResponse,
            "description": "Some events were rejected (the valid ones were recorded), or "
            "too many events (none recorded)",
        },
        503: {"model": ErrorResponse},
    },
    summary="Record purchases/returns (recent-purchase exclusions, tier progress)",
)
async def events(
    body: EventsRequest,
    models: ModelsDep,
    gateway: GatewayDep,
    metrics: MetricsDep,
    settings: SettingsDep,
) -> EventsResponse | JSONResponse:
    if len(body.events) > settings.max_events:  # PATRON_MAX_EVENTS; nothing is recorded
        raise HTTPException(422, f"events: at most {settings.max_events} per request")
    ids = models.champion.data.catalog["item_id"]
    valid, verdicts = check_events(body.events, ids, settings.event_max_age_days)
    results = [EventResult(index=v.index, accepted=not v.errors, errors=v.errors) for v in verdicts]
    applied = await gateway.record(valid) if valid else 0
    rejected = len(results) - len(valid)
    metrics.events.labels("accepted").inc(len(valid))
    metrics.events.labels("rejected").inc(rejected)
    metrics.events.labels("replayed").inc(len(valid) - applied)
    out = EventsResponse(
        accepted=len(valid), rejected=rejected, replayed=len(valid) - applied, results=results
    )
    if rejected:
        return JSONResponse(out.model_dump(), status_code=422)
    return out
