"""The events and profile endpoints through the app (real redis-server): recording,
exclusion of what was just bought, per-event validation, the size cap, spend to next tier."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl
from fastapi.testclient import TestClient

from serving.app import create_app
from tests.services import is_cluster_url
from tests.serving.conftest import settings_for
from tests.serving.helpers import item_id
from tests.serving.test_api import ids


def test_events_then_exclusion_for_known_customer(client: TestClient) -> None:
    first = ids(client.get("/v1/customers/c00003/recommendations").json())[0]
    r = client.post(
        "/v1/events",
        json={
            "events": [
                {"customer_id": "c00003", "item_id": first, "ts": datetime.now(UTC).isoformat()}
            ]
        },
    )
    assert r.status_code == 200
    after = ids(client.get("/v1/customers/c00003/recommendations").json())
    assert first not in after


def test_events_partial_validation(client: TestClient) -> None:
    now = datetime.now(UTC).isoformat()
    evs = [
        {"customer_id": "c00004", "item_id": "i0001", "ts": now},
        {"customer_id": "c00004", "item_id": "i9999", "ts": now},  # unknown item
        {"customer_id": "bad id!", "item_id": "i0001", "ts": now},  # malformed id
        {"customer_id": "c00004", "item_id": "i0001", "ts": now, "quantity": -1},  # neg purchase
        {"customer_id": "c00004", "item_id": "i0001", "ts": "2999-01-01T00:00:00Z"},  # future
        {"customer_id": "c00004", "item_id": "i0001"},  # no ts
    ]
    r = client.post("/v1/events", json={"events": evs})
    assert r.status_code == 422
    body = r.json()
    assert body["accepted"] == 1 and body["rejected"] == 5
    assert [x["accepted"] for x in body["results"]] == [True] + [False] * 5
    assert "not in the catalog" in body["results"][1]["errors"][0]
    # the valid one was applied
    got = ids(client.get("/v1/customers/c00004/recommendations", params={"k": 100}).json())
    assert "i0001" not in got
    assert client.post("/v1/events", json={"events": [evs[0]] * 1001}).status_code == 422


def test_events_capped_by_max_events_setting(bundle_dir, published) -> None:
    """PATRON_MAX_EVENTS: a longer request is refused whole (422, nothing recorded)."""

    def ev(j: int) -> dict[str, object]:
        ts = datetime.now(UTC).isoformat()
        return {"customer_id": "c00001", "item_id": item_id(j), "ts": ts, "unit_price": 10.0}

    with TestClient(create_app(settings_for(bundle_dir, published, max_events=2))) as c:
        r = c.post("/v1/events", json={"events": [ev(1), ev(2), ev(3)]})
        assert r.status_code == 422
        assert r.json() == {"detail": "events: at most 2 per request"}
        assert c.get("/v1/customers/c00001/profile").json()["spend_since_build"] == 0.0
        r = c.post("/v1/events", json={"events": [ev(1), ev(2)]})
        assert r.status_code == 200 and r.json()["accepted"] == 2
        assert c.get("/v1/customers/c00001/profile").json()["spend_since_build"] == 20.0


def test_profile_moves_with_spend(client: TestClient) -> None:
    p = client.get("/v1/customers/c00001/profile").json()
    assert p["known"] is True and p["tier"] == "bronze" and p["next_tier"] == "silver"
    assert p["spend_to_next_tier"] == 100.0 and p["segment"] == "regular"
    assert p["clv_band"] == "low" and p["churn_risk"] == 0.4 and p["loyalty_index"] == 30.0
    ev = {
        "customer_id": "c00001",
        "item_id": "i0001",
        "ts": datetime.now(UTC).isoformat(),
        "quantity": 2,
        "unit_price": 15.0,
    }
    assert client.post("/v1/events", json={"events": [ev]}).status_code == 200
    p = client.get("/v1/customers/c00001/profile").json()
    assert p["spend_since_build"] == 30.0 and p["spend_to_next_tier"] == 70.0
    unknown = client.get("/v1/customers/nobody/profile").json()
    assert unknown["known"] is False and unknown["tier"] == "bronze"


def test_events_use_batch_validator_rules(client: TestClient) -> None:
    """Same rules as features.validation: duplicates in one request, returns made negative."""
    ts = datetime.now(UTC).isoformat()
    buy = {"customer_id": "c00001", "item_id": "i0009", "ts": ts, "quantity": 2, "unit_price": 5.0}
    ret = {**buy, "type": "return", "quantity": 1}
    r = client.post("/v1/events", json={"events": [buy, buy, ret]})
    assert r.status_code == 422
    res = r.json()["results"]
    assert [x["accepted"] for x in res] == [True, False, True]
    assert "duplicate" in res[1]["errors"][0]
    # spend since the build: +10 for the purchase, -5 for the return
    assert client.get("/v1/customers/c00001/profile").json()["spend_since_build"] == 5.0


def test_events_wait_for_replicas_when_asked(bundle_dir, published) -> None:
    """PATRON_EVENTS_REPLICAS: 200 only once that many replicas have the events; else 503
    with what was confirmed, the events applied on the primary (a retry with the same ids is
    replayed), and no breaker opened (reads are not degraded)."""
    have = 1 if is_cluster_url(published) else 0  # the test cluster: one replica per primary
    ts = datetime.now(UTC).isoformat()

    def ev(i: int) -> dict[str, object]:
        return {"customer_id": "c00002", "item_id": item_id(i), "ts": ts, "unit_price": 1.0}

    settings = settings_for(bundle_dir, published, events_replicas=have + 1, events_wait_ms=50)
    with TestClient(create_app(settings)) as c:
        r = c.post("/v1/events", json={"events": [{**ev(1), "event_id": "w1"}]})
        assert r.status_code == 503
        assert f"confirmed by {have} of {have + 1} replicas" in r.json()["detail"]
        assert c.get("/v1/customers/c00002/profile").json()["spend_since_build"] == 1.0
        rec = c.get("/v1/customers/c00002/recommendations")
        assert rec.status_code == 200 and rec.json()["degraded"] is False
        again = c.post("/v1/events", json={"events": [{**ev(1), "event_id": "w1"}]})
        assert again.status_code == 503  # still unconfirmed; applied once all the same
        assert c.get("/v1/customers/c00002/profile").json()["spend_since_build"] == 1.0
    if have:
        settings = settings_for(bundle_dir, published, events_replicas=have, events_wait_ms=2_000)
        with TestClient(create_app(settings)) as c:
            r = c.post("/v1/events", json={"events": [ev(2), ev(3)]})
            assert r.status_code == 200 and r.json()["accepted"] == 2


def test_profile_shows_the_clv_interval_when_the_features_carry_one(bundle_dir, redis_url) -> None:
    """Features built with --clv-intervals publish clv_low/clv_high; /profile shows them
    beside the band (null when the features carry none)."""
    from features.online import OnlineStore
    from tests.services import redis_client
    from tests.serving.conftest import CUSTOMERS, NS
    from tests.serving.helpers import customers_frame, items_frame

    frame = customers_frame(CUSTOMERS)
    with_bounds = frame.with_columns(
        clv_low=pl.when(pl.col("customer_id") == "c00001").then(12.346).otherwise(None),
        clv_high=pl.when(pl.col("customer_id") == "c00001").then(20.0).otherwise(None),
    )
    client = redis_client(redis_url)
    OnlineStore(client, NS).publish(with_bounds, items_frame(240))
    client.close()
    with TestClient(create_app(settings_for(bundle_dir, redis_url))) as c:
        p = c.get("/v1/customers/c00001/profile").json()
        assert (p["clv_low"], p["clv_high"], p["clv_band"]) == (12.35, 20.0, "low")
        other = c.get("/v1/customers/c00002/profile").json()
        assert other["clv_low"] is None and other["clv_high"] is None
