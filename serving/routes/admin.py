"""GET /v1/model and POST /admin/reload."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query

from serving.admin_state import worker_name
from serving.admin_sync import STORE_ERRORS
from serving.errors import Unavailable
from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.routes.deps import (
    ActorDep,
    AdminDep,
    AdminSyncDep,
    HolderDep,
    MetricsDep,
    ModelsDep,
    SettingsDep,
)
from serving.routes.schemas import (
    AdminStateResponse,
    ErrorResponse,
    ModelDescription,
    ModelInfoResponse,
    ReloadResponse,
)
from serving.state import Models

router = APIRouter(prefix="/v1", tags=["model"])
admin_router = APIRouter(prefix="/admin", tags=["admin"])


def describe(m: LoadedModel) -> ModelDescription:
    return ModelDescription(
        model_name=m.manifest.model_name,
        version=m.version,
        alias=m.alias,
        source=m.source,
        trained_at=m.manifest.created_at,
        loaded_at=m.loaded_at,
        fingerprint=m.fingerprint,
        metrics=m.manifest.metrics,
        params=m.manifest.params,
        counts=m.manifest.counts,
        index=type(m.index).__name__,
    )


def publish_model_gauge(metrics: Metrics, models: Models) -> None:
    metrics.model_info.clear()
    metrics.model_info.labels("champion", models.champion.version).set(1)
    if models.challenger is not None:
        metrics.model_info.labels("challenger", models.challenger.version).set(1)


@router.get("/model", response_model=ModelInfoResponse, summary="The models being served")
async def model_info(models: ModelsDep, settings: SettingsDep) -> ModelInfoResponse:
    return ModelInfoResponse(
        champion=describe(models.champion),
        challenger=describe(models.challenger) if models.challenger else None,
        challenger_traffic=settings.challenger_traffic if models.challenger else 0.0,
        notes=list(models.notes),
    )


@admin_router.post(
    "/reload",
    response_model=ReloadResponse,
    responses={
        401: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
    summary="Re-resolve the alias (or bundle dir), load, pin it for every worker, swap",
)
async def reload(
    _: AdminDep, actor: ActorDep, holder: HolderDep, sync: AdminSyncDep, metrics: MetricsDep
) -> ReloadResponse:
    if sync is None:
        raise Unavailable("this app has no shared admin state")
    try:
        res = await sync.reload(by=actor)
    except Exception:
        metrics.reloads.labels("failed").inc()
        raise
    metrics.reloads.labels("changed" if res.changed else "unchanged").inc()
    publish_model_gauge(metrics, holder.models())
    return ReloadResponse(
        changed=res.changed,
        previous_version=res.previous,
        champion_version=res.champion,
        challenger_version=res.challenger,
        notes=list(res.notes),
    )


@admin_router.get(
    "/state",
    response_model=AdminStateResponse,
    responses={401: {"model": ErrorResponse}, 503: {"model": ErrorResponse}},
    summary="The shared rules and model pin, what this worker serves, the latest changes",
)
async def admin_state(
    _: AdminDep, holder: HolderDep, sync: AdminSyncDep, limit: int = Query(20, ge=1, le=1_000)
) -> AdminStateResponse:
    if sync is None:
        raise Unavailable("this app has no shared admin state")
    shared: int | None = None
    changes: list[dict[str, Any]] = []
    try:
        shared = await sync.state.epoch()
        changes = await sync.state.changes(limit)
    except STORE_ERRORS:
        pass
    models = holder.models()
    return AdminStateResponse(
        worker=worker_name(),
        shared_epoch=shared,
        worker_epoch=sync.epoch,
        adopted_at=sync.adopted_at,
        rules_version=sync.rules.current().version,
        champion_version=models.champion.version,
        challenger_version=models.challenger.version if models.challenger else None,
        changes=changes,
    )
