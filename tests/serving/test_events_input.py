"""POST /v1/events with implausible or repeated input (issue: hardening, item 3), against a
real redis-server: out-of-range events are refused one by one and write nothing; a retried
event (same ``event_id``) is applied once; ``order_id`` and ``channel`` are taken."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from tests.services import redis_client
from tests.serving.conftest import NS

NOW = datetime.now(UTC)


def _event(**kw: object) -> dict[str, object]:
    return {"customer_id": "c00005", "item_id": "i0003", "ts": NOW.isoformat(), **kw}


def _realtime_keys(redis_url: str) -> list[bytes]:
    r = redis_client(redis_url)
    try:
        return sorted(r.scan_iter(match=f"{NS}:rt:*"))
    finally:
        r.close()


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_event(quantity=1e200, unit_price=1e200), "quantity"),
        (_event(quantity=10_001), "quantity"),
        (_event(quantity=-10_001, type="return"), "quantity"),
        (_event(unit_price=1_000_001), "unit_price"),
        (_event(ts="0001-01-01T00:00:00Z"), "ts"),
        (_event(ts=(NOW - timedelta(days=91)).isoformat()), "ts"),
        (_event(ts=timedelta(minutes=10)), "ts"),  # ahead of the test's clock (see below)
        (_event(event_id="not an id!"), "event_id"),
        (_event(channel="x" * 33), "channel"),
    ],
)
def test_an_implausible_event_is_refused_and_writes_nothing(
    client: TestClient, published: str, event: dict[str, object], field: str
) -> None:
    if isinstance(event["ts"], timedelta):  # relative to the test's clock, not import time
        event = {**event, "ts": (datetime.now(UTC) + event["ts"]).isoformat()}
    before = _realtime_keys(published)
    r = client.post("/v1/events", json={"events": [event]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["accepted"] == 0 and body["rejected"] == 1
    assert body["results"][0]["errors"][0].startswith(field), body
    assert _realtime_keys(published) == before
    # the service is fine afterwards: nothing degraded, Redis not judged down
    rec = client.get("/v1/customers/c00005/recommendations")
    assert rec.status_code == 200 and rec.json()["degraded"] is False


def test_the_age_limit_is_a_setting(bundle_dir, published: str) -> None:
    from serving.app import create_app
    from tests.serving.conftest import settings_for

    old = _event(ts=(NOW - timedelta(days=20)).isoformat())
    with TestClient(create_app(settings_for(bundle_dir, published, event_max_age_days=10))) as c:
        r = c.post("/v1/events", json={"events": [old]})
        assert r.status_code == 422 and "older than 10 days" in r.text
        assert c.post("/v1/events", json={"events": [_event()]}).status_code == 200


def test_an_empty_event_list_is_refused(client: TestClient) -> None:
    r = client.post("/v1/events", json={"events": []})
    assert r.status_code == 422
    assert "events" in r.text


def test_a_retried_event_is_applied_once(client: TestClient, published: str) -> None:
    ev = _event(customer_id="c00006", quantity=2, unit_price=10.0, event_id="pos-1:order-7:1")
    first = client.post("/v1/events", json={"events": [ev]}).json()
    again = client.post("/v1/events", json={"events": [ev]}).json()
    assert (first["accepted"], first["replayed"]) == (1, 0)
    assert (again["accepted"], again["replayed"]) == (1, 1)
    spend = client.get("/v1/customers/c00006/profile").json()["spend_since_build"]
    assert spend == pytest.approx(20.0)  # once, not twice
    other = client.post("/v1/events", json={"events": [{**ev, "event_id": "pos-1:order-7:2"}]})
    assert other.json()["replayed"] == 0
    assert client.get("/v1/customers/c00006/profile").json()["spend_since_build"] == (
        pytest.approx(40.0)
    )


def test_order_id_and_channel_are_taken(client: TestClient) -> None:
    ev = _event(customer_id="c00007", order_id="o-123", channel="web")
    r = client.post("/v1/events", json={"events": [ev]})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 1
