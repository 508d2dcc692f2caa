"""Against a real uvicorn process: every endpoint over TCP, hot reload under load, polling."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from patron.bundle import write_bundle
from tests.services import free_port, redis_env
from tests.serving.conftest import ADMIN_KEY, NS
from tests.serving.helpers import make_bundle_data

ROOT = Path(__file__).resolve().parents[2]


def start_server(env_extra: dict[str, str], port: int, workers: int = 1) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "OPENBLAS_NUM_THREADS": "1",
        **env_extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "patron", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_ready(base: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode() if proc.stderr else "server died")
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - t0
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("server not ready in time")


def _serve(live_bundle: Path, redis_url: str, poll_s: float) -> Iterator[str]:
    port = free_port()
    proc = start_server(
        {
            "PATRON_BUNDLE": str(live_bundle),
            **redis_env(redis_url),
            "PATRON_REDIS_NAMESPACE": NS,
            "PATRON_ADMIN_API_KEY": ADMIN_KEY,
            "PATRON_ENV": "test",
            "PATRON_REDIS_TIMEOUT_MS": "1000",
            "PATRON_RELOAD_INTERVAL_S": str(poll_s),
        },
        port,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def server(shared_live_bundle: Path, shared_redis: str) -> Iterator[str]:
    """One server for the endpoint tour, then the reload test (which moves it to v2)."""
    yield from _serve(shared_live_bundle, shared_redis, 0)


@pytest.fixture
def polling_server(live_bundle: Path, published: str) -> Iterator[str]:
    yield from _serve(live_bundle, published, 0.5)


def test_every_endpoint_over_http(server: str) -> None:
    with httpx.Client(base_url=server, timeout=5) as c:
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").json()["ready"] is True
        r = c.get("/v1/customers/c00000/recommendations", params={"k": 5}).json()
        assert r["tier"] == "gold" and len(r["items"]) == 5 and r["degraded"] is False
        assert len(c.get("/v1/items/i0004/similar").json()["items"]) == 10
        assert c.get("/v1/items/i0004/bought-together").status_code == 200
        assert c.get("/v1/popular", params={"tier": "gold"}).status_code == 200
        b = c.post("/v1/recommendations/batch", json={"customer_ids": ["c00001", "x"], "k": 2})
        assert [len(x["items"]) for x in b.json()["results"]] == [2, 2]
        ev = {
            "customer_id": "new9",
            "item_id": "i0002",
            "ts": datetime.now(UTC).isoformat(),
            "unit_price": 12.5,
        }
        assert c.post("/v1/events", json={"events": [ev]}).json()["accepted"] == 1
        assert c.get("/v1/customers/new9/profile").json()["spend_since_build"] == 12.5
        picks = c.get("/v1/customers/new9/recommendations").json()["items"]
        assert "i0002" not in {p["item_id"] for p in picks}
        assert c.get("/v1/model").json()["champion"]["version"] == "1"
        assert c.post("/admin/reload").status_code == 401
        assert c.get("/v1/items/zzz/similar").status_code == 404
        assert c.get("/v1/customers/c00000/recommendations", params={"k": 0}).status_code == 422
        assert "patron_http_request_seconds_bucket" in c.get("/metrics").text


def test_concurrent_requests_are_coalesced_with_unchanged_answers(server: str) -> None:
    """Requests in flight together are computed as one batch (serving/batch.py) and get
    exactly the answers they get one at a time."""
    import asyncio
    import re

    ids = [f"c{u:05d}" for u in range(48)]
    with httpx.Client(base_url=server, timeout=10) as c:
        alone = {cid: c.get(f"/v1/customers/{cid}/recommendations").json() for cid in ids}
        before = c.get("/metrics").text

    async def together() -> list[dict[str, object]]:
        async with httpx.AsyncClient(base_url=server, timeout=10) as ac:
            rs = await asyncio.gather(
                *(ac.get(f"/v1/customers/{cid}/recommendations") for cid in ids * 3)
            )
        assert {r.status_code for r in rs} == {200}
        return [r.json() for r in rs]

    for body in asyncio.run(together()):
        want = alone[str(body["customer_id"])]
        got_items, want_items = body["items"], want["items"]
        assert isinstance(got_items, list) and isinstance(want_items, list)
        assert [(i["item_id"], i["reasons"]) for i in got_items] == [
            (i["item_id"], i["reasons"]) for i in want_items
        ]
        assert all(
            abs(a["score"] - b["score"]) < 1e-5 for a, b in zip(got_items, want_items, strict=True)
        )
        assert body["tier"] == want["tier"] and body["degraded"] is False
    with httpx.Client(base_url=server, timeout=10) as c:
        after = c.get("/metrics").text

    def totals(text: str) -> tuple[float, float]:
        get = lambda name: float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]  # noqa: E731
        return get("patron_coalesced_batch_size_sum"), get("patron_coalesced_batch_size_count")

    (s0, n0), (s1, n1) = totals(before), totals(after)
    assert s1 - s0 == len(ids) * 3  # every request went through the batcher
    assert (s1 - s0) / (n1 - n0) > 2  # ... and most of them in batches, not one by one


def test_reload_under_load_has_no_failed_requests(server: str, shared_live_bundle: Path) -> None:
    live_bundle = shared_live_bundle
    results: list[tuple[float, int, str | None]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(seed: int) -> None:
        with httpx.Client(base_url=server, timeout=10) as c:
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                r = c.get(f"/v1/customers/c{(seed * 37 + i) % 300:05d}/recommendations")
                v = r.json().get("model_version") if r.status_code == 200 else None
                with lock:
                    results.append((t, r.status_code, v))
                i += 1

    threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.7)
    write_bundle(make_bundle_data(seed=1, version="2"), live_bundle)
    r = httpx.post(f"{server}/admin/reload", headers={"X-API-Key": ADMIN_KEY}, timeout=30)
    swapped = time.monotonic()
    time.sleep(0.7)
    stop.set()
    for t in threads:
        t.join()
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["changed"] is True and body["previous_version"] == "1"
    assert body["champion_version"] == "2"
    assert len(results) > 50
    assert {code for _, code, _ in results} == {200}
    assert {v for _, _, v in results} == {"1", "2"}  # each response names exactly one version
    assert {v for t, _, v in results if t > swapped} == {"2"}


def test_alias_polling_picks_up_a_new_bundle(polling_server: str, live_bundle: Path) -> None:
    server = polling_server
    write_bundle(make_bundle_data(seed=2, version="3"), live_bundle)
    deadline = time.monotonic() + 10
    version = None
    while time.monotonic() < deadline:
        version = httpx.get(f"{server}/v1/model").json()["champion"]["version"]
        if version == "3":
            break
        time.sleep(0.2)
    assert version == "3"
    assert 'patron_reloads_total{outcome="changed"}' in httpx.get(f"{server}/metrics").text


def test_cli_refuses_to_start_without_admin_key(live_bundle: Path) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "PATRON_BUNDLE": str(live_bundle),
        "PATRON_ENV": "prod",
    }
    env.pop("PATRON_ADMIN_API_KEY", None)
    p = subprocess.run(
        [sys.executable, "-m", "patron", "serve", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 2
    assert "PATRON_ADMIN_API_KEY is not set" in p.stderr
