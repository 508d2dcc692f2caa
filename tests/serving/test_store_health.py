"""Reads and writes of the online store judged apart, against a real redis-server (issue:
hardening, item 4): a Redis that refuses writes (``maxmemory`` with ``noeviction``) answers
events 503 and goes on serving reads; nothing degrades recommendations or /profile."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from fastapi.testclient import TestClient

from tests.services import redis_client


@pytest.mark.single_node
def test_a_full_redis_refuses_events_without_degrading_reads(
    client: TestClient, published: str
) -> None:
    r = redis_client(published)
    before = r.config_get("maxmemory")["maxmemory"], r.config_get("maxmemory-policy")
    ev = {"customer_id": "c00002", "item_id": "i0001", "ts": datetime.now(UTC).isoformat()}
    try:
        r.config_set("maxmemory-policy", "noeviction")
        r.config_set("maxmemory", 1)  # below what it holds: every write is refused (OOM)
        for _ in range(5):
            got = client.post("/v1/events", json={"events": [ev]})
            assert got.status_code == 503, got.text
            assert "full" in got.json()["detail"] and "not recorded" in got.json()["detail"]
            rec = client.get("/v1/customers/c00001/recommendations")
            assert rec.status_code == 200 and rec.json()["degraded"] is False
            assert client.get("/v1/customers/c00001/profile").status_code == 200
        assert client.get("/readyz").status_code == 200
    finally:
        r.config_set("maxmemory", before[0])
        r.config_set("maxmemory-policy", before[1]["maxmemory-policy"])
        r.close()
    # room again: the next event is recorded at once (no breaker was opened)
    assert client.post("/v1/events", json={"events": [ev]}).status_code == 200
