"""Liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from serving.routes.deps import GatewayDep, HolderDep, MetricsDep
from serving.routes.schemas import HealthResponse, ReadyResponse

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthResponse, summary="The process is alive")
@router.head("/healthz", include_in_schema=False)
async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


@router.head("/readyz", include_in_schema=False, response_model=ReadyResponse)
@router.get(
    "/readyz",
    response_model=ReadyResponse,
    responses={503: {"model": ReadyResponse}},
    summary="A model is loaded, Redis answers and holds a published feature version (else 503 "
    "with the reasons)",
)
async def readyz(holder: HolderDep, gateway: GatewayDep) -> ReadyResponse | JSONResponse:
    reasons: list[str] = []
    models = holder.current
    if models is None:
        reasons.append("no model loaded")
    redis_problem = await gateway.ping()
    if redis_problem:
        reasons.append(redis_problem)
    else:
        try:
            if await gateway.published_version() is None:
                reasons.append("online store has no published feature version")
        except (RedisError, OSError, TimeoutError) as exc:
            reasons.append(f"redis unreachable: {type(exc).__name__}")
    if reasons:
        body = ReadyResponse(
            ready=False, model_version=models.champion.version if models else None, reasons=reasons
        )
        return JSONResponse(body.model_dump(), status_code=503)
    assert models is not None
    return ReadyResponse(
        ready=True, model_version=models.champion.version, reasons=list(models.notes)
    )


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def metrics(m: MetricsDep) -> Response:
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
