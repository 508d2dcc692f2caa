"""GET /admin/experiments: the running A/B totals of every experiment, from Redis."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fastapi import APIRouter, HTTPException, Query

from serving.admin_sync import STORE_ERRORS
from serving.attribution.ids import day_of_ts, experiment_of, versions_of
from serving.attribution.report import VARIANTS, variant_summary
from serving.attribution.store import METRICS
from serving.errors import Unavailable
from serving.routes.deps import AdminDep, ModelsDep, RecorderDep, SettingsDep
from serving.routes.schemas import ErrorResponse, ExperimentsResponse

router = APIRouter(prefix="/admin", tags=["admin"])
MAX_DAYS = 366


@router.get(
    "/experiments",
    response_model=ExperimentsResponse,
    responses={
        401: {"model": ErrorResponse},
        409: {"model": ErrorResponse},
        503: {"model": ErrorResponse},
    },
    summary="Answers, impressions, clicks, attributed purchases and revenue per A/B variant",
)
async def experiments(
    _: AdminDep,
    recorder: RecorderDep,
    models: ModelsDep,
    settings: SettingsDep,
    days: int = Query(
        30,
        ge=1,
        le=MAX_DAYS,
        description="Counter days up to today (UTC); beyond PATRON_AB_RETENTION_DAYS none exist",
    ),
) -> ExperimentsResponse:
    if recorder.store is None:
        raise HTTPException(409, "attribution is off (PATRON_AB_ATTRIBUTION=false)")
    now = time.time()
    days = min(days, settings.ab_retention_days)
    day_list = [day_of_ts(now - 86_400 * d) for d in range(days - 1, -1, -1)]
    try:
        async with asyncio.timeout(10 * settings.redis_timeout_ms / 1000 + 1):
            totals = await recorder.store.totals(day_list)
    except STORE_ERRORS as exc:
        raise Unavailable(f"cannot read the A/B counters: {type(exc).__name__}") from None
    conf = settings.ab_confidence
    out: list[dict[str, Any]] = []
    for exp, by in sorted(totals.counts.items()):
        champion, challenger = versions_of(exp)
        counts = {v: {**dict.fromkeys(METRICS, 0.0), **by.get(v, {})} for v in VARIANTS}
        out.append(
            {
                "experiment": exp,
                "champion_version": champion,
                "challenger_version": challenger,
                "days": sorted(totals.days.get(exp, set())),
                "variants": {v: variant_summary(counts[v], conf) for v in VARIANTS},
            }
        )
    return ExperimentsResponse(
        current=experiment_of(*models.versions()),
        since=day_list[0],
        until=day_list[-1],
        experiments=out,
    )
