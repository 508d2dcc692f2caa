"""POST /v1/events: validate each event, record the valid ones, report per event."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from serving.events import check_events
from serving.routes.deps import GatewayDep, MetricsDep, ModelsDep
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
    ids = models.champion.data.catalog["item_id"]
    valid, verdicts = check_events(body.events, ids)
    results = [EventResult(index=v.index, accepted=not v.errors, errors=v.errors) for v in verdicts]
    if valid:
        await gateway.record(valid)
    rejected = len(results) - len(valid)
    metrics.events.labels("accepted").inc(len(valid))
    metrics.events.labels("rejected").inc(rejected)
    out = EventsResponse(accepted=len(valid), rejected=rejected, results=results)
    if rejected:
        return JSONResponse(out.model_dump(), status_code=422)
    return out
