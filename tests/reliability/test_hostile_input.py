"""Hostile input under load (issue 18): ``patron serve --workers 2`` against a real
redis-server answers a steady mix of normal requests for 20 s while one hostile request a
second arrives, each kind of the hardening review in turn, and an admin changes the rules
half-way.

Contract checked: every hostile request gets its documented 4xx and writes nothing; 0 5xx and
0 degraded answers (Redis is healthy throughout); no hostile value reaches the log; a retried
event (same event_id) is applied once; the rules change is served by every worker within the
documented bound (PATRON_ADMIN_SYNC_S + apply time; measured from the answers' rules_version).
"""

from __future__ import annotations

import socket
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import yaml

from features.online import OnlineStore
from serving.rules.loader import DEFAULT_RULES_FILE
from tests.reliability.conftest import Report
from tests.reliability.harness import (
    N_CUSTOMERS,
    Call,
    SteadyLoad,
    customers_table,
    serve,
    server_env,
)
from tests.services import redis_server
from tests.serving.conftest import ADMIN_KEY
from tests.serving.helpers import customer_id, item_id, items_frame, make_bundle

pytestmark = pytest.mark.reliability

NS = "hostile"
RATE = 40.0
SECONDS = 20.0
ADMIN = {"X-API-Key": ADMIN_KEY}
SECRET = "jane.doe@example.com"  # a value that must never reach the log
BOUND_S = 1.0 + 1.0  # PATRON_ADMIN_SYNC_S + applying rules, with slack for a loaded machine


def _rules(**reasons: str) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    data["reasons"] = {**data["reasons"], **reasons}
    return data


def _event(cid: str, **kw: Any) -> dict[str, Any]:
    return {"customer_id": cid, "item_id": item_id(1), "ts": datetime.now(UTC).isoformat(), **kw}


def _events(*events: dict[str, Any]) -> dict[str, Any]:
    return {"events": list(events)}


# (kind, expected status, the call); the customer ids "hx<kind>" must get nothing written
def _hostile(k: int) -> tuple[str, int, Call]:
    cid = f"hx{k % 11}"
    kinds: list[tuple[str, int, Call]] = [
        (
            "template: unknown placeholder",
            422,
            Call(
                "PUT",
                "/admin/rules",
                _rules(copurchase="bought with {anchor} {nonexistent}"),
                headers=ADMIN,
            ),
        ),
        (
            "template: attribute access",
            422,
            Call(
                "PUT",
                "/admin/rules",
                _rules(copurchase="{anchor.__class__.__mro__}"),
                headers=ADMIN,
            ),
        ),
        (
            "event: quantity, price 1e200",
            422,
            Call("POST", "/v1/events", _events(_event(cid, quantity=1e200, unit_price=1e200))),
        ),
        (
            "event: price 1e300",
            422,
            Call("POST", "/v1/events", _events(_event(cid, unit_price=1e300))),
        ),
        (
            "event: two returns of -1e300",
            422,
            Call("POST", "/v1/events", _events(*[_event(cid, quantity=-1e300, type="return")] * 2)),
        ),
        (
            "event: year 1",
            422,
            Call("POST", "/v1/events", _events(_event(cid, ts="0001-01-01T00:00:00+00:00"))),
        ),
        (
            "event: a day ahead",
            422,
            Call(
                "POST",
                "/v1/events",
                _events(_event(cid, ts=(datetime.now(UTC) + timedelta(days=1)).isoformat())),
            ),
        ),
        ("events: empty list", 422, Call("POST", "/v1/events", {"events": []})),
        (
            "body: bare NaN",
            422,
            Call(
                "POST",
                "/v1/events",
                content=(
                    '{"events": [{"customer_id": "' + SECRET + '", "item_id": "i1", '
                    '"ts": "2026-01-01T00:00:00Z", "unit_price": NaN}]}'
                ).encode(),
                headers={"Content-Type": "application/json"},
            ),
        ),
        (
            "body: not JSON",
            400,
            Call(
                "POST",
                "/v1/recommendations/batch",
                content=b"{customer_ids: " + SECRET.encode(),
                headers={"Content-Type": "application/json"},
            ),
        ),
        (
            "batch: 1,001 customers",
            422,
            Call(
                "POST",
                "/v1/recommendations/batch",
                {"customer_ids": [customer_id(0)] * 1001, "k": 10},
            ),
        ),
    ]
    kind, status, call = kinds[k % len(kinds)]
    return (
        kind,
        status,
        Call(
            call.method,
            call.path,
            call.json,
            f"hostile:{kind}:{status}",
            call.content,
            call.headers,
        ),
    )


def make_call(i: int) -> Call:
    if i % int(RATE) == 7:  # one a second
        return _hostile(i // int(RATE))[2]
    u = (i * 7) % N_CUSTOMERS
    slot = i % 8
    if slot <= 3:
        return Call("GET", f"/v1/customers/{customer_id(u)}/recommendations?k=10", tag="recs")
    if slot == 4:
        ids = [customer_id((u + d) % N_CUSTOMERS) for d in range(5)]
        return Call("POST", "/v1/recommendations/batch", {"customer_ids": ids, "k": 5}, "batch")
    if slot == 5:
        return Call("GET", f"/v1/customers/{customer_id(u)}/profile", tag="profile")
    if slot == 6:  # a retried event: the same event_id every time, applied once
        ev = _event("retried", unit_price=10.0, event_id="retry-1")
        return Call("POST", "/v1/events", _events(ev), tag="retry")
    return Call("GET", f"/v1/items/{item_id(i % 240)}/similar?customer_id={customer_id(u)}")


def test_hostile_input_under_load_on_two_workers(tmp_path: Path, report: Report) -> None:
    bundle = make_bundle(tmp_path / "bundle", seed=0, version="1")
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as srv:
        rc = redis.Redis.from_url(srv.url)
        OnlineStore(rc, NS).publish(customers_table(), items_frame(240))
        # this run is about hostile input, not Redis latency: a Redis call may take up to
        # 250 ms on this shared 2-core machine before it counts as down (a CI run on
        # 2026-12-03 saw 2 of 800 calls pass the default 50 ms)
        env = server_env(
            bundle,
            srv.url,
            NS,
            PATRON_RULES_FILE=str(DEFAULT_RULES_FILE),
            PATRON_REDIS_TIMEOUT_MS="250",
        )
        with serve(env, tmp_path / "server.log", workers=2) as server:
            time.sleep(3)  # the second worker ready too (each has its own socket)
            load = SteadyLoad(server.base, make_call, RATE, SECONDS, threads=8)
            load.start()
            time.sleep(max(0.0, load.result.started + SECONDS / 2 - time.monotonic()))
            put = httpx.put(
                f"{server.base}/admin/rules",
                json=_rules(copurchase="with {anchor}") | {"version": "hostile-run"},
                headers=ADMIN,
                timeout=10,
            )
            put_done = time.monotonic()
            res = load.join()
            log = server.log()
        store = OnlineStore(rc, NS)
        hostile_rows = store.read_customers([f"hx{k}" for k in range(11)])
        retried = store.read_customers(["retried"])[0]
        rc.close()

    assert put.status_code == 200, put.text
    new_version = put.json()["version"]
    outs = res.outcomes
    assert len(outs) == int(RATE * SECONDS)
    hostile = [o for o in outs if o.call.tag.startswith("hostile:")]
    wrong = [(o.call.tag, o.status) for o in hostile if str(o.status) != o.call.tag.split(":")[-1]]
    assert not wrong, wrong
    normal = [o for o in outs if not o.call.tag.startswith("hostile:")]
    counts = res.counts()
    assert counts.get("5xx", 0) == 0 and counts.get("503", 0) == 0 and counts.get("error", 0) == 0
    assert counts.get("2xx-degraded", 0) == 0, counts
    assert all(o.status == 200 for o in normal), {o.status for o in normal}
    # nothing a hostile event carried was written; the retried event counted once
    assert all(not r.recent_items for r in hostile_rows)
    assert len(retried.recent_items) == 1
    replays = [o for o in normal if o.call.tag == "retry"]
    assert sum(o.body["replayed"] for o in replays) == len(replays) - 1
    # the hostile values never reach the log, nor a traceback
    for needle in (SECRET, "1e+200", "1e+300", "__mro__", "nonexistent", "Traceback"):
        assert needle not in log, needle
    # the rules change, as the answers show it: old version only before the bound
    recs = [o for o in normal if o.call.tag == "recs"]
    old_after = [
        o.sent - put_done
        for o in recs
        if o.sent > put_done and o.body["rules_version"] != new_version
    ]
    lag = max(old_after, default=0.0)
    assert lag < BOUND_S, lag
    assert recs[-1].body["rules_version"] == new_version
    kinds = len({o.call.tag for o in hostile})
    report(
        "hostile input under load, 2 workers",
        len(outs),
        counts,
        f"{len(hostile)} hostile requests ({kinds} kinds), 1/s; PUT /admin/rules mid-run",
        notes=f"all hostile refused as documented, nothing written, no value logged; retried "
        f"event applied once; rules change on every answer {lag:.2f} s after the PUT",
    )


def _state_call(i: int) -> Call:
    u = (i * 7) % N_CUSTOMERS
    if i % 4 == 3:
        return Call("POST", "/v1/events", _events(_event(f"full{i}", unit_price=3.0)), "event")
    return Call("GET", f"/v1/customers/{customer_id(u)}/recommendations?k=10", tag="recs")


def test_a_full_redis_and_half_open_connections_under_load(tmp_path: Path, report: Report) -> None:
    """Redis at maxmemory (noeviction) for 5 s, then 200 half-open connections, during 15 s
    of load on 2 workers: events answer 503 "full" while it lasts (nothing half-written),
    recommendations stay 200 and not degraded; the held connections are closed by the
    header timeout and service goes on."""
    bundle = make_bundle(tmp_path / "bundle", seed=0, version="1")
    (tmp_path / "redis").mkdir()
    with redis_server(tmp_path / "redis") as srv:
        rc = redis.Redis.from_url(srv.url)
        OnlineStore(rc, NS).publish(customers_table(), items_frame(240))
        rc.config_set("maxmemory-policy", "noeviction")
        env = server_env(bundle, srv.url, NS, PATRON_HEADER_TIMEOUT_S="2")
        with serve(env, tmp_path / "server.log", workers=2) as server:
            time.sleep(3)
            load = SteadyLoad(server.base, _state_call, 40.0, 15.0, threads=8)
            load.start()
            time.sleep(2)
            full_from = time.monotonic()
            rc.config_set("maxmemory", 1)  # below what it holds: every write refused (OOM)
            time.sleep(5)
            rc.config_set("maxmemory", 0)
            full_to = time.monotonic()
            host, port = server.base.removeprefix("http://").split(":")
            held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(200)]
            for s in held[::2]:
                s.sendall(b"GET /healthz HTTP/1.1\r\n")
            time.sleep(4)  # twice the header timeout
            still_open = 0
            for s in held:
                s.settimeout(0.05)
                try:
                    still_open += s.recv(1) != b""
                except TimeoutError:
                    still_open += 1
                s.close()
            res = load.join()
            log = server.log()
        accepted = [o for o in res.outcomes if o.call.tag == "event" and o.status == 200]
        written = OnlineStore(rc, NS).read_customers(
            [o.call.json["events"][0]["customer_id"] for o in res.outcomes if o.call.tag == "event"]
        )
        rc.close()

    counts = res.counts()
    recs = [o for o in res.outcomes if o.call.tag == "recs"]
    assert all(o.status == 200 and not o.body["degraded"] for o in recs), counts
    refused = [o for o in res.outcomes if o.call.tag == "event" and o.status == 503]
    assert refused and all("full" in o.body["detail"] for o in refused)
    assert all(full_from - 0.5 <= o.sent <= full_to + 0.5 for o in refused)
    assert counts.get("5xx", 0) == 0 and counts.get("error", 0) == 0
    # every accepted event is there, no refused one is half-written
    by_id = {r.customer_id: bool(r.recent_items) for r in written}
    assert all(by_id[o.call.json["events"][0]["customer_id"]] for o in accepted)
    assert not any(by_id[o.call.json["events"][0]["customer_id"]] for o in refused)
    assert still_open == 0, f"{still_open} of 200 half-open connections still held"
    assert "Traceback" not in log
    report(
        "redis full, then 200 half-open connections, 2 workers",
        len(res.outcomes),
        counts,
        "maxmemory 1 (noeviction) for 5 s; 200 connections without complete headers",
        notes=f"{len(refused)} events 503 'full' only while full, none half-written; "
        "recommendations all 200, 0 degraded; 0 of 200 connections held after 2x the "
        "header timeout",
    )
