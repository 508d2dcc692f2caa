"""Property-based API test from the OpenAPI schema against a real uvicorn process:
no generated request may produce a server error (bounded: a few examples per operation)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from serving.app import create_app
from serving.settings import ServingSettings
from tests.services import RedisServer, redis_client
from tests.serving.conftest import CUSTOMERS, NS
from tests.serving.helpers import customers_frame, items_frame, make_bundle, sync_store
from tests.serving.test_uvicorn import _serve


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory, redis_srv: RedisServer) -> Iterator[str]:
    if redis_srv.proc is None:
        redis_srv.start()
    bundle = make_bundle(Path(tmp_path_factory.mktemp("st")) / "bundle")
    client = redis_client(redis_srv.url)
    client.flushall()
    sync_store(client, NS).publish(customers_frame(CUSTOMERS), items_frame(240))
    client.close()
    yield from _serve(bundle, redis_srv.url, 0)


# the schema the app serves (create_app has no side effects: nothing loads until lifespan)
schema = schemathesis.openapi.from_dict(
    create_app(ServingSettings(env="dev", bundle=Path("unused"))).openapi()
)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_no_server_errors(case: schemathesis.Case, base_url: str) -> None:
    # every default check except "schema-valid data must be accepted": an event for an item
    # that is not in the catalog is schema-valid but is rightly rejected (422 per event)
    case.call_and_validate(base_url=base_url, excluded_checks=[positive_data_acceptance])
