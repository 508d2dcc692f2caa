"""GET /v1/model and POST /admin/reload."""

from __future__ import annotations

import logging

from fastapi import APIRouter

from serving.metrics import Metrics
from serving.model import LoadedModel
from serving.routes.deps import AdminDep, HolderDep, MetricsDep, ModelsDep, SettingsDep
from serving.routes.schemas import (
    ErrorResponse,
    ModelDescription,
    ModelInfoResponse,
    ReloadResponse,
)
from serving.state import Models

log = logging.getLogger("patron.serving")
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
    summary="Re-resolve the alias (or bundle dir) and swap models atomically",
)
async def reload(_: AdminDep, holder: HolderDep, metrics: MetricsDep) -> ReloadResponse:
    try:
        res = await holder.reload()
    except Exception:
        metrics.reloads.labels("failed").inc()
        raise
    metrics.reloads.labels("changed" if res.changed else "unchanged").inc()
    publish_model_gauge(metrics, holder.models())
    if res.changed:
        log.info("POST /admin/reload: champion %s -> %s", res.previous, res.champion)
    else:
        log.info("POST /admin/reload: champion %s unchanged", res.champion)
    return ReloadResponse(
        changed=res.changed,
        previous_version=res.previous,
        champion_version=res.champion,
        challenger_version=res.challenger,
        notes=list(res.notes),
    )
