"""Typed dependencies: the app's state, read from ``request.app.state`` (set by lifespan).

All are ``async def``: FastAPI runs plain ``def`` dependencies in a thread pool, which cost
more than the whole recommendation (measured: ~16 thread hops per request).
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Header, HTTPException, Request

from serving.admin_sync import AdminSync
from serving.attribution.recorder import AnswerRecorder
from serving.batch import RecBatcher
from serving.metrics import Metrics
from serving.rules.holder import RulesHolder
from serving.rules.loader import LoadedRules
from serving.settings import ServingSettings
from serving.state import ModelHolder, Models
from serving.store import OnlineGateway


@dataclass(frozen=True)
class Services:
    """Everything the lifespan built, as one dependency for the hot routes (each FastAPI
    dependency costs a little per request)."""

    settings: ServingSettings
    holder: ModelHolder
    gateway: OnlineGateway
    metrics: Metrics
    rules: RulesHolder
    recorder: AnswerRecorder = field(default_factory=lambda: AnswerRecorder(None))
    batcher: RecBatcher | None = None  # coalesces concurrent plain recommendation requests


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


async def get_settings(request: Request) -> ServingSettings:
    settings: ServingSettings = request.app.state.settings
    return settings


async def get_holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


async def get_models(request: Request) -> Models:
    """The models this request uses from start to end (a reload cannot change them)."""
    holder: ModelHolder = request.app.state.holder
    return holder.models()


async def get_gateway(request: Request) -> OnlineGateway:
    gateway: OnlineGateway = request.app.state.gateway
    return gateway


async def get_rules(request: Request) -> LoadedRules:
    """The rule set this request uses from start to end (a PUT cannot change it midway)."""
    holder: RulesHolder = request.app.state.rules
    return holder.current()


async def get_recorder(request: Request) -> AnswerRecorder:
    services: Services = request.app.state.services
    return services.recorder


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def require_admin(
    settings: Annotated[ServingSettings, Depends(get_settings)],
    x_api_key: Annotated[str | None, Header(max_length=256)] = None,
) -> None:
    expected = settings.admin_api_key
    if expected is None:  # only possible with PATRON_ENV=dev
        return
    if x_api_key is None or not secrets.compare_digest(
        x_api_key.encode(), expected.get_secret_value().encode()
    ):
        raise HTTPException(status_code=401, detail="missing or wrong X-API-Key header")


async def get_admin_sync(request: Request) -> AdminSync | None:
    """The shared admin state's sync (None in an app without the lifespan: one process)."""
    return getattr(request.app.state, "admin_sync", None)


async def admin_actor(
    x_admin_actor: Annotated[
        str | None,
        Header(
            pattern=r"^[A-Za-z0-9._@+-]{1,64}$",
            description="Who makes an admin change, as the log of changes records it (a "
            "team, role or ticket; default 'admin')",
        ),
    ] = None,
) -> str:
    return x_admin_actor or "admin"


ServicesDep = Annotated[Services, Depends(get_services)]
SettingsDep = Annotated[ServingSettings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
ModelsDep = Annotated[Models, Depends(get_models)]
GatewayDep = Annotated[OnlineGateway, Depends(get_gateway)]
RulesDep = Annotated[LoadedRules, Depends(get_rules)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RecorderDep = Annotated[AnswerRecorder, Depends(get_recorder)]
AdminDep = Annotated[None, Depends(require_admin)]
AdminSyncDep = Annotated[AdminSync | None, Depends(get_admin_sync)]
ActorDep = Annotated[str, Depends(admin_actor)]
