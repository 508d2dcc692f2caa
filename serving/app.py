"""The FastAPI app factory. Nothing happens at import: the lifespan loads the models,
connects Redis and starts the alias poller; ``create_app`` only wires routes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from serving import service
from serving.admin_state import AdminState
from serving.admin_sync import AdminSync
from serving.attribution.recorder import AnswerRecorder
from serving.attribution.store import AttributionStore
from serving.batch import RecBatcher
from serving.hot_path import HotRecommendations
from serving.metrics import LatencyMiddleware, Metrics
from serving.routes import (
    admin,
    admin_experiments,
    admin_rules,
    events,
    health,
    install_error_handlers,
    items,
    profile,
    recommendations,
)
from serving.routes.deps import Services
from serving.rules.engine import warm_up
from serving.rules.holder import RulesHolder
from serving.rules.loader import check_tiers, load_rules
from serving.settings import ServingSettings, get_serving_settings
from serving.state import ModelHolder
from serving.store import OnlineGateway, StoreFactory, default_store_factory, make_client

log = logging.getLogger("patron.serving")


async def _poll(sync: AdminSync, interval: float, metrics: Metrics) -> None:
    """Re-resolve the aliases every ``interval`` seconds; when they moved, load and pin the
    new versions for every worker (as POST /admin/reload does)."""
    while True:
        await asyncio.sleep(interval)
        try:
            res = await sync.reload(by="alias poll")
        except Exception as exc:  # keep serving the current models
            metrics.reloads.labels("failed").inc()
            log.warning("alias poll failed, keeping version: %s", exc)
            continue
        if res.changed:
            metrics.reloads.labels("changed").inc()
            admin.publish_model_gauge(metrics, sync.models.models())


async def _bounded(step: str, aw: Awaitable[object], seconds: float = 5.0) -> None:
    """Await a shutdown step for at most ``seconds``; a failure or a hang is logged."""
    try:
        async with asyncio.timeout(seconds):
            await aw
    except TimeoutError:
        log.warning("shutdown: %s did not finish within %.0f s; going on", step, seconds)
    except Exception as exc:
        log.warning("shutdown: %s failed (%s); going on", step, type(exc).__name__)


def create_app(
    settings: ServingSettings | None = None, *, store_factory: StoreFactory | None = None
) -> FastAPI:
    """Build the app. Invalid settings (e.g. admin routes without a key) raise here."""
    settings = settings or get_serving_settings()
    metrics = Metrics()
    factory = store_factory or default_store_factory

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        holder = ModelHolder(settings)
        client = make_client(settings.redis_url, settings.redis_timeout_ms, settings.redis_cluster)
        gateway = OnlineGateway(
            client,
            factory(client, settings.redis_namespace),
            settings.redis_timeout_ms,
            settings.redis_retry_s,
            settings.durability(),
        )
        rules = getattr(app.state, "rules", None) or RulesHolder(load_rules(settings.rules_path()))
        # compiled rules pass: loaded from numba's cache (compiled on a first start) before
        # readiness, never on a request; in a thread so the loop stays free meanwhile
        await asyncio.to_thread(warm_up)
        holder.tier_check = lambda tiers: check_tiers(rules.current(), tiers)
        sync = AdminSync(
            AdminState(client, settings.redis_namespace),
            holder,
            rules,
            metrics,
            settings.admin_sync_s,
        )
        await sync.start()  # the shared rules and model pin, or this worker's as the seed
        rules.model_tiers = lambda: holder.models().champion.tiers
        admin.publish_model_gauge(metrics, holder.models())
        app.state.settings = settings
        app.state.holder = holder
        app.state.gateway = gateway
        app.state.metrics = metrics
        app.state.rules = rules
        batcher = None
        if settings.coalesce_max > 0:
            batcher = RecBatcher(
                gateway.customers,
                service.recommend,
                settings.coalesce_max,
                observe=metrics.coalesced.observe,
            )
        recorder = AnswerRecorder(
            AttributionStore.from_settings(client, settings) if settings.ab_attribution else None,
            flush_s=settings.ab_flush_ms / 1000,
            metrics=metrics,
        )
        recorder.available = lambda: not gateway.down
        app.state.admin_sync = sync
        app.state.services = Services(settings, holder, gateway, metrics, rules, recorder, batcher)
        tasks = [asyncio.create_task(sync.run()), asyncio.create_task(recorder.run())]
        if settings.reload_interval_s > 0:
            tasks.append(asyncio.create_task(_poll(sync, settings.reload_interval_s, metrics)))
        log.info(
            "serving model %s, rules %s",
            holder.models().champion.version,
            rules.current().version,
        )
        try:
            yield
        finally:
            recorder.closing = True
            for task in tasks:
                task.cancel()
            # every step of the shutdown is bounded: a worker that cannot stop cleanly
            # still stops, and says which step hung
            await _bounded("background tasks", asyncio.gather(*tasks, return_exceptions=True))
            await _bounded("answer records", recorder.flush())  # what the last requests served
            await _bounded("redis client", gateway.close())

    app = FastAPI(
        title="Patron recommendations",
        version="1",
        description="Loyalty-aware recommendations: personalised picks, similar items, "
        "bought-together, popular, events, loyalty profiles.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    install_error_handlers(app)
    app.include_router(recommendations.router)
    app.include_router(items.router)
    app.include_router(events.router)
    app.include_router(profile.router)
    app.include_router(admin.router)
    if settings.admin_routes:
        app.include_router(admin.admin_router)
        app.include_router(admin_rules.router)
        app.include_router(admin_experiments.router)
    app.include_router(health.router)
    if settings.hot_path:  # inside the latency middleware: timed like any route
        app.add_middleware(HotRecommendations)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    return app
