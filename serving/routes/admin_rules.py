"""``GET /admin/rules`` (active rules and version) and ``PUT /admin/rules`` (validate + swap).

The app's lifespan may set ``app.state.rules`` to a ``RulesHolder``; if it has not, the first
request creates one from the app's settings (``ServingSettings.rules_file``, i.e.
``PATRON_RULES_FILE``; default config/rules.yaml).
"""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, HTTPException, Request
from pydantic import BaseModel

from serving.routes.deps import ActorDep, AdminDep, AdminSyncDep
from serving.routes.schemas import ErrorResponse
from serving.rules.holder import RulesHolder
from serving.rules.loader import load_rules
from serving.rules.models import RuleError
from serving.settings import ServingSettings

log = logging.getLogger("patron.serving")
router = APIRouter(prefix="/admin", tags=["admin"])


def get_rules_holder(request: Request) -> RulesHolder:
    holder = getattr(request.app.state, "rules", None)
    if not isinstance(holder, RulesHolder):
        settings: ServingSettings = request.app.state.settings
        holder = RulesHolder(load_rules(settings.rules_path()))
        request.app.state.rules = holder
    return holder


RulesDep = Annotated[RulesHolder, Depends(get_rules_holder)]


class RulesOut(BaseModel):
    version: str
    label: str
    content_hash: str
    source: str
    summary: dict[str, Any]
    rules: dict[str, Any]


def _out(holder: RulesHolder) -> RulesOut:
    cur = holder.current()
    return RulesOut(
        version=cur.version,
        label=cur.rules.version,
        content_hash=cur.content_hash,
        source=cur.source,
        summary=cur.summary(),
        rules=cur.rules.model_dump(mode="json"),
    )


@router.get(
    "/rules",
    response_model=RulesOut,
    responses={401: {"model": ErrorResponse}},
    summary="Active business rules and version",
)
def get_rules(_: AdminDep, holder: RulesDep) -> RulesOut:
    return _out(holder)


@router.put(
    "/rules",
    response_model=RulesOut,
    summary="Validate and activate a new rule set (the current one stays on error)",
    responses={
        400: {"model": ErrorResponse, "description": "The body is not JSON"},
        401: {"model": ErrorResponse},
        422: {
            "model": ErrorResponse,
            "description": "The rule set is invalid; the message names rule/field",
        },
        503: {
            "model": ErrorResponse,
            "description": "The shared admin state (redis) is unreachable; nothing changed",
        },
    },
)
async def put_rules(
    _: AdminDep,
    actor: ActorDep,
    holder: RulesDep,
    sync: AdminSyncDep,
    body: Annotated[dict[str, Any], Body(description="The rule set, as in config/rules.yaml")],
) -> RulesOut:
    before = holder.current().version
    try:
        if sync is not None:  # stored for every worker and replica, then active here
            await sync.put_rules(body, by=actor)
        else:  # an app without the lifespan (one process): here only
            holder.replace(body)
            log.info("PUT /admin/rules: rules %s -> %s", before, holder.current().version)
    except RuleError as exc:
        log.info("PUT /admin/rules refused; rules %s kept", before)
        raise HTTPException(status_code=422, detail=str(exc)) from None
    return _out(holder)
