"""Start from a registry alias in a real MLflow store; reload; refuse bad bundles; cache."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.services import free_port, redis_client
from tests.serving.conftest import ADMIN_KEY, NS, settings_for
from tests.serving.helpers import make_bundle

NAME = "patron-test"


def register(uri: str, bundle: Path, root: Path, alias: str = "champion") -> str:
    """Log a bundle directory as run artifacts, register it, point ``alias`` at it."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("serving-test")
    exp_id = (
        exp.experiment_id
        if exp
        else client.create_experiment("serving-test", artifact_location=(root / "art").as_uri())
    )
    run = client.create_run(exp_id)
    client.log_artifacts(run.info.run_id, str(bundle), artifact_path="bundle")
    client.set_terminated(run.info.run_id)
    if not client.search_registered_models(filter_string=f"name = '{NAME}'"):
        client.create_registered_model(NAME)
    mv = client.create_model_version(
        NAME, source=f"{run.info.artifact_uri}/bundle", run_id=run.info.run_id
    )
    client.set_registered_model_alias(NAME, alias, mv.version)
    return str(mv.version)


def test_serve_reload_and_fall_back_to_cache(
    mlflow_uri: str, tmp_path: Path, published: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    b1 = make_bundle(tmp_path / "b1", seed=0, version="train-a")
    b2 = make_bundle(tmp_path / "b2", seed=1, version="train-b")
    assert register(mlflow_uri, b1, tmp_path) == "1"
    cache = tmp_path / "cache"
    s = settings_for(
        None, published, mlflow_tracking_uri=mlflow_uri, model_name=NAME, bundle_cache_dir=cache
    )
    with TestClient(create_app(s)) as c:
        info = c.get("/v1/model").json()["champion"]
        assert info["version"] == "1" and info["alias"] == "champion"
        assert info["source"] == f"models:/{NAME}@champion"
        rec = c.get("/v1/customers/c00000/recommendations").json()
        assert rec["model_version"] == "1" and len(rec["items"]) == 10
        assert (cache / NAME / "v1" / "manifest.json").is_file()

        # a new champion: picked up by /admin/reload, previous kept in the cache
        assert register(mlflow_uri, b2, tmp_path) == "2"
        r = c.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY}).json()
        assert r["changed"] is True and r["previous_version"] == "1"
        assert r["champion_version"] == "2"
        assert c.get("/v1/customers/c00000/recommendations").json()["model_version"] == "2"

        # a tampered version is refused and version 2 keeps serving
        b3 = make_bundle(tmp_path / "b3", seed=2, version="train-c")
        (b3 / "item_factors.npy").write_bytes(
            (b3 / "item_factors.npy").read_bytes()[:-8] + b"x" * 8
        )
        register(mlflow_uri, b3, tmp_path)
        r2 = c.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
        assert r2.status_code == 409 and "checksum mismatch" in r2.json()["detail"]
        assert c.get("/v1/model").json()["champion"]["version"] == "2"
        assert not (cache / NAME / "v3").exists()

    # registry unreachable at start-up: the cached bundle of the alias serves, readiness says so
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    dead = f"http://127.0.0.1:{free_port()}"
    s2 = settings_for(
        None, published, mlflow_tracking_uri=dead, model_name=NAME, bundle_cache_dir=cache
    )
    with TestClient(create_app(s2)) as c:  # the pinned version 2 is cached: no registry needed
        assert c.get("/readyz").json() == {"ready": True, "model_version": "2", "reasons": []}
    # without a pin (the shared admin state lost), the alias's cached bundle serves
    redis_client(published).delete(f"{NS}:{{admin}}:state")
    with TestClient(create_app(s2)) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["reasons"] == ["registry unreachable; serving cached bundle version 2"]
        assert c.get("/v1/customers/c00001/recommendations").json()["model_version"] == "2"
        assert c.get("/v1/model").json()["notes"]

    # ... and with an empty cache it refuses to start, saying why
    s3 = settings_for(
        None,
        published,
        mlflow_tracking_uri=dead,
        model_name=NAME,
        bundle_cache_dir=tmp_path / "empty",
    )
    with pytest.raises(Exception, match="no cached bundle"), TestClient(create_app(s3)):
        pass


def test_challenger_alias(mlflow_uri: str, tmp_path: Path, published: str) -> None:
    register(mlflow_uri, make_bundle(tmp_path / "b1", seed=0), tmp_path, "champion")
    register(mlflow_uri, make_bundle(tmp_path / "b2", seed=1), tmp_path, "challenger")
    s = settings_for(
        None,
        published,
        mlflow_tracking_uri=mlflow_uri,
        model_name=NAME,
        bundle_cache_dir=tmp_path / "cache",
        challenger_traffic=0.5,
    )
    with TestClient(create_app(s)) as c:
        seen = {
            (b["variant"], b["model_version"])
            for b in (c.get(f"/v1/customers/c{u:05d}/recommendations").json() for u in range(30))
        }
        assert seen == {("champion", "1"), ("challenger", "2")}
