"""Item-centred lists: similar, bought-together, popular."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query

from features.online import CustomerOnline
from serving import service
from serving.attribution.recorder import AnswerRecorder
from serving.routes.deps import ModelsDep, RecorderDep, RulesDep, Services, ServicesDep
from serving.routes.schemas import (
    Category,
    ErrorResponse,
    ItemIdPath,
    ItemListResponse,
    K,
    OptCustomerId,
    RecItem,
)
from serving.service import RecResult
from serving.state import Models
from serving.store import OnlineGateway

router = APIRouter(prefix="/v1", tags=["items"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorResponse},
    503: {"model": ErrorResponse},
}


def _items(res: RecResult) -> list[RecItem]:
    return [RecItem(item_id=p.item_id, score=p.score, reasons=p.reasons) for p in res.items]


async def _online(
    gateway: OnlineGateway, customer_id: str | None
) -> tuple[CustomerOnline | None, bool]:
    """The customer's online row (None without a customer) and whether Redis failed."""
    if customer_id is None:
        return None, False
    row = await gateway.customer(customer_id)
    return row, row is None


def _mint(recorder: AnswerRecorder, models: Models, res: RecResult, customer_id: str | None) -> str:
    """The answer's recommendation id (item lists come from the champion)."""
    return recorder.mint("champion", models.champion, *models.versions(), res, customer_id)


async def _item_list(
    route: str,
    fn: Callable[..., RecResult],
    item_id: str,
    svc: Services,
    k: int,
    customer_id: str | None,
) -> ItemListResponse:
    """An item-anchored list (similar, bought together), optionally for a customer."""
    models = svc.holder.models()  # this request's models and rules, whatever changes meanwhile
    rules = svc.rules.current()
    model = models.champion
    service.item_index(model, item_id)  # 404 before any Redis call
    online, degraded = await _online(svc.gateway, customer_id)
    if degraded:
        svc.metrics.degraded.labels(route).inc()
    res = fn(model, item_id, k, customer_id, online, rules)
    return ItemListResponse(
        recommendation_id=_mint(svc.recorder, models, res, customer_id),
        item_id=item_id,
        customer_id=customer_id,
        tier=res.tier if customer_id else None,
        model_version=model.version,
        rules_version=res.rules_version,
        degraded=degraded,
        items=_items(res),
    )


@router.get(
    "/items/{item_id}/similar",
    response_model=ItemListResponse,
    responses=ERRORS,
    summary="Items close to this one in the model's factor space",
)
async def similar(
    item_id: ItemIdPath, svc: ServicesDep, k: K = 10, customer_id: OptCustomerId = None
) -> ItemListResponse:
    return await _item_list("similar", service.similar, item_id, svc, k, customer_id)


@router.get(
    "/items/{item_id}/bought-together",
    response_model=ItemListResponse,
    responses=ERRORS,
    summary="Items often bought with this one (may be fewer than k)",
)
async def bought_together(
    item_id: ItemIdPath, svc: ServicesDep, k: K = 10, customer_id: OptCustomerId = None
) -> ItemListResponse:
    return await _item_list(
        "bought_together", service.bought_together, item_id, svc, k, customer_id
    )


@router.get(
    "/popular",
    response_model=ItemListResponse,
    responses={**ERRORS, 422: {"model": ErrorResponse, "description": "Unknown tier"}},
    summary="Popular items, optionally within a tier and/or category",
)
async def popular(
    models: ModelsDep,
    rules: RulesDep,
    recorder: RecorderDep,
    k: K = 10,
    tier: Annotated[
        str | None, Query(min_length=1, max_length=64, description="One of the model's tiers")
    ] = None,
    category: Category = None,
) -> ItemListResponse:
    model = models.champion
    if tier is not None and tier not in model.tiers:
        known = list(model.tiers)
        raise HTTPException(422, f"tier: {tier!r} is not one of the model's tiers {known}")
    res = service.popular(model, k, tier, category, rules)
    return ItemListResponse(
        recommendation_id=_mint(recorder, models, res, None),
        tier=res.tier,
        model_version=model.version,
        rules_version=res.rules_version,
        items=_items(res),
    )
