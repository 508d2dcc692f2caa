"""A/B assignment, degraded mode (Redis stopped and restarted), settings refusal."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from patron.bundle import load_bundle
from serving.ab import assign_variant, bucket
from serving.app import create_app
from serving.rules.loader import DEFAULT_RULES_FILE, load_rules
from serving.settings import ServingSettings
from tests.services import RedisServer
from tests.serving.conftest import ADMIN_KEY, publish_features, settings_for
from tests.serving.helpers import customer_id, item_id


def test_ab_split_is_stable_and_serves_the_challenger(
    bundle_dir: Path, bundle2_dir: Path, published: str
) -> None:
    s = settings_for(bundle_dir, published, challenger_bundle=bundle2_dir, challenger_traffic=0.3)
    app = create_app(s)
    cids = [customer_id(u) for u in range(150)] + [f"anon{u}" for u in range(50)]
    with TestClient(app) as c:
        seen: dict[str, str] = {}
        for cid in cids:
            body = c.get(f"/v1/customers/{cid}/recommendations", params={"k": 3}).json()
            assert body["variant"] == assign_variant(cid, 0.3)
            assert body["model_version"] == ("2" if body["variant"] == "challenger" else "1")
            seen[cid] = body["variant"]
        for cid in cids[:40]:  # asking again never flips a customer
            assert c.get(f"/v1/customers/{cid}/recommendations").json()["variant"] == seen[cid]
        share = sum(v == "challenger" for v in seen.values()) / len(seen)
        assert 0.18 < share < 0.42, share
        info = c.get("/v1/model").json()
        assert info["challenger"]["version"] == "2" and info["challenger_traffic"] == 0.3
        metrics = c.get("/metrics").text
        assert 'patron_variant_total{variant="challenger"}' in metrics


def test_assignment_does_not_depend_on_the_process() -> None:
    """Python's hash() is salted per process; the A/B bucket must not be."""
    code = (
        "from serving.ab import bucket; "
        "print(','.join(f'{bucket(f\"c{i}\"):.12f}' for i in range(20)))"
    )
    env = {**os.environ, "PYTHONHASHSEED": "random", "PYTHONPATH": str(Path.cwd())}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert out == ",".join(f"{bucket(f'c{i}'):.12f}" for i in range(20))


@pytest.mark.single_node
def test_degraded_when_redis_stops_and_recovers(
    bundle_dir: Path, published: str, redis_srv: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    data = load_bundle(bundle_dir)
    app = create_app(settings_for(bundle_dir, published))
    caplog.set_level(logging.INFO, logger="patron.serving")

    def store_log() -> list[str]:
        return [m for m in caplog.messages if m.startswith("online store")]

    with TestClient(app) as c:
        gateway = app.state.gateway
        ok = c.get("/v1/customers/c00000/recommendations").json()
        assert ok["degraded"] is False and ok["tier"] == "gold"
        assert gateway.last_error is None and store_log() == []
        redis_srv.stop()
        try:
            r = c.get("/v1/customers/c00000/recommendations", params={"k": 20})
            assert r.status_code == 200
            body = r.json()
            assert body["degraded"] is True and body["tier"] == "bronze"  # default tier
            ui = data.user_items
            bought = {item_id(j) for j in ui.indices[ui.indptr[0] : ui.indptr[1]]}
            assert len(body["items"]) == 20 and not bought & {i["item_id"] for i in body["items"]}
            # the answer came from a failed Redis call that opened the breaker (requests then
            # skip Redis for redis_retry_s instead of each waiting on a dead server)
            assert gateway.last_error is not None
            assert gateway.last_error.startswith("redis unreachable")
            assert store_log()[0].startswith("online store unavailable")
            # while down: fast answers, still 200; other endpoints say why
            for _ in range(5):
                assert c.get("/v1/customers/c00007/recommendations").json()["degraded"] is True
            batch = c.post("/v1/recommendations/batch", json={"customer_ids": ["c00001"]}).json()
            assert batch["results"][0]["degraded"] is True
            sim = c.get("/v1/items/i0004/similar", params={"customer_id": "c00000"}).json()
            assert sim["degraded"] is True
            rz = c.get("/readyz")
            assert rz.status_code == 503 and "redis unreachable" in rz.json()["reasons"][0]
            assert c.get("/v1/customers/c00000/profile").status_code == 503
            now = datetime.now(UTC).isoformat()
            ev = {"customer_id": "c00000", "item_id": "i0001", "ts": now}
            r = c.post("/v1/events", json={"events": [ev]})
            assert r.status_code == 503 and "not recorded" in r.json()["detail"]
            assert c.get("/healthz").status_code == 200
            assert 'patron_degraded_total{route="recommendations"}' in c.get("/metrics").text
        finally:
            redis_srv.start()
        # back, but empty (the test server keeps nothing on disk): reachable again, yet
        # with no published features every answer stays degraded and /readyz says why,
        # instead of serving every customer as an unknown bronze one
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and gateway.last_error is not None:
            c.get("/v1/customers/c00000/recommendations")
            time.sleep(0.1)
        assert gateway.last_error is None
        body = c.get("/v1/customers/c00000/recommendations").json()
        assert body["degraded"] is True and body["tier"] == "bronze"
        rz = c.get("/readyz")
        assert rz.status_code == 503
        assert rz.json()["reasons"] == ["online store has no published feature version"]
        prof = c.get("/v1/customers/c00000/profile")
        assert prof.status_code == 503 and "no published feature version" in prof.text
        publish_features(published)
        body = c.get("/v1/customers/c00000/recommendations").json()
        assert body["degraded"] is False and body["tier"] == "gold"
        assert c.get("/readyz").status_code == 200
        # the log tells the story in order: unavailable, reachable, unpublished, published
        events = store_log()
        assert events[0].startswith("online store unavailable")
        assert events[1:] == [
            "online store reachable again",
            "online store has no published feature version; answering degraded",
            "online store has a published feature version again",
        ]


def test_refuses_admin_routes_without_key(bundle_dir: Path) -> None:
    with pytest.raises(ValidationError, match="PATRON_ADMIN_API_KEY"):
        ServingSettings(bundle=bundle_dir, env="prod", admin_api_key=None)
    ServingSettings(bundle=bundle_dir, env="dev", admin_api_key=None)  # dev may
    ServingSettings(bundle=bundle_dir, env="prod", admin_routes=False)  # or no admin routes
    with pytest.raises(ValidationError, match="needs PATRON_BUNDLE"):
        ServingSettings(challenger_bundle=bundle_dir, env="dev")


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, bundle_dir: Path) -> None:
    from serving.settings import get_serving_settings

    monkeypatch.setenv("PATRON_BUNDLE", str(bundle_dir))
    monkeypatch.setenv("PATRON_ADMIN_API_KEY", "k" * 12)
    monkeypatch.setenv("PATRON_CHALLENGER_TRAFFIC", "0.1")
    monkeypatch.setenv("PATRON_REDIS_TIMEOUT_MS", "25")
    monkeypatch.setenv("PATRON_RULES_FILE", str(bundle_dir / "rules.yaml"))
    get_serving_settings.cache_clear()
    s = get_serving_settings()
    assert s.bundle == bundle_dir and s.challenger_traffic == 0.1 and s.redis_timeout_ms == 25
    assert s.rules_file == s.rules_path() == bundle_dir / "rules.yaml"
    monkeypatch.delenv("PATRON_RULES_FILE")
    assert ServingSettings(bundle=bundle_dir, env="dev").rules_path() == DEFAULT_RULES_FILE
    monkeypatch.setenv("PATRON_CHALLENGER_TRAFFIC", "1.5")
    get_serving_settings.cache_clear()
    with pytest.raises(ValidationError):
        get_serving_settings()
    get_serving_settings.cache_clear()


def test_rules_come_from_the_settings(bundle_dir: Path, published: str) -> None:
    """The app seeds the shared admin state from the settings' rule file, not from whatever
    PATRON_RULES_FILE says by then (the serving conftest points it at the mechanics rules)."""
    assert os.environ["PATRON_RULES_FILE"] != str(DEFAULT_RULES_FILE)
    s = settings_for(bundle_dir, published, rules_file=DEFAULT_RULES_FILE)
    with TestClient(create_app(s)) as c:
        got = c.get("/admin/rules", headers={"X-API-Key": ADMIN_KEY}).json()
    assert got["source"].startswith(f"shared admin state (set by start from {DEFAULT_RULES_FILE} ")
    assert got["version"] == load_rules(DEFAULT_RULES_FILE).version


def test_unknown_variant_share_zero(bundle_dir: Path, published: str) -> None:
    """Traffic set but no challenger model: everyone is served by the champion."""
    s = settings_for(bundle_dir, published, challenger_traffic=0.5)
    with TestClient(create_app(s)) as c:
        variants = {
            c.get(f"/v1/customers/{customer_id(u)}/recommendations").json()["variant"]
            for u in range(20)
        }
        assert variants == {"champion"}
