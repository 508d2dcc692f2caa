"""The shared admin state (serving/admin_state.py, serving/admin_sync.py) on a real
redis-server: two apps in one process stand for two workers or replicas."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from fastapi.testclient import TestClient

from patron.redis_connect import connect_async
from serving.admin_state import AdminState, ModelPin
from serving.app import create_app
from serving.rules.loader import DEFAULT_RULES_FILE
from tests.services import RedisServer, free_port, is_cluster_url, redis_client
from tests.serving.conftest import ADMIN_KEY, NS, publish_features, settings_for

pytestmark = pytest.mark.redis
KEY = {"X-API-Key": ADMIN_KEY}
SYNC_S = 0.1


def _rules(label: str) -> dict[str, object]:
    return {**yaml.safe_load(DEFAULT_RULES_FILE.read_text()), "version": label}


def _app(bundle: Path, redis_url: str, **kw: object) -> TestClient:
    kw.setdefault("rules_file", DEFAULT_RULES_FILE)
    return TestClient(create_app(settings_for(bundle, redis_url, admin_sync_s=SYNC_S, **kw)))


def _until(cond: Callable[[], bool], timeout: float = 5.0) -> float:
    t0 = time.monotonic()
    while not cond():
        assert time.monotonic() - t0 < timeout, "not converged in time"
        time.sleep(0.01)
    return time.monotonic() - t0


def test_change_writes_once_and_logs_who_when_what(redis_url: str) -> None:
    async def run() -> None:
        client = connect_async(redis_url, is_cluster_url(redis_url))
        st = AdminState(client, NS)
        assert await st.epoch() == 0
        assert await st.change("rules", "{}", "a+1", "seed", only_if_absent=True) == 1
        assert await st.change("rules", "{}", "b+2", "seed", only_if_absent=True) == 0
        assert await st.change("rules", "{}", "a+1", "ops") == 0  # unchanged: nothing written
        assert await st.change("rules", '{"x": 1}', "b+2", "ops", previous="a+1") == 2
        pin = ModelPin("3", "f3")
        assert await st.change("model", pin.to_json(), pin.key, "ops") == 3
        snap = await st.read()
        assert snap.epoch == 3 and snap.rules == {"x": 1} and snap.model == pin
        assert snap.rules_stamp is not None and snap.rules_stamp.by == "ops"
        log = await st.changes()
        assert [(c["what"], c["version"], c["epoch"]) for c in log] == [
            ("model", pin.key, 3),
            ("rules", "b+2", 2),
            ("rules", "a+1", 1),
        ]
        assert log[1]["previous"] == "a+1" and log[1]["at"].endswith("+00:00")
        assert ":" in log[1]["worker"]
        await client.aclose()

    asyncio.run(run())


def test_put_rules_reaches_the_other_worker_and_survives_a_restart(
    bundle_dir: Path, published: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="patron.serving")
    with _app(bundle_dir, published) as a, _app(bundle_dir, published) as b:
        start = a.get("/admin/rules", headers=KEY).json()
        assert b.get("/admin/rules", headers=KEY).json() == start
        res = a.put(
            "/admin/rules", json=_rules("shared-2"), headers={**KEY, "X-Admin-Actor": "ops"}
        )
        assert res.status_code == 200, res.text
        new = res.json()
        took = _until(
            lambda: b.get("/admin/rules", headers=KEY).json()["version"] == new["version"]
        )
        assert took < SYNC_S + 1.0
        assert b.get("/admin/rules", headers=KEY).json() == new  # source and content alike
        assert "set by ops at" in new["source"]
        state = b.get("/admin/state", headers=KEY).json()
        assert state["rules_version"] == new["version"]
        assert state["worker_epoch"] == state["shared_epoch"]
        assert (
            state["changes"][0]["by"] == "ops" and state["changes"][0]["version"] == new["version"]
        )
        assert any(
            m.startswith(f"rules {start['version']} -> {new['version']} (set by ops")
            for m in caplog.messages
        )
    # a restarted worker serves the shared rules, not its rules file, and says so
    caplog.clear()
    with _app(bundle_dir, published) as c:
        assert c.get("/admin/rules", headers=KEY).json() == new
        assert any(
            m.startswith(f"the rules file {DEFAULT_RULES_FILE} ({start['version']}) differs")
            for m in caplog.messages
        )
        got = c.get("/v1/customers/c00000/recommendations").json()
        assert got["rules_version"] == new["version"]


def test_a_bad_actor_header_and_a_bad_rule_set_change_nothing(
    bundle_dir: Path, published: str
) -> None:
    with _app(bundle_dir, published) as a:
        before = a.get("/admin/state", headers=KEY).json()
        bad = a.put("/admin/rules", json=_rules("x"), headers={**KEY, "X-Admin-Actor": "a b"})
        assert bad.status_code == 422
        broken = {**_rules("x"), "diversity": {"max_per_category": -1}}
        assert a.put("/admin/rules", json=broken, headers=KEY).status_code == 422
        after = a.get("/admin/state", headers=KEY).json()
        assert after["shared_epoch"] == before["shared_epoch"]
        assert after["rules_version"] == before["rules_version"]


def test_redis_unreachable_refuses_changes_and_keeps_serving(bundle_dir: Path) -> None:
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with _app(bundle_dir, dead, redis_timeout_ms=100) as a:
        before = a.get("/admin/rules", headers=KEY).json()["version"]
        res = a.put("/admin/rules", json=_rules("never"), headers=KEY)
        assert res.status_code == 503
        assert "shared admin state unreachable" in res.json()["detail"]
        assert a.get("/admin/rules", headers=KEY).json()["version"] == before
        assert a.post("/admin/reload", headers=KEY).status_code == 503
        assert a.get("/v1/customers/c00000/recommendations").status_code == 200
        assert a.get("/admin/state", headers=KEY).json()["shared_epoch"] is None


def test_a_worker_started_while_redis_was_down_adopts_the_state_when_it_is_back(
    bundle_dir: Path, tmp_path: Path
) -> None:
    srv = RedisServer(port=free_port(), workdir=tmp_path)  # not started yet
    try:
        with _app(bundle_dir, srv.url, redis_timeout_ms=100) as b:
            assert b.get("/admin/state", headers=KEY).json()["shared_epoch"] is None
            srv.start()
            publish_features(srv.url)
            with _app(bundle_dir, srv.url) as a:  # seeds the state, then changes it
                new = a.put("/admin/rules", json=_rules("later"), headers=KEY).json()
            _until(lambda: b.get("/admin/rules", headers=KEY).json()["version"] == new["version"])
            state = b.get("/admin/state", headers=KEY).json()
            assert state["worker_epoch"] == state["shared_epoch"] == 3  # seeds: rules, model; PUT
    finally:
        srv.stop()


def test_rules_the_model_cannot_serve_are_refused_by_the_adopting_worker(
    bundle_dir: Path, published: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Rules written by another release (here: straight into redis) that this worker cannot
    parse are refused with one ERROR line, and its current rules stay."""
    with _app(bundle_dir, published) as a:
        before = a.get("/admin/rules", headers=KEY).json()["version"]
        r = redis_client(published)
        key = f"{NS}:{{admin}}:state"
        r.hset(
            key, mapping={"rules": '{"version": "future", "new_kind": 1}', "rules_version": "f+1"}
        )
        r.hincrby(key, "epoch", 1)
        time.sleep(SYNC_S * 5)
        assert a.get("/admin/rules", headers=KEY).json()["version"] == before
        errors = [m for m in caplog.messages if m.startswith("shared rules f+1 refused here")]
        assert len(errors) == 1


# single node only for now: its cluster case hung once in a CI run on 2026-12-03 (600 s
# timeout; not understood yet, see the closing note of that day)
@pytest.mark.single_node
def test_reload_pins_the_version_for_every_worker_and_restarts(
    tmp_path: Path, published: str, mlflow_uri: str
) -> None:
    from tests.serving.helpers import make_bundle
    from tests.serving.test_registry import NAME, register

    def version(c: TestClient) -> str:
        return str(c.get("/v1/model").json()["champion"]["version"])

    kw = {"mlflow_tracking_uri": mlflow_uri, "model_name": NAME}
    kw["bundle_cache_dir"] = tmp_path / "cache"
    register(mlflow_uri, make_bundle(tmp_path / "b1", seed=0, version="t1"), tmp_path)
    with _app(None, published, **kw) as a, _app(None, published, **kw) as b:  # type: ignore[arg-type]
        assert version(a) == version(b) == "1"
        register(mlflow_uri, make_bundle(tmp_path / "b2", seed=1, version="t2"), tmp_path)
        assert version(b) == "1"  # the alias moved; nothing is served before a reload
        res = a.post("/admin/reload", headers={**KEY, "X-Admin-Actor": "release-7"}).json()
        assert res["champion_version"] == "2"
        took = _until(lambda: version(b) == "2")
        assert took < SYNC_S + 2.0
        assert b.get("/v1/customers/c00000/recommendations").json()["model_version"] == "2"
        change = b.get("/admin/state", headers=KEY).json()["changes"][0]
        assert change["what"] == "model" and change["by"] == "release-7"
        # the alias moves again: a worker starting now serves the pinned version, like the others
        register(mlflow_uri, make_bundle(tmp_path / "b3", seed=2, version="t3"), tmp_path)
        with _app(None, published, **kw) as c:  # type: ignore[arg-type]
            assert version(c) == "2"
            assert c.post("/admin/reload", headers=KEY).json()["champion_version"] == "3"
            _until(lambda: version(a) == version(b) == "3")
