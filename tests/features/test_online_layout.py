"""The online store's key layout (no server): every key of one customer in one cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from features.online_layout import SHARDS, Layout, bucket_count


@pytest.mark.parametrize("n", [0, 1, 48 * SHARDS, 48 * SHARDS + 1, 10**6])
def test_a_customers_bucket_is_in_its_shard(n: int) -> None:
    """Buckets are a multiple of SHARDS, so a bucket key carries its customer's shard tag
    (one slot per customer read on a cluster)."""
    buckets = bucket_count(n)
    assert buckets % SHARDS == 0 and buckets * 48 >= n
    lay = Layout("ns")
    for cid in ["c1", "x", "customer-\u00e9", "42"]:
        tag = lay.pointer(lay.shard(cid)).split(":")[1]
        assert lay.customer_bucket("v1", buckets, cid).split(":")[1] == tag
        assert lay.recent(cid).split(":")[1] == lay.spend(cid).split(":")[1] == tag


def test_a_cluster_read_is_one_call_per_slot_and_a_node_read_one_call() -> None:
    from features.online_scripts import Pointer, ReadPlanner

    ids = [f"c{i}" for i in range(500)]
    node = ReadPlanner(Layout("ns"), cluster=False)
    node.guess = Pointer("v1", bucket_count(500), {})
    calls = next(node.steps(ids, 5, False))
    assert len(calls) == 1 and calls[0].positions == list(range(500))
    cluster = ReadPlanner(Layout("ns"), cluster=True)
    cluster.guess = node.guess
    calls = next(cluster.steps(ids, 5, False))
    assert sorted(i for c in calls for i in c.positions) == list(range(500))
    for c in calls:
        assert len(c.keys) == 3 * len(c.positions)
        assert len({key_slot(k.encode()) for k in c.keys}) == 1
