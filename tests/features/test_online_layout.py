"""The online store's key layout (no server): every key of one customer in one cluster slot."""

from __future__ import annotations

import pytest
from redis.crc import key_slot

from features.online_layout import SHARDS, Layout, bucket_count, group_by_slot


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


def test_batch_groups_are_one_slot_each_on_a_cluster_and_one_call_on_a_node() -> None:
    lay = Layout("ns")
    ids = [f"c{i}" for i in range(500)]
    assert list(group_by_slot(lay, ids, cluster=False)) == [list(range(500))]
    groups = list(group_by_slot(lay, ids, cluster=True))
    assert sorted(i for g in groups for i in g) == list(range(500))
    for g in groups:
        keys = [k for i in g for k in (lay.recent(ids[i]), lay.pointer(lay.shard(ids[i])))]
        assert len({key_slot(k.encode()) for k in keys}) == 1
