"""Shared fixtures: real redis-server per session, flushed per test; MLflow stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tests.services import RedisClusterServers, RedisServer, flush, redis_cluster, redis_server

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    return Path(os.environ.get("PATRON_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = shared_data_dir()
    if not (d / "ml-100k" / "ml-100k.inter").is_file():
        pytest.skip(f"shared data not found under {d} (set PATRON_DATA_DIR)")
    return d


@pytest.fixture(scope="session")
def cdnow_sample() -> Path:
    p = shared_data_dir() / "cdnow" / "CDNOW_sample.txt"
    if not p.is_file():
        pytest.skip(f"CDNOW sample not found at {p}")
    return p


@pytest.fixture(scope="session")
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture(scope="session")
def redis_cluster_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServers]:
    """A real 3-primary, 3-replica Redis Cluster for the session (started on first use)."""
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as cluster:
        yield cluster


# Tests of the online store and of serving run on both topologies: a module sets
# ``pytestmark = BOTH_TOPOLOGIES`` or a conftest parametrizes ``redis_url`` with TOPOLOGIES.
TOPOLOGIES = ("node", "cluster")
BOTH_TOPOLOGIES = pytest.mark.parametrize("redis_url", TOPOLOGIES, indirect=True)


def empty_redis(request: pytest.FixtureRequest, topology: str) -> str:
    """URL of the session's server (``node``) or cluster (``cluster``), emptied."""
    if topology == "cluster":
        url = request.getfixturevalue("redis_cluster_srv").url
    else:
        srv: RedisServer = request.getfixturevalue("redis_srv")
        if srv.proc is None:  # a test stopped it; bring it back
            srv.start()
        url = srv.url
    flush(url)
    return url


@pytest.fixture
def redis_url(request: pytest.FixtureRequest) -> str:
    """URL of a real, empty redis-server (flushed before each test), or of the real test
    cluster when parametrized with "cluster" (tests connect with tests.services.redis_client
    and pass tests.services.redis_env to processes)."""
    return empty_redis(request, getattr(request, "param", "node"))


@pytest.fixture
def mlflow_uri(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real, empty local MLflow store (SQLite + local artifacts) for this test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("PATRON_MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PATRON_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    from patron.settings import get_settings

    get_settings.cache_clear()
    return uri


@pytest.fixture(autouse=True)
def _fresh_settings() -> Iterator[None]:
    from patron.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
