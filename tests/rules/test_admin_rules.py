"""GET/PUT /admin/rules on a minimal app: API key, atomic swap, old rules kept on error."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from serving.routes.admin_rules import router
from serving.rules.loader import DEFAULT_RULES_FILE, load_rules
from serving.settings import ServingSettings

KEY = {"X-API-Key": "s3cret-key-0123456789"}


@pytest.fixture
def client(monkeypatch: pytest.MonkeyPatch) -> TestClient:
    monkeypatch.delenv("PATRON_RULES_FILE", raising=False)
    app = FastAPI()
    # the serving package's admin dependency reads the key from the app's settings
    app.state.settings = ServingSettings(admin_api_key="s3cret-key-0123456789", env="test")  # type: ignore[call-arg]
    app.include_router(router)
    return TestClient(app)


def test_get_needs_key_and_shows_version(client: TestClient) -> None:
    assert client.get("/admin/rules").status_code == 401
    assert client.get("/admin/rules", headers={"X-API-Key": "wrong"}).status_code == 401
    res = client.get("/admin/rules", headers=KEY)
    assert res.status_code == 200
    assert res.json()["version"] == load_rules(DEFAULT_RULES_FILE).version
    assert res.json()["rules"]["diversity"]["max_per_category"] == 3


def test_put_swaps_and_bad_put_keeps_current(client: TestClient) -> None:
    data = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    data["version"] = "v2"
    data["diversity"]["max_per_category"] = 2
    res = client.put("/admin/rules", json=data, headers=KEY)
    assert res.status_code == 200, res.text
    v2 = res.json()["version"]
    assert v2.startswith("v2+")

    data["boosts"][0]["multiply"] = -1
    bad = client.put("/admin/rules", json=data, headers=KEY)
    assert bad.status_code == 422
    assert "tier_exclusives_first" in bad.json()["detail"]
    assert "multiply" in bad.json()["detail"]
    assert client.get("/admin/rules", headers=KEY).json()["version"] == v2
    assert client.put("/admin/rules", json=data).status_code == 401


def test_first_request_loads_the_settings_rule_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Without a holder from the lifespan, the rules come from ServingSettings.rules_file
    (read when the settings were made), not from the environment at request time."""
    data = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    data["version"] = "from-settings"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(data))
    app = FastAPI()
    app.state.settings = ServingSettings(  # type: ignore[call-arg]
        admin_api_key=KEY["X-API-Key"], env="test", rules_file=rules_file
    )
    app.include_router(router)
    monkeypatch.setenv("PATRON_RULES_FILE", str(tmp_path / "missing.yaml"))
    got = TestClient(app).get("/admin/rules", headers=KEY).json()
    assert got["label"] == "from-settings" and got["source"] == str(rules_file)
