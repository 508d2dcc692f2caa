"""Attribution on a real Redis (one node and the test cluster): answers' records, outcomes
counted once per answer and variant, the API's ids, events, /admin/experiments, /metrics."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.attribution.ids import BUCKET_S, bucket_of, experiment_of, is_id, new_id, shard_of
from serving.attribution.store import AnswerRecord, AttributionStore, Outcome, customer_hash
from tests.services import redis_client
from tests.serving.conftest import ADMIN_KEY, NS

WINDOW_S = 7 * 86_400


@pytest.fixture
def store(redis_url: str) -> Iterator[AttributionStore]:
    client = redis_client(redis_url)
    yield AttributionStore(client, NS, window_s=WINDOW_S)
    client.close()


def test_each_outcome_counts_once_for_its_answer(store: AttributionStore) -> None:
    now = time.time()
    exp = experiment_of("3", "4")
    a = AnswerRecord(new_id(now), now, exp, "champion", "3", "r1", "c1", ["i1", "i2"])
    b = AnswerRecord(new_id(now), now, exp, "challenger", "4", "r1", "c2", ["i7"])
    store.write_answers_sync([a, b])
    assert store.record_sync(a.rec_id) == {
        "t": int(now),
        "e": exp,
        "v": "champion",
        "m": "3",
        "r": "r1",
        "c": customer_hash("c1"),
        "i": ["i1", "i2"],
    }
    bucket = f"{store.tags[shard_of(a.rec_id)]}:a:{bucket_of(a.rec_id)}"
    assert WINDOW_S < store.r.ttl(bucket) <= WINDOW_S + 86_400 + BUCKET_S
    late = now + WINDOW_S + 3_600
    outcomes = [
        Outcome(a.rec_id, "impression", "c1", None, now),
        Outcome(a.rec_id, "impression", "c1", "i2", now),  # the same answer shown again
        Outcome(a.rec_id, "click", "c1", "i2", now),
        Outcome(a.rec_id, "click", "c1", "i9", now),  # not in the answer
        Outcome(a.rec_id, "purchase", "c2", "i1", now, 10.0),  # another customer
        Outcome(a.rec_id, "purchase", "c1", "i1", late, 10.0),  # after the window
        Outcome(a.rec_id, "purchase", "c1", "i1", now + 60, 30.0, "e1"),
        Outcome(a.rec_id, "purchase", "c1", "i1", now + 60, 30.0, "e1"),  # a retry
        Outcome(a.rec_id, "purchase", "c1", "i2", now + 90, 5.0, "e2"),
        Outcome(b.rec_id, "impression", "c2", None, now),
        Outcome(new_id(now), "click", "c1", "i1", now),  # never served
    ]
    got = [r[0] for r in store.record_outcomes_sync(outcomes)]
    assert got == [
        "attributed",
        "repeated",
        "attributed",
        "not_recommended",
        "other_customer",
        "outside_window",
        "attributed",
        "repeated",
        "attributed",
        "attributed",
        "unknown_recommendation",
    ]
    today = time.strftime("%Y%m%d", time.gmtime(now))
    totals = store.totals_sync([today])
    champ, chall = totals.counts[exp]["champion"], totals.counts[exp]["challenger"]
    assert champ["answers"] == 1 and chall["answers"] == 1
    assert (champ["impressions"], champ["clicks"], champ["clicked"]) == (1, 1, 1)
    assert (champ["purchases"], champ["converted"], champ["revenue"]) == (2, 1, 35.0)
    assert (chall["impressions"], chall["converted"]) == (1, 0)
    assert totals.revenues[exp]["champion"] == [35.0]  # one converted answer, its revenue
    assert totals.days[exp] == {today}


@pytest.fixture
def api(bundle_dir: Any, published: str) -> Iterator[TestClient]:
    from serving.app import create_app
    from tests.serving.conftest import settings_for

    app = create_app(settings_for(bundle_dir, published, ab_flush_ms=10))
    with TestClient(app) as c:
        yield c


def _flushed() -> None:
    time.sleep(0.2)  # the recorder writes every 10 ms here


def test_every_answer_has_its_own_id_and_outcomes_count(api: TestClient) -> None:
    answers = [
        api.get("/v1/customers/c00000/recommendations", params={"k": 5}).json(),
        api.get("/v1/customers/c00000/recommendations", params={"k": 5}).json(),
        api.get("/v1/items/i0001/similar", params={"customer_id": "c00000"}).json(),
        api.get("/v1/items/i0001/bought-together").json(),
        api.get("/v1/popular").json(),
        *api.post("/v1/recommendations/batch", json={"customer_ids": ["c00000", "c00001"]}).json()[
            "results"
        ],
    ]
    ids = [a["recommendation_id"] for a in answers]
    assert all(is_id(i) for i in ids) and len(set(ids)) == len(ids)
    _flushed()
    first = answers[0]
    item = first["items"][0]["item_id"]
    now = datetime.now(UTC).isoformat()
    rec = first["recommendation_id"]
    events = [
        {"customer_id": "c00000", "type": "impression", "ts": now, "recommendation_id": rec},
        {"customer_id": "c00000", "type": "click", "item_id": item, "ts": now,
         "recommendation_id": rec},
        {"customer_id": "c00000", "item_id": item, "ts": now, "unit_price": 20.0,
         "quantity": 2, "event_id": "o-1", "recommendation_id": rec},
        {"customer_id": "c00000", "type": "click", "item_id": "i0002", "ts": now},  # no answer
    ]  # fmt: skip
    res = api.post("/v1/events", json={"events": events})
    assert res.status_code == 200, res.text
    body = res.json()
    assert (body["accepted"], body["attributed"]) == (4, 3)
    assert [r["attribution"] for r in body["results"]] == [
        "attributed",
        "attributed",
        "attributed",
        None,
    ]
    again = api.post("/v1/events", json={"events": events}).json()  # a retry counts nothing
    assert again["attributed"] == 0 and again["replayed"] == 1
    assert api.get("/admin/experiments").status_code == 401
    exp = api.get("/admin/experiments", headers={"X-API-Key": ADMIN_KEY}).json()
    assert exp["current"] == "1~-"
    champ = next(e for e in exp["experiments"] if e["experiment"] == "1~-")
    totals = champ["variants"]["champion"]
    assert totals["answers"] == len(answers)
    assert (totals["impressions"], totals["clicked"], totals["converted"]) == (1, 1, 1)
    assert totals["revenue"] == 40.0 and totals["conversion"] == pytest.approx(1 / len(answers))
    metrics = api.get("/metrics").text
    assert (
        'patron_ab_outcomes_total{result="attributed",type="purchase",variant="champion"} 1.0'
        in metrics
    )
    assert 'patron_ab_answers_total{outcome="stored"}' in metrics


def test_bad_outcome_events_are_422_and_count_nothing(api: TestClient) -> None:
    now = datetime.now(UTC).isoformat()
    bad = [
        {"customer_id": "c00000", "type": "click", "ts": now},  # no item
        {"customer_id": "c00000", "type": "impression", "ts": now, "recommendation_id": "x1"},
        {"customer_id": "c00000", "type": "click", "item_id": "nope", "ts": now,
         "recommendation_id": new_id(time.time())},
        {"customer_id": "c00000", "type": "view", "item_id": "i0001", "ts": now},
    ]  # fmt: skip
    res = api.post("/v1/events", json={"events": bad})
    assert res.status_code == 422
    body = res.json()
    assert body["accepted"] == 0 and body["attributed"] == 0
    errors = [r["errors"][0] for r in body["results"]]
    assert "item_id: required for a click event" in errors[0]
    assert errors[1].startswith("recommendation_id")
    assert errors[2].startswith("item_id: not in the catalog")
    assert errors[3].startswith("type")


def test_answers_are_dropped_not_waited_for_when_redis_is_down(
    bundle_dir: Any, published: str
) -> None:
    from serving.app import create_app
    from tests.serving.conftest import settings_for

    # a port nobody listens on: answers degrade, their records are dropped and counted
    settings = settings_for(bundle_dir, "redis://127.0.0.1:1", ab_flush_ms=10)
    with TestClient(create_app(settings)) as c:
        res = c.get("/v1/customers/c00000/recommendations")
        assert res.status_code == 200 and is_id(res.json()["recommendation_id"])
        _flushed()
        assert 'patron_ab_answers_total{outcome="dropped"} 1.0' in c.get("/metrics").text
        ev = {"customer_id": "c00000", "type": "impression", "ts": datetime.now(UTC).isoformat(),
              "recommendation_id": res.json()["recommendation_id"]}  # fmt: skip
        assert c.post("/v1/events", json={"events": [ev]}).status_code == 503


def test_outcomes_of_expired_answers_are_unknown(store: AttributionStore) -> None:
    now = time.time() - 3 * 86_400
    rec = AnswerRecord(new_id(now), now, "1~-", "champion", "1", "r", "c1", ["i1"])
    store.write_answers_sync([rec])
    short = AttributionStore(store.r, NS, window_s=1)
    got = short.record_outcomes_sync([Outcome(rec.rec_id, "purchase", "c1", "i1", time.time())])
    assert got[0][0] == "outside_window"
    assert (
        store.record_outcomes_sync([Outcome(rec.rec_id, "purchase", "c1", "i1", now + 10, 1.0)])[0][
            0
        ]
        == "attributed"
    )
    day = time.strftime("%Y%m%d", time.gmtime(now))
    # counted on the answer's day, not the purchase's
    assert store.totals_sync([day]).counts["1~-"]["champion"]["converted"] == 1
