"""End to end through TestClient (lifespan runs) with a real redis-server and a real bundle."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest
from fastapi.testclient import TestClient

from patron.bundle import load_bundle
from serving.app import create_app
from tests.serving.conftest import ADMIN_KEY, settings_for
from tests.serving.helpers import category_of, customer_id, item_id


def ids(resp_json: dict) -> list[str]:
    return [it["item_id"] for it in resp_json["items"]]


def test_health_ready_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    client.get("/v1/customers/c00000/recommendations")
    m = client.get("/metrics").text
    assert (
        'patron_http_request_seconds_count{method="GET",route="/v1/customers/{customer_id}/recommendations",status="200"}'
        in m
    )
    assert 'patron_variant_total{variant="champion"}' in m


def test_recommendations_known_customer(client: TestClient, bundle_dir) -> None:
    data = load_bundle(bundle_dir)
    r = client.get("/v1/customers/c00000/recommendations", params={"k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["customer_id"] == "c00000"
    assert body["tier"] == "gold" and body["segment"] == "high-value"
    assert body["model_version"] == "1" and body["variant"] == "champion"
    assert body["degraded"] is False
    got = ids(body)
    assert len(got) == 10 and len(set(got)) == 10
    # training purchases are excluded, out-of-stock never shown
    ui = data.user_items
    bought = {item_id(j) for j in ui.indices[ui.indptr[0] : ui.indptr[1]]}
    assert not bought & set(got)
    stock = dict(zip(data.catalog["item_id"], data.catalog["in_stock"], strict=True))
    assert all(stock[i] for i in got)
    # planted taste: customer 0 likes category 0
    assert sum(category_of(int(i[1:])) == 0 for i in got) >= 8
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(it["reasons"] for it in body["items"])


def test_tier_exclusive_items_only_for_that_tier(client: TestClient) -> None:
    gold_only = {item_id(j) for j in range(0, 240, 17)}
    for k in (100,):
        bronze = ids(client.get("/v1/customers/c00001/recommendations", params={"k": k}).json())
        assert not gold_only & set(bronze)
        gold = client.get("/v1/customers/c00000/recommendations", params={"k": k}).json()
        assert gold_only & set(ids(gold))
        assert any("gold exclusive" in it["reasons"] for it in gold["items"])


def test_exclude_category_and_context(client: TestClient) -> None:
    base = ids(client.get("/v1/customers/c00002/recommendations").json())
    r = client.get("/v1/customers/c00002/recommendations", params={"exclude": ",".join(base[:3])})
    assert not set(base[:3]) & set(ids(r.json()))
    r = client.get("/v1/customers/c00002/recommendations", params={"category": "cat1", "k": 5})
    assert r.status_code == 200
    assert [category_of(int(i[1:])) for i in ids(r.json())] == [1] * 5
    assert (
        client.get("/v1/customers/c00002/recommendations", params={"category": "nope"}).status_code
        == 404
    )
    r = client.get("/v1/customers/c00002/recommendations", params={"context_item": "i0003"})
    assert r.status_code == 200 and "i0003" not in ids(r.json())
    assert any(
        x.startswith("bought together with i0003")
        for it in r.json()["items"]
        for x in it["reasons"]
    )
    assert (
        client.get(
            "/v1/customers/c00002/recommendations", params={"context_item": "i9999"}
        ).status_code
        == 404
    )


def test_unknown_customer_gets_popular(client: TestClient) -> None:
    body = client.get("/v1/customers/newbie/recommendations", params={"k": 5}).json()
    assert body["tier"] == "bronze" and len(body["items"]) == 5
    assert all(any("popular" in r for r in it["reasons"]) for it in body["items"])


def test_fold_in_new_customer_after_event(client: TestClient) -> None:
    # a brand-new customer buys two items of category 2
    evs = [
        {
            "customer_id": "fresh1",
            "item_id": item_id(j),
            "ts": datetime.now(UTC).isoformat(),
            "quantity": 1,
            "unit_price": 10.0,
        }
        for j in (2, 6)
    ]
    r = client.post("/v1/events", json={"events": evs})
    assert r.status_code == 200, r.text
    assert r.json()["accepted"] == 2
    body = client.get("/v1/customers/fresh1/recommendations", params={"k": 10}).json()
    got = ids(body)
    assert "i0002" not in got and "i0006" not in got  # just bought: excluded
    assert sum(category_of(int(i[1:])) == 2 for i in got) >= 8  # personalised, not popular
    reasons = {x for it in body["items"] for x in it["reasons"]}
    assert "recommended for you" in reasons or any(x.startswith("bought together") for x in reasons)
    assert 'patron_fallbacks_total{kind="fold_in"}' in client.get("/metrics").text


def test_similar_bought_together_popular(client: TestClient, bundle_dir) -> None:
    r = client.get("/v1/items/i0004/similar", params={"k": 5})
    assert r.status_code == 200
    got = ids(r.json())
    assert len(got) == 5 and "i0004" not in got
    assert all(category_of(int(i[1:])) == 0 for i in got)
    assert r.json()["items"][0]["reasons"][0] == "similar to i0004"
    r = client.get("/v1/items/i0004/bought-together", params={"k": 5, "customer_id": "c00000"})
    assert r.status_code == 200 and 0 < len(ids(r.json())) <= 5
    assert r.json()["tier"] == "gold"
    assert client.get("/v1/items/i9999/similar").status_code == 404
    assert "not in the catalog" in client.get("/v1/items/i9999/bought-together").json()["detail"]
    p = client.get("/v1/popular", params={"k": 7}).json()
    assert len(p["items"]) == 7
    pt = client.get("/v1/popular", params={"k": 7, "tier": "gold"}).json()
    assert pt["tier"] == "gold" and ids(pt) != ids(p)
    pc = client.get("/v1/popular", params={"k": 5, "category": "cat3"}).json()
    assert all(category_of(int(i[1:])) == 3 for i in ids(pc))
    assert client.get("/v1/popular", params={"tier": "diamond"}).status_code == 422
    assert client.get("/v1/popular", params={"category": "none"}).status_code == 404


def test_batch(client: TestClient) -> None:
    cids = [customer_id(u) for u in range(20)] + ["newcomer"]
    r = client.post("/v1/recommendations/batch", json={"customer_ids": cids, "k": 3})
    assert r.status_code == 200
    res = r.json()["results"]
    assert [x["customer_id"] for x in res] == cids
    assert all(len(x["items"]) == 3 for x in res)
    single = client.get("/v1/customers/c00005/recommendations", params={"k": 3}).json()
    assert res[5]["items"] == single["items"]
    too_many = {"customer_ids": [f"x{i}" for i in range(1001)], "k": 3}
    assert client.post("/v1/recommendations/batch", json=too_many).status_code == 422
    assert client.post("/v1/recommendations/batch", json={"customer_ids": []}).status_code == 422


def test_bad_input_is_4xx(client: TestClient) -> None:
    for k in (0, 101, -1):
        assert (
            client.get("/v1/customers/c00000/recommendations", params={"k": k}).status_code == 422
        )
    assert client.get("/v1/customers/" + "x" * 65 + "/recommendations").status_code == 422
    assert client.get("/v1/customers/bad$id/recommendations").status_code == 422
    assert (
        client.get("/v1/customers/c00000/recommendations", params={"k": "ten"}).status_code == 422
    )
    assert (
        client.post(
            "/v1/events", content=b"not json", headers={"content-type": "application/json"}
        ).status_code
        == 400  # documented: the body is not JSON
    )


def test_recommendation_parameters_422_and_openapi(client: TestClient) -> None:
    """The hot route validates its parameters in one call (serving/routes/params.py): same
    422 body as FastAPI's own (location, message) and the same parameters in OpenAPI."""
    r = client.get("/v1/customers/c00000/recommendations", params={"k": 0})
    (err,) = r.json()["detail"]
    assert err["loc"] == ["query", "k"] and err["type"] == "greater_than_equal"
    r = client.get("/v1/customers/bad$id/recommendations", params={"k": "ten"})
    locs = sorted(tuple(e["loc"]) for e in r.json()["detail"])
    assert locs == [("path", "customer_id"), ("query", "k")]
    r = client.get("/v1/customers/c00000/recommendations", params={"context_item": "a b"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "context_item"]
    r = client.get("/v1/customers/c00000/recommendations", params=[("k", "3"), ("k", "4")])
    assert len(r.json()["items"]) == 4  # a repeated parameter: the last value, as FastAPI
    op = client.get("/openapi.json").json()["paths"]["/v1/customers/{customer_id}/recommendations"]
    params = {(p["name"], p["in"], p["required"]) for p in op["get"]["parameters"]}
    assert params == {
        ("customer_id", "path", True),
        ("k", "query", False),
        ("category", "query", False),
        ("exclude", "query", False),
        ("context_item", "query", False),
    }
    k = next(p for p in op["get"]["parameters"] if p["name"] == "k")["schema"]
    assert (k["minimum"], k["maximum"], k["default"]) == (1, 100, 10)


def test_model_info_and_admin_reload(client: TestClient, bundle_dir) -> None:
    info = client.get("/v1/model").json()
    c = info["champion"]
    assert c["version"] == "1" and c["index"] == "IndexFlatIP"
    assert c["metrics"] == {"ndcg@10": 0.25} and len(c["fingerprint"]) == 16
    assert client.post("/admin/reload").status_code == 401
    assert client.post("/admin/reload", headers={"X-API-Key": "wrong-key-xyz"}).status_code == 401
    r = client.post("/admin/reload", headers={"X-API-Key": ADMIN_KEY})
    assert r.status_code == 200 and r.json()["changed"] is False
    assert 'patron_reloads_total{outcome="unchanged"} 1.0' in client.get("/metrics").text


def test_openapi_documents_endpoints(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for p in (
        "/v1/customers/{customer_id}/recommendations",
        "/v1/items/{item_id}/similar",
        "/v1/items/{item_id}/bought-together",
        "/v1/popular",
        "/v1/recommendations/batch",
        "/v1/events",
        "/v1/customers/{customer_id}/profile",
        "/v1/model",
        "/admin/reload",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert p in paths


def test_405_lists_every_method_of_the_path(client: TestClient) -> None:
    r = client.request("OPTIONS", "/admin/rules")
    assert r.status_code == 405
    allowed = {m.strip() for m in r.headers["allow"].split(",")}
    assert {"GET", "PUT"} <= allowed


def test_loaded_model_is_frozen_out_of_gc(bundle_dir, published) -> None:
    """After a (re)load the model's objects sit in the collector's permanent generation, so a
    full collection does not walk them while requests wait."""
    import gc

    gc.unfreeze()
    assert gc.get_freeze_count() == 0
    with TestClient(create_app(settings_for(bundle_dir, published))) as c:
        assert c.get("/readyz").status_code == 200
        assert gc.get_freeze_count() > 0
    gc.unfreeze()


def test_smaller_k_is_a_prefix_with_the_same_scores(client: TestClient) -> None:
    for cid in ("c00000", "c00001", "c00002", "newbie"):
        big = client.get(f"/v1/customers/{cid}/recommendations", params={"k": 30}).json()
        for k in (1, 4, 11):
            small = client.get(f"/v1/customers/{cid}/recommendations", params={"k": k}).json()
            assert small["items"] == big["items"][:k], (cid, k)


def test_unknown_customer_gets_the_tiers_popular_items_in_order(
    client: TestClient, bundle_dir
) -> None:
    from serving.model import load_model

    model = load_model(bundle_dir)
    body = client.get("/v1/customers/newbie/recommendations", params={"k": 8}).json()
    pop = model.popular_for(body["tier"])
    eligible = [
        (model.item_id_list[i], float(s))
        for i, s in zip(pop.item_idx.tolist(), pop.score.tolist(), strict=True)
        if model.items.in_stock[i] and model.items.min_tier_rank[i] <= 0
    ][:8]
    assert [(it["item_id"], it["score"]) for it in body["items"]] == [
        (i, pytest.approx(s)) for i, s in eligible
    ]
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0


def test_similar_keeps_the_rules_reasons(client: TestClient, bundle_dir) -> None:
    """A gold customer's similar items keep "gold exclusive" beside "similar to X"."""
    from serving.model import load_model

    model = load_model(bundle_dir)
    gold_only = {model.item_id_list[j] for j in np.flatnonzero(model.items.min_tier_rank > 0)}
    seen = 0
    for anchor in ("i0000", "i0006", "i0012", "i0017", "i0034"):
        r = client.get(
            f"/v1/items/{anchor}/similar", params={"k": 20, "customer_id": "c00000"}
        ).json()
        for it in r["items"]:
            assert it["reasons"][0] == f"similar to {anchor}"
            if it["item_id"] in gold_only:
                assert "gold exclusive" in it["reasons"], it
                seen += 1
    assert seen > 0


def test_item_routes_report_variant_and_rules_version(client: TestClient) -> None:
    rules_version = client.get("/v1/customers/c00000/recommendations").json()["rules_version"]
    for path in ("/v1/items/i0004/similar", "/v1/items/i0004/bought-together", "/v1/popular"):
        body = client.get(path).json()
        assert body["variant"] == "champion" and body["rules_version"] == rules_version, path


def test_unknown_category_is_404_before_any_redis_read(bundle_dir, published) -> None:
    """Parameters are checked before the online store is asked (a bad request costs no I/O)."""
    app = create_app(settings_for(bundle_dir, published))
    with TestClient(app) as c:
        gateway = app.state.gateway
        calls: list[str] = []
        real = gateway.customer

        async def counting(cid: str):  # type: ignore[no-untyped-def]
            calls.append(cid)
            return await real(cid)

        gateway.customer = counting
        r = c.get("/v1/customers/c00001/recommendations", params={"category": "nope"})
        assert r.status_code == 404 and calls == []
        r = c.get("/v1/customers/c00001/recommendations", params={"context_item": "i9999"})
        assert r.status_code == 404 and calls == []
        assert c.get("/v1/customers/c00001/recommendations", params={"category": "cat1"}).is_success
        assert calls == ["c00001"]
