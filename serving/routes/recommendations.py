"""GET /v1/customers/{id}/recommendations and POST /v1/recommendations/batch."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response

from features.online import CustomerOnline
from serving import render, service
from serving.ab import Variant, assign_variant
from serving.batch import recommend_batch_rendered
from serving.render import Answer
from serving.routes.deps import Services, ServicesDep
from serving.routes.params import openapi_parameters, parse_params
from serving.routes.schemas import (
    BatchRequest,
    BatchResponse,
    ErrorResponse,
    RecommendationResponse,
    RecQuery,
)
from serving.rules.loader import LoadedRules
from serving.settings import ServingSettings
from serving.state import Models

router = APIRouter(prefix="/v1", tags=["recommendations"])
JSON = "application/json"
ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorResponse, "description": "The body is not JSON"},
    404: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _variant(models: Models, settings: ServingSettings, customer_id: str) -> tuple[Variant, Any]:
    """The customer's A/B variant and the model that serves it."""
    variant = assign_variant(customer_id, settings.challenger_traffic)
    if variant == "challenger":
        if models.challenger is None:
            return "champion", models.champion
        return variant, models.challenger
    return variant, models.champion


def _body(
    svc: Services,
    models: Models,
    customer_id: str,
    variant: Variant,
    model: Any,
    online: CustomerOnline | None,
    res: Answer,
) -> bytes:
    """The ``RecommendationResponse`` JSON of one answer (serving/render.py: rendered from the
    picks, the model's bytes without building the model), with a new recommendation id
    whose record the recorder writes (serving/attribution/recorder.py)."""
    svc.metrics.variant_counter(variant).inc()
    if res.fallback:
        svc.metrics.fallback_counter(res.fallback).inc()
    rec_id = svc.recorder.mint(variant, model, *models.versions(), res, customer_id)
    return render.body(customer_id, res, model.version, variant, online is None, rec_id)


def _one(
    svc: Services,
    models: Models,
    customer_id: str,
    online: CustomerOnline | None,
    k: int,
    **kw: object,
) -> bytes:
    variant, model = _variant(models, svc.settings, customer_id)
    res = service.recommend(model, customer_id, online, k, **kw)  # type: ignore[arg-type]
    return _body(svc, models, customer_id, variant, model, online, res)


@router.get(
    "/customers/{customer_id}/recommendations",
    response_model=RecommendationResponse,
    # FastAPI documents 422 itself only for the parameters it resolves
    responses={**ERRORS, 422: {"model": ErrorResponse, "description": "Invalid parameters"}},
    summary="Personalised picks for one customer",
    openapi_extra={"parameters": openapi_parameters(RecQuery, ("customer_id",))},
)
async def recommendations(request: Request) -> Response:
    # parameters validated in one call (serving/routes/params.py): the hot route
    q = parse_params(RecQuery, request, ("customer_id",))
    return Response(await recommend_for(request.app.state.services, q), media_type=JSON)


async def recommend_for(svc: Services, q: RecQuery) -> bytes:
    """The route's work once its parameters are valid (also serving/hot_path.py's): the
    ``RecommendationResponse`` JSON."""
    customer_id, k, category, context_item = q.customer_id, q.k, q.category, q.context_item
    models = svc.holder.models()  # this request's models, whatever a reload does meanwhile
    settings, gateway, metrics = svc.settings, svc.gateway, svc.metrics
    excluded = [e for e in (q.exclude or "").split(",") if e]
    if len(excluded) > 200:
        raise HTTPException(422, "exclude: at most 200 item ids")
    if category is not None or context_item is not None:  # 404s before any Redis call
        _, served_by = _variant(models, settings, customer_id)
        if category is not None:
            service.category_code(served_by, category)
        if context_item is not None:
            service.item_index(served_by, context_item)
    rules = svc.rules.current()
    if svc.batcher is not None and category is None and context_item is None:
        variant, model = _variant(models, settings, customer_id)
        res, row = await svc.batcher.recommend(model, rules, customer_id, k, excluded)
        if row is None:
            metrics.degraded.labels("recommendations").inc()
        return _body(svc, models, customer_id, variant, model, row, res)
    online = await gateway.customer(customer_id)
    if online is None:
        metrics.degraded.labels("recommendations").inc()
    return _one(
        svc,
        models,
        customer_id,
        online,
        k,
        category=category,
        exclude=excluded,
        context_item=context_item,
        rules=rules,
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
) -> Response:
    models = svc.holder.models()
    settings, gateway, metrics = svc.settings, svc.gateway, svc.metrics
    if len(body.customer_ids) > settings.max_batch:
        raise HTTPException(422, f"customer_ids: at most {settings.max_batch} per batch")
    rules = svc.rules.current()
    rows = await gateway.customers(body.customer_ids)
    if any(r is None for r in rows):
        metrics.degraded.labels("batch").inc()
    # CPU-bound for large batches: keep the event loop free for single requests
    bodies = await asyncio.to_thread(_many, svc, models, body.customer_ids, rows, body.k, rules)
    return Response(render.batch_body(bodies), media_type=JSON)


def _many(
    svc: Services,
    models: Models,
    customer_ids: list[str],
    rows: list[CustomerOnline | None],
    k: int,
    rules: LoadedRules,
) -> list[bytes]:
    """One vectorised pass per variant (serving.batch), answers in request order."""
    variants = [_variant(models, svc.settings, c) for c in customer_ids]
    out: list[bytes | None] = [None] * len(customer_ids)
    for variant, model in {(v, id(m)): (v, m) for v, m in variants}.values():
        pos = [i for i, (v, m) in enumerate(variants) if v == variant and m is model]
        res = recommend_batch_rendered(
            model, [customer_ids[i] for i in pos], [rows[i] for i in pos], k, rules
        )
        for i, r in zip(pos, res, strict=True):
            out[i] = _body(svc, models, customer_ids[i], variant, model, rows[i], r)
    return [r for r in out if r is not None]
