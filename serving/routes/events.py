"""POST /v1/events: validate each event, record the valid ones, report per event."""

from __future__ import annotations

from fastapi import APIRouter, HTTPException
from fastapi.responses import JSONResponse

from serving.events import check_events
from serving.routes.deps import GatewayDep, MetricsDep, ModelsDep, RecorderDep, SettingsDep
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
    summary="Record purchases/returns (recent-purchase exclusions, tier progress) and the "
    "outcomes of answers (impressions, clicks, add_to_cart, purchases) for A/B attribution",
)
async def events(
    body: EventsRequest,
    models: ModelsDep,
    gateway: GatewayDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    recorder: RecorderDep,
) -> EventsResponse | JSONResponse:
    if len(body.events) > settings.max_events:  # PATRON_MAX_EVENTS; nothing is recorded
        raise HTTPException(422, f"events: at most {settings.max_events} per request")
    ids = models.champion.data.catalog["item_id"]
    checked = check_events(body.events, ids, settings.event_max_age_days)
    valid, verdicts = checked.events, checked.verdicts
    results = [EventResult(index=v.index, accepted=not v.errors, errors=v.errors) for v in verdicts]
    attributed = 0
    if checked.outcomes and recorder.store is not None:
        # first: counting an outcome again is refused by the answer's markers, so after a
        # 503 from the purchases' write below, the retry counts each outcome once
        outcomes = [o for _, o in checked.outcomes]
        for (i, o), (result, *answer) in zip(
            checked.outcomes, await gateway.attribute(recorder.store, outcomes), strict=True
        ):
            results[i].attribution = result
            variant = answer[0] if answer else "none"
            metrics.ab_outcomes.labels(variant, o.type, result).inc()
            if result == "attributed":
                attributed += 1
                if o.amount > 0:
                    metrics.ab_revenue.labels(variant).inc(o.amount)
    applied = await gateway.record(valid) if valid else 0
    accepted = sum(r.accepted for r in results)
    rejected = len(results) - accepted
    metrics.events.labels("accepted").inc(accepted)
    metrics.events.labels("rejected").inc(rejected)
    metrics.events.labels("replayed").inc(len(valid) - applied)
    out = EventsResponse(
        accepted=accepted,
        rejected=rejected,
        attributed=attributed,
        replayed=len(valid) - applied,
        results=results,
    )
    if rejected:
        return JSONResponse(out.model_dump(), status_code=422)
    return out
