"""Bodies a JSON parser takes but JSON forbids (bare NaN, Infinity), and bodies that are not
JSON: a 4xx with a message, never a 500, and neither the answer nor the log repeats what was
sent (issue: hardening, item 5)."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import pytest
import yaml
from fastapi.testclient import TestClient

from serving.rules.loader import DEFAULT_RULES_FILE
from tests.serving.conftest import ADMIN_KEY

SECRET = "jane.doe@example.com"  # stands for anything personal a client might send
JSON = {"content-type": "application/json"}


def _event(quantity: str) -> str:
    now = datetime.now(UTC).isoformat()
    return (
        f'{{"events": [{{"customer_id": "c00001", "item_id": "i0001", "ts": "{now}", '
        f'"quantity": {quantity}, "note": "{SECRET}"}}]}}'
    )


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("post", "/v1/recommendations/batch", '{"customer_ids": ["c00001"], "k": NaN}'),
        ("post", "/v1/recommendations/batch", f'{{"customer_ids": "{SECRET}", "k": Infinity}}'),
        ("post", "/v1/recommendations/batch", '{"customer_ids": [NaN, -Infinity]}'),
        ("post", "/v1/events", _event("NaN")),
        ("post", "/v1/events", _event("Infinity")),
        ("post", "/v1/events", f'{{"events": NaN, "x": "{SECRET}"}}'),
    ],
)
def test_nan_and_infinity_are_a_422_that_repeats_nothing(
    client: TestClient, caplog: pytest.LogCaptureFixture, method: str, path: str, body: str
) -> None:
    caplog.set_level(logging.DEBUG)
    r = getattr(client, method)(path, content=body, headers=JSON)
    assert r.status_code == 422, r.text
    assert SECRET not in r.text and "NaN" not in r.text and "Infinity" not in r.text
    body = r.json()
    if "results" in body:  # the events' own report: the event refused, with the field
        assert body["accepted"] == 0 and body["rejected"] == 1
        (error,) = body["results"][0]["errors"][:1]
        assert error.startswith(("quantity", "note")), error
    else:  # FastAPI's shape: where and what, not the value
        assert body["detail"] and all(set(e) == {"type", "loc", "msg"} for e in body["detail"])
    assert SECRET not in caplog.text


def test_nan_in_a_rule_set_is_refused(client: TestClient) -> None:
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    before = client.get("/admin/rules", headers={"X-API-Key": ADMIN_KEY}).json()["version"]
    for path in (("boosts", 0, "multiply"), ("boosts", 5, "when", "churn_risk_at_least")):
        broken = json.loads(json.dumps(rules))
        node = broken
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = float("nan")
        body = json.dumps({**broken, "version": "nan-test"})  # json.dumps writes a bare NaN
        r = client.put("/admin/rules", content=body, headers={**JSON, "X-API-Key": ADMIN_KEY})
        assert r.status_code == 422, (path, r.text)
    after = client.get("/admin/rules", headers={"X-API-Key": ADMIN_KEY})
    assert after.status_code == 200 and after.json()["version"] == before


def test_a_body_that_is_not_json_is_a_400(client: TestClient) -> None:
    for path in ("/v1/events", "/v1/recommendations/batch"):
        r = client.post(path, content=b"not json {", headers=JSON)
        assert r.status_code == 400, r.text
        assert r.json() == {"detail": "the body is not valid JSON"}
