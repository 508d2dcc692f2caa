"""Regression: after redis-server restarts, connections left in the API's pool are dead.
Each one used to fail its first command, so the service answered degraded (and opened the
breaker) again and again long after Redis was back. Now a connection error is retried once
on a fresh connection (timeouts are not retried), so recovery is immediate and final."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
import redis

from features.online import OnlineStore
from serving.app import create_app
from tests.reliability.conftest import Report
from tests.reliability.harness import customers_table, stop_redis
from tests.services import redis_server
from tests.serving.conftest import settings_for
from tests.serving.helpers import customer_id, items_frame, make_bundle

pytestmark = pytest.mark.reliability


async def _burst(client: httpx.AsyncClient, n: int, start: int) -> list[bool]:
    """n concurrent recommendation requests; True where the answer was degraded."""
    rs = await asyncio.gather(
        *(client.get(f"/v1/customers/{customer_id(start + u)}/recommendations") for u in range(n))
    )
    assert {r.status_code for r in rs} == {200}
    return [r.json()["degraded"] for r in rs]


def test_no_degraded_answers_after_redis_is_back(tmp_path: Path, report: Report) -> None:
    bundle = make_bundle(tmp_path / "bundle", seed=0, version="1")
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as srv:
        rc = redis.Redis.from_url(srv.url)
        OnlineStore(rc, "rel").publish(customers_table(), items_frame(240))
        rc.close()
        app = create_app(
            settings_for(
                bundle, srv.url, redis_namespace="rel", redis_timeout_ms=500, redis_retry_s=0.2
            )
        )

        async def scenario() -> tuple[list[bool], list[bool]]:
            transport = httpx.ASGITransport(app=app)
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(transport=transport, base_url="http://t") as c,
            ):
                before = await _burst(c, 24, 0)  # fills the pool with several connections
                stop_redis(srv)
                srv.start()
                after: list[bool] = []
                for round_ in range(4):  # concurrency reaches the older pooled connections
                    after += await _burst(c, 24, 24 * round_)
                return before, after

        before, after = asyncio.run(scenario())
    assert not any(before)
    assert sum(after) == 0, f"{sum(after)} of {len(after)} answers degraded after the restart"
    report(
        "redis restart: stale pooled connections",
        len(before) + len(after),
        {"2xx": len(before) + len(after) - sum(after), "2xx-degraded": sum(after)},
        "redis-server restarted between bursts",
        0,
    )
