"""GET /v1/customers/{id}/recommendations and POST /v1/recommendations/batch."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from features.online import CustomerOnline
from serving import service
from serving.ab import assign_variant
from serving.metrics import Metrics
from serving.routes.deps import ServicesDep
from serving.routes.schemas import (
    ID_PATTERN,
    BatchRequest,
    BatchResponse,
    Category,
    CustomerIdPath,
    ErrorResponse,
    K,
    RecItem,
    RecommendationResponse,
)
from serving.settings import ServingSettings
from serving.state import Models

router = APIRouter(prefix="/v1", tags=["recommendations"])
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not JSON"},
    404: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _one(
    models: Models,
    settings: ServingSettings,
    metrics: Metrics,
    customer_id: str,
    online: CustomerOnline | None,
    k: int,
    **kw: object,
) -> RecommendationResponse:
    variant = assign_variant(customer_id, settings.challenger_traffic)
    model = models.champion
    if variant == "challenger":
        if models.challenger is None:
            variant = "champion"
        else:
            model = models.challenger
    res = service.recommend(model, customer_id, online, k, **kw)  # type: ignore[arg-type]
    metrics.variants.labels(variant).inc()
    if res.fallback:
        metrics.fallbacks.labels(res.fallback).inc()
    return RecommendationResponse(
        customer_id=customer_id,
        tier=res.tier,
        segment=res.segment,
        model_version=model.version,
        variant=variant,
        degraded=online is None,
        rules_version=res.rules_version,
        items=[RecItem(item_id=p.item_id, score=p.score, reasons=p.reasons) for p in res.items],
    )


@router.get(
    "/customers/{customer_id}/recommendations",
    response_model=RecommendationResponse,
    responses=ERRORS,
    summary="Personalised picks for one customer",
)
async def recommendations(
    customer_id: CustomerIdPath,
    svc: ServicesDep,
    k: K = 10,
    category: Category = None,
    exclude: Annotated[
        str | None, Query(max_length=4_000, description="Comma-separated item ids to leave out")
    ] = None,
    context_item: Annotated[
        str | None, Query(pattern=ID_PATTERN, max_length=64, description="Item being viewed")
    ] = None,
) -> RecommendationResponse:
    models = svc.holder.models()  # this request's models, whatever a reload does meanwhile
    settings, gateway, metrics = svc.settings, svc.gateway, svc.metrics
    excluded = [e for e in (exclude or "").split(",") if e]
    if len(excluded) > 200:
        raise HTTPException(422, "exclude: at most 200 item ids")
    online = await gateway.customer(customer_id)
    if online is None:
        metrics.degraded.labels("recommendations").inc()
    return _one(
        models,
        settings,
        metrics,
        customer_id,
        online,
        k,
        category=category,
        exclude=excluded,
        context_item=context_item,
        rules=svc.rules.current(),
    )


@router.post(
    "/recommendations/batch",
    response_model=BatchResponse,
    responses=ERRORS,
    summary="Picks for up to 1000 customers (email tools)",
)
async def batch(
    body: BatchRequest,
    svc: ServicesDep,
) -> BatchResponse:
    models = svc.holder.models()
    settings, gateway, metrics = svc.settings, svc.gateway, svc.metrics
    if len(body.customer_ids) > settings.max_batch:
        raise HTTPException(422, f"customer_ids: at most {settings.max_batch} per batch")
    rules = svc.rules.current()
    rows = await gateway.customers(body.customer_ids)
    if any(r is None for r in rows):
        metrics.degraded.labels("batch").inc()
    # CPU-bound for large batches: keep the event loop free for single requests
    results = await asyncio.to_thread(
        lambda: [
            _one(models, settings, metrics, cid, row, body.k, rules=rules)
            for cid, row in zip(body.customer_ids, rows, strict=True)
        ]
    )
    return BatchResponse(results=results)
