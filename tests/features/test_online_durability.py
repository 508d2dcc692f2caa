"""Durable events (Redis ``WAIT`` after the writes, on the connection that made them) on a
real primary with a real replica, and on the real test cluster (one replica per primary)."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis

from features.online import AsyncOnlineStore, Durability, NotReplicated, OnlineStore, PurchaseEvent
from patron.redis_connect import connect_async
from tests.services import RedisServer, free_port, redis_client, redis_server

pytestmark = pytest.mark.redis


def events(prefix: str, n: int) -> list[PurchaseEvent]:
    ts = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        PurchaseEvent(f"{prefix}{i % 7}", f"i{i}", ts, 1, 2.5, "purchase", f"{prefix}-e{i}")
        for i in range(n)
    ]


def test_durable_events_on_a_primary_with_and_without_its_replica(tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    with redis_server(tmp_path / "p") as primary:
        store = OnlineStore(redis.Redis.from_url(primary.url), namespace="d")
        # no replica yet: applied on the primary, but not confirmed
        with pytest.raises(NotReplicated) as lone:
            store.record_events(events("a", 5), Durability(replicas=1, timeout_ms=50))
        assert lone.value.applied == 5 and lone.value.acknowledged == 0
        assert len(store.read_customer("a1").recent_items) == 1  # applied, not lost
        replica = RedisServer(
            port=free_port(),
            workdir=tmp_path / "r",
            extra=["--replicaof", "127.0.0.1", str(primary.port)],
        )
        replica.start()
        try:
            r = redis.Redis(port=replica.port)
            deadline = time.monotonic() + 10
            while r.info("replication").get("master_link_status") != "up":
                assert time.monotonic() < deadline, "the replica never synced"
                time.sleep(0.05)
            durable = Durability(replicas=1, timeout_ms=2_000)
            assert store.record_events(events("b", 9), durable) == 9
            # confirmed means the replica has them now (the retry of "a" is replayed)
            assert r.zcard(store.keys.recent("b3")) == 1
            assert store.record_events(events("a", 5), durable) == 0
            async_store = AsyncOnlineStore(connect_async(primary.url, False), namespace="d")
            assert asyncio.run(async_store.record_events(events("c", 4), durable)) == 4
        finally:
            replica.stop()


def test_durable_events_on_the_cluster(redis_cluster_srv) -> None:  # type: ignore[no-untyped-def]
    url = redis_cluster_srv.url
    store = OnlineStore(redis_client(url), namespace="dc")
    batch = events("k", 40)  # 7 customers: several slots, on several primaries
    assert store.record_events(batch, Durability(replicas=1, timeout_ms=2_000)) == 40
    # every primary has one replica: asking for two cannot be confirmed
    with pytest.raises(NotReplicated) as two:
        store.record_events(events("m", 10), Durability(replicas=2, timeout_ms=50))
    assert two.value.applied == 10 and two.value.acknowledged == 1

    async def run() -> int:
        client = connect_async(url, True)
        try:
            async_store = AsyncOnlineStore(client, namespace="dc")
            await async_store.read_customers(["k1", "k2"])  # initialises the client
            return await async_store.record_events(
                events("n", 20), Durability(replicas=1, timeout_ms=2_000)
            )
        finally:
            await client.aclose()

    assert asyncio.run(run()) == 20
    assert store.record_events(batch, Durability(replicas=1, timeout_ms=2_000)) == 0  # replayed
