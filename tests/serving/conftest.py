"""Serving fixtures: a small bundle on disk, published customers, an app with lifespan."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from patron.bundle import write_bundle
from serving.app import create_app
from serving.settings import ServingSettings
from tests.conftest import TOPOLOGIES, empty_redis
from tests.services import is_cluster_url, redis_client
from tests.serving.helpers import (
    customers_frame,
    items_frame,
    make_bundle,
    make_bundle_data,
    sync_store,
)

ADMIN_KEY = "test-admin-key-123"
NS = "patrontest"
MECHANICS_RULES = Path(__file__).with_name("rules_mechanics.yaml")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every serving test that talks to Redis runs on one node and on the test cluster
    (``single_node`` tests inject faults into the one server and run on it alone)."""
    kinds = ["node"] if metafunc.definition.get_closest_marker("single_node") else TOPOLOGIES
    if "redis_url" in metafunc.fixturenames:
        metafunc.parametrize("redis_url", kinds, indirect=True)
    if "shared_redis" in metafunc.fixturenames:
        metafunc.parametrize("shared_redis", kinds, indirect=True, scope="module")


@pytest.fixture(autouse=True)
def _mechanics_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """Serving tests check candidates and plumbing: hard filters only (see the YAML)."""
    monkeypatch.setenv("PATRON_RULES_FILE", str(MECHANICS_RULES))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle1", seed=0, version="1")


@pytest.fixture(scope="session")
def bundle2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("b") / "bundle2", seed=1, version="2")


CUSTOMERS = [
    {
        "customer_id": "c00000",
        "tier": "gold",
        "segment": "high-value",
        "churn_risk": 0.1,
        "clv_band": "high",
        "loyalty_index": 81.0,
        "marketing_consent": True,
        "next_tier": "platinum",
        "progress_to_next": 250.0,
        "typical_spend": 40.0,
    },
    {
        "customer_id": "c00001",
        "tier": "bronze",
        "segment": "regular",
        "churn_risk": 0.4,
        "clv_band": "low",
        "loyalty_index": 30.0,
        "marketing_consent": False,
        "next_tier": "silver",
        "progress_to_next": 100.0,
        "typical_spend": 20.0,
    },
]


def publish_features(redis_url: str) -> None:
    """The test customers' and items' online features, published as a new version."""
    client = redis_client(redis_url)
    sync_store(client, NS).publish(customers_frame(CUSTOMERS), items_frame(240))
    client.close()


@pytest.fixture
def published(redis_url: str) -> str:
    publish_features(redis_url)
    return redis_url


def settings_for(bundle: Path, redis_url: str, **kw: object) -> ServingSettings:
    base: dict[str, object] = {
        "bundle": bundle,
        "redis_url": redis_url,
        "redis_cluster": is_cluster_url(redis_url),
        "redis_namespace": NS,
        "admin_api_key": ADMIN_KEY,
        "env": "test",
        "redis_timeout_ms": 1_000,
        "redis_retry_s": 0.2,
    }
    base.update(kw)
    return ServingSettings(**base)  # type: ignore[arg-type]


@pytest.fixture
def client(bundle_dir: Path, published: str) -> Iterator[TestClient]:
    app = create_app(settings_for(bundle_dir, published))
    with TestClient(app) as c:
        yield c


def _live_bundle(tmp: Path) -> Path:
    live = tmp / "live"
    write_bundle(make_bundle_data(seed=0, version="1"), live)
    return live


@pytest.fixture
def live_bundle(tmp_path: Path) -> Path:
    return _live_bundle(tmp_path)


@pytest.fixture(scope="module")
def shared_live_bundle(tmp_path_factory: pytest.TempPathFactory, shared_redis: str) -> Path:
    """A bundle folder for the module's server; one per topology (tests move it to v2)."""
    return _live_bundle(tmp_path_factory.mktemp("live"))


@pytest.fixture(scope="module")
def shared_redis(request: pytest.FixtureRequest) -> str:
    """Customers published once for the module's server or cluster (tests add their own
    events)."""
    url = empty_redis(request, getattr(request, "param", "node"))
    publish_features(url)
    return url
