"""Shared fixtures: real redis-server per session, flushed per test; MLflow stores."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from tests.services import RedisServer, redis_server

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
def redis_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with redis_server(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_url(redis_srv: RedisServer) -> Iterator[str]:
    """URL of a real, empty redis-server (flushed before each test)."""
    import redis

    if redis_srv.proc is None:  # a test stopped it; bring it back
        redis_srv.start()
    client = redis.Redis.from_url(redis_srv.url)
    client.flushall()
    client.close()
    yield redis_srv.url


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
