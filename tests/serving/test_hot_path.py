"""The hot path (serving/hot_path.py) answers exactly as the FastAPI route: same status, same
bytes; whatever it does not answer with 200 is FastAPI's answer."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import parse_qsl

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

import serving.attribution.recorder as recorder
import serving.routes.recommendations as rec_route
from serving.app import create_app
from serving.hot_path import query_params
from tests.serving.conftest import settings_for
from tests.serving.helpers import customer_id, item_id

ROUTE = "/v1/customers/{customer_id}/recommendations"
REQUESTS: list[tuple[str, dict[str, object] | list[tuple[str, str]]]] = [
    (customer_id(0), {}),
    (customer_id(1), {"k": 3}),
    (customer_id(2), {"k": 100}),
    (customer_id(3), {"exclude": f"{item_id(1)},{item_id(2)},nope"}),
    (customer_id(4), [("k", "2"), ("k", "5")]),
    ("newbie", {"k": 5}),  # unknown to the model and to Redis: popular picks
    (customer_id(5), {"category": "cat1", "k": 4}),  # the one-customer path, not batched
    (customer_id(6), {"context_item": item_id(7)}),
    # errors: FastAPI's answers
    (customer_id(0), {"k": 0}),
    (customer_id(0), {"k": "ten"}),
    ("bad$id", {}),
    ("x" * 65, {}),
    (customer_id(0), {"category": ""}),
    (customer_id(0), {"category": "nope"}),  # 404 from the service
    (customer_id(0), {"context_item": "i9999"}),  # 404
    (customer_id(0), {"exclude": ",".join(item_id(j) for j in range(201))}),  # 422 (> 200)
]


@pytest.fixture
def both(bundle_dir: Path, published: str):  # type: ignore[no-untyped-def]
    on = create_app(settings_for(bundle_dir, published, hot_path=True))
    off = create_app(settings_for(bundle_dir, published, hot_path=False))
    with TestClient(on) as a, TestClient(off) as b:
        yield a, b


def test_same_status_and_bytes_as_fastapi_route(both, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    hot, plain = both
    # one recommendation id for every answer: the bytes are then comparable
    monkeypatch.setattr(recorder, "new_id", lambda now: "20261207-" + "0" * 32)
    calls = []
    parse = rec_route.parse_params
    monkeypatch.setattr(
        rec_route, "parse_params", lambda *a, **kw: calls.append(1) or parse(*a, **kw)
    )
    statuses = set()
    for cid, params in REQUESTS:
        path = f"/v1/customers/{cid}/recommendations"
        before = len(calls)
        a, b = hot.get(path, params=params), plain.get(path, params=params)
        assert (a.status_code, a.content) == (b.status_code, b.content), (cid, params)
        assert a.headers["content-type"] == b.headers["content-type"]
        # 200s never reach the FastAPI route on the hot app; errors are answered there
        assert len(calls) - before == (1 if a.status_code == 200 else 2), (cid, params)
        statuses.add(a.status_code)
    assert statuses == {200, 404, 422}


def test_hot_path_requests_are_timed_under_the_route(both) -> None:  # type: ignore[no-untyped-def]
    hot, _ = both
    for u in range(3):
        assert hot.get(f"/v1/customers/{customer_id(u)}/recommendations").status_code == 200
    text = hot.get("/metrics").text
    line = f'patron_http_request_seconds_count{{method="GET",route="{ROUTE}",status="200"}} 3.0'
    assert line in text


@settings(max_examples=500, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["k", "exclude", "", "k=", "a b"]), st.text(max_size=6)),
        max_size=5,
    ).map(lambda kv: "&".join(f"{k}={v}" if i % 3 else k + v for i, (k, v) in enumerate(kv)))
    | st.text(alphabet="k=&%+;abc é1", max_size=20)
)
def test_query_params_as_starlette_reads_them(text: str) -> None:
    qs = text.encode("utf-8")
    assert query_params(qs) == dict(parse_qsl(qs.decode("latin-1"), keep_blank_values=True))
