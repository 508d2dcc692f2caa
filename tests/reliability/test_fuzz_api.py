"""Schemathesis against the OpenAPI schema of a real ``patron serve``: every operation
(events, batch and the admin routes included), positive and negative data, with a valid
admin key, then again with redis-server stopped. No request may get a 500.

tests/serving/test_schemathesis.py covers the anonymous, Redis-up case; this adds the
authenticated admin paths, more examples, and the degraded (Redis down) server.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from features.online import OnlineStore
from serving.app import create_app
from serving.settings import ServingSettings
from tests.reliability.conftest import ROWS, ScenarioRow
from tests.reliability.harness import Server, customers_table, serve, stop_redis
from tests.services import RedisServer, redis_server
from tests.serving.conftest import ADMIN_KEY
from tests.serving.helpers import items_frame, make_bundle

pytestmark = pytest.mark.reliability

NS = "relfuzz"
STATUS: dict[str, Counter[int]] = {"redis up": Counter(), "redis down": Counter()}


@pytest.fixture(scope="module")
def fuzz_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    d = tmp_path_factory.mktemp("fuzzredis")
    with redis_server(d) as srv:
        client = redis.Redis.from_url(srv.url)
        OnlineStore(client, NS).publish(customers_table(), items_frame(240))
        client.close()
        yield srv


@pytest.fixture(scope="module")
def fuzz_server(
    tmp_path_factory: pytest.TempPathFactory, fuzz_redis: RedisServer
) -> Iterator[Server]:
    d = tmp_path_factory.mktemp("fuzz")
    env = {
        "PATRON_BUNDLE": str(make_bundle(d / "bundle", seed=0, version="1")),
        "PATRON_REDIS_URL": fuzz_redis.url,
        "PATRON_REDIS_NAMESPACE": NS,
        "PATRON_ADMIN_API_KEY": ADMIN_KEY,
        "PATRON_ENV": "test",
        "PATRON_REDIS_TIMEOUT_MS": "500",
    }
    with serve(env, d / "server.log") as server:
        yield server
    for phase, counts in STATUS.items():
        if counts:
            ROWS.append(
                ScenarioRow(
                    f"fuzz: schemathesis, {phase}",
                    sum(counts.values()),
                    _classes(counts),
                    "generated bad input" + (", redis-server stopped" if "down" in phase else ""),
                    0,
                    notes=f"{phase}: statuses {dict(sorted(counts.items()))}",
                    passed=counts[500] == 0,
                )
            )


def _classes(counts: Counter[int]) -> dict[str, int]:
    """2xx / 4xx / 503 (documented: Redis down) / 5xx (any other server error)."""
    out: Counter[str] = Counter()
    for code, n in counts.items():
        out["503" if code == 503 else f"{code // 100}xx"] += n
    return dict(sorted(out.items()))


def no_500(ctx: Any, response: Any, case: schemathesis.Case) -> bool:
    """A 500 is a bug; a documented 503 (Redis down, retry later) is not."""
    if response.status_code == 500 or response.status_code > 503:
        raise AssertionError(f"server error {response.status_code}: {response.text[:300]}")
    return True


schema = schemathesis.openapi.from_dict(
    create_app(ServingSettings(env="dev", bundle=Path("unused"))).openapi()
)
FUZZ = settings(
    max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)


def admin_headers(case: schemathesis.Case) -> dict[str, str]:
    """The valid admin key, unless the case deliberately sends a schema-violating one."""
    sent = {k.lower(): v for k, v in (case.headers or {}).items()}
    key = sent.get("x-api-key")
    if key is not None and (not isinstance(key, str) or len(key) > 256):
        return {}
    return {"X-API-Key": ADMIN_KEY}


@schema.parametrize()
@FUZZ
def test_no_server_error_with_admin_key(case: schemathesis.Case, fuzz_server: Server) -> None:
    # "schema-valid data must be accepted" is excluded: an event for an item not in the
    # catalog is schema-valid but rightly rejected (422 per event)
    r = case.call_and_validate(
        base_url=fuzz_server.base,
        headers=admin_headers(case),
        excluded_checks=[positive_data_acceptance],
    )
    STATUS["redis up"][r.status_code] += 1


@pytest.fixture
def redis_down(fuzz_redis: RedisServer) -> Iterator[None]:
    if fuzz_redis.proc is not None:
        stop_redis(fuzz_redis)
    yield


@schema.parametrize()
@settings(max_examples=8, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_no_500_while_redis_is_down(
    case: schemathesis.Case, fuzz_server: Server, redis_down: None
) -> None:
    # 503 is the documented answer of events/profile/readyz while Redis is down
    r = case.call_and_validate(
        base_url=fuzz_server.base,
        headers=admin_headers(case),
        excluded_checks=[positive_data_acceptance, not_a_server_error],
        additional_checks=[no_500],
    )
    STATUS["redis down"][r.status_code] += 1
