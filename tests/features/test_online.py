"""Online store against a real redis-server: round trip, real-time keys, atomic publish."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from datetime import UTC, datetime

import polars as pl
import pytest

from features.online import AsyncOnlineStore, OnlineStore, PurchaseEvent
from features.online_layout import Layout
from patron.redis_connect import connect_async
from tests.conftest import BOTH_TOPOLOGIES
from tests.services import is_cluster_url, redis_client

pytestmark = [pytest.mark.redis, BOTH_TOPOLOGIES]


def aclient(url: str):  # type: ignore[no-untyped-def]
    return connect_async(url, is_cluster_url(url))


def customers(n: int, gen: int) -> pl.DataFrame:
    """A version where every field of a customer encodes the same generation number."""
    ids = [f"c{i}" for i in range(n)]
    return pl.DataFrame(
        {
            "customer_id": ids,
            "tier": [["bronze", "silver", "gold", "platinum"][gen % 4]] * n,
            "segment": ["regular"] * n,
            "churn_risk": [0.001 * gen] * n,
            "clv_band": ["high"] * n,
            "loyalty_index": [float(gen)] * n,
            "marketing_consent": [i % 2 == 0 for i in range(n)],
            "next_tier": [None] * n,
            "progress_to_next": [float(gen) * 10] * n,
            "typical_spend": [12.346] * n,
        }
    )


ITEMS = pl.DataFrame(
    {"item_id": ["i1", "i2"], "in_stock": [True, False], "min_tier": [None, "gold"]}
)


def test_publish_and_read_round_trip(redis_url: str) -> None:
    r = redis_client(redis_url)
    store = OnlineStore(r, namespace="t")
    assert store.current_version() is None
    assert store.read_customer("c1").known is False
    rep = store.publish(customers(300, 2), ITEMS)
    assert rep.customers == 300 and rep.items == 2
    assert store.current_version() == rep.version
    c = store.read_customer("c2")
    assert c.known and c.tier == "gold" and c.segment == "regular" and c.clv_band == "high"
    assert c.loyalty_index == 2.0 and c.churn_risk == 0.002 and c.marketing_consent is True
    assert c.next_tier is None and c.progress_to_next == 20.0 and c.typical_spend == 12.35
    assert store.read_customer("c3").marketing_consent is False
    assert store.read_customer("nobody").known is False
    many = store.read_customers(["c0", "x", "c299"])
    assert [m.known for m in many] == [True, False, True]
    flags = store.read_item_flags().sort("item_id")
    assert flags["in_stock"].to_list() == [True, False]
    assert flags["min_tier"].to_list() == [None, "gold"]
    # buckets stay listpack-encoded (compact) under the server's default limits
    key = next(iter(r.scan_iter(match="t:{*}:v:*:c:*")))
    assert r.object("encoding", key) == b"listpack"
    # 300 customers spread over 1,024 shards: about one per bucket, so the per-key overhead
    # dominates (benchmarks/publish.py measures 1M customers: ~70 bytes each)
    assert rep.bytes_per_customer is not None and rep.bytes_per_customer < 400


def test_previous_version_expires(redis_url: str) -> None:
    r = redis_client(redis_url)
    store = OnlineStore(r, namespace="t")
    first = store.publish(customers(100, 1), ITEMS, ttl_s=100)
    second = store.publish(customers(100, 2), ITEMS, ttl_s=100)
    assert second.extra["previous"] == first.version
    lay, buckets = Layout("t"), first.extra["buckets"]
    old_keys = {k.decode() for k in r.scan_iter(match=f"*v:{first.version}:*")}
    ids = customers(100, 1)["customer_id"]
    assert old_keys == {lay.meta(first.version), lay.items(first.version)} | {
        lay.customer_bucket(first.version, buckets, c) for c in ids
    }
    assert all(0 < r.ttl(k) <= 100 for k in old_keys)
    new_keys = list(r.scan_iter(match=f"*v:{second.version}:*"))
    assert new_keys and all(r.ttl(k) == -1 for k in new_keys)
    assert store.read_customer("c5").tier == "gold"


def test_record_events_real_time_keys(redis_url: str) -> None:
    r = redis_client(redis_url)
    store = OnlineStore(r, namespace="t")
    store.publish(customers(10, 1), ITEMS)
    now = datetime.now(UTC)
    evs = [
        PurchaseEvent(
            "c1",
            f"i{k}",
            datetime.fromtimestamp(now.timestamp() - 100 + k, UTC),
            quantity=1,
            unit_price=10.0,
        )
        for k in range(60)
    ]
    assert store.record_events(evs) == 60
    assert store.record_events([PurchaseEvent("c1", "i0", now, 1, 5.0, type="return")]) == 1
    c = store.read_customer("c1")
    assert c.known and c.spend_since_build == pytest.approx(595.0)
    assert len(c.recent_items) == 20  # default read depth; 50 kept server side
    assert c.recent_items[0][0] == "i59"  # newest first
    lay = Layout("t")
    assert r.zcard(lay.recent("c1")) == 50
    assert r.ttl(lay.recent("c1")) > 0
    # the only real-time keys are the ones something reads (recent set, spend since build)
    assert sorted(r.scan_iter(match="t:*:rt:*")) == sorted(
        k.encode() for k in (lay.recent("c1"), lay.spend("c1"))
    )
    # a new build resets spend since the build
    store.publish(customers(10, 2), ITEMS)
    assert store.read_customer("c1").spend_since_build == 0.0
    with pytest.raises(ValueError, match="event type"):
        store.record_events([PurchaseEvent("c1", "i1", now, type="view")])


def test_async_reader_matches_sync(redis_url: str) -> None:
    store = OnlineStore(redis_client(redis_url), namespace="t")
    store.publish(customers(50, 3), ITEMS)

    async def go() -> tuple[object, object, int]:
        client = aclient(redis_url)
        a = AsyncOnlineStore(client, namespace="t")
        n = await a.record_events([PurchaseEvent("c7", "i1", datetime.now(UTC), 2, 3.0)])
        one = await a.read_customer("c7")
        ver = await a.current_version()
        await client.aclose()
        return one, ver, n

    one, ver, n = asyncio.run(go())
    assert n == 1
    assert one == store.read_customer("c7")
    assert ver == store.current_version()


def test_async_read_without_spend(redis_url: str) -> None:
    """Recommendation reads skip the spend counter: same rows, spend_since_build 0."""
    store = OnlineStore(redis_client(redis_url), namespace="t")
    store.publish(customers(20, 4), ITEMS)
    store.record_events([PurchaseEvent("c3", "i1", datetime.now(UTC), 2, 7.5)])

    async def go() -> tuple[list[object], list[object]]:
        client = aclient(redis_url)
        a = AsyncOnlineStore(client, namespace="t")
        ids = ["c3", "c4", "nobody"]
        full, lean = await a.read_customers(ids), await a.read_customers(ids, spend=False)
        await client.aclose()
        return full, lean

    full, lean = asyncio.run(go())
    assert full[0].spend_since_build == pytest.approx(15.0)  # type: ignore[attr-defined]
    assert lean[0].spend_since_build == 0.0  # type: ignore[attr-defined]
    assert lean[0].recent_items == full[0].recent_items  # type: ignore[attr-defined]
    assert [dataclasses.replace(f, spend_since_build=0.0) for f in full] == lean  # type: ignore[type-var]


def test_concurrent_reader_sees_only_complete_versions(redis_url: str) -> None:
    """A reader during repeated publishes never mixes versions or misses a customer."""
    n = 2_000
    writer = OnlineStore(redis_client(redis_url), namespace="t")
    writer.publish(customers(n, 0), ITEMS)
    stop = threading.Event()
    problems: list[str] = []
    reads = [0]

    def reader() -> None:
        store = OnlineStore(redis_client(redis_url), namespace="t")
        ids = [f"c{i}" for i in range(0, n, 97)]
        while not stop.is_set():
            rows = store.read_customers(ids)
            reads[0] += 1
            gens = set()
            for c in rows:
                if not c.known:
                    problems.append(f"missing {c.customer_id} in {c.version}")
                    continue
                g = int(c.loyalty_index or 0)
                # every field of one customer must come from the same generation
                if c.progress_to_next != g * 10 or c.churn_risk != round(0.001 * g, 3):
                    problems.append(f"mixed fields for {c.customer_id}")
                gens.add(g)
            # one node flips every shard in one transaction: a batch sees one version; a
            # cluster flips shard by shard (each customer still sees one version)
            if len(gens) > 1 and not is_cluster_url(redis_url):
                problems.append(f"one read saw generations {gens}")

    t = threading.Thread(target=reader)
    t.start()
    gen = 0
    try:
        # keep publishing until the reader has overlapped many publishes (bounded)
        while gen < 8 or (reads[0] < 40 and gen < 300):
            gen += 1
            writer.publish(customers(n, gen), ITEMS, ttl_s=1)
    finally:
        stop.set()
        t.join()
    assert reads[0] >= 5
    assert problems == []
    assert writer.read_customer("c1").loyalty_index == float(gen)


def test_reads_and_events_survive_an_emptied_script_cache(redis_url: str) -> None:
    """A node that lost its scripts (restart, promoted replica) gets them again: the batch
    read (pipelined per node on a cluster) and the event script still answer."""
    r = redis_client(redis_url)
    store = OnlineStore(r, namespace="t")
    store.publish(customers(200, 5), ITEMS)
    ids = [f"c{i}" for i in range(200)]
    assert all(c.known for c in store.read_customers(ids))
    r.script_flush()
    assert store.record_events([PurchaseEvent("c9", "i1", datetime.now(UTC), 1, 2.0)]) == 1
    r.script_flush()
    rows = store.read_customers(ids)
    assert all(c.known and c.loyalty_index == 5.0 for c in rows)
    assert rows[9].recent_items[0][0] == "i1"
