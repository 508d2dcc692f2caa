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


def test_packed_rows_carry_the_clv_interval_and_old_rows_decode_without() -> None:
    import polars as pl

    from features.online_codec import pack_customers, parse_customer

    df = pl.DataFrame(
        {"customer_id": ["a", "b"], "tier": ["gold", "gold"], "clv_low": [1.234, None],
         "clv_high": [5.0, None]}
    )  # fmt: skip
    packed, book = pack_customers(df)
    rows = dict(packed.iter_rows())
    a = parse_customer("a", "v1", book, rows["a"], None, [])
    b = parse_customer("b", "v1", book, rows["b"], None, [])
    assert (a.clv_low, a.clv_high) == (1.23, 5.0) and (b.clv_low, b.clv_high) == (None, None)
    old = "|".join(rows["a"].split("|")[:9])  # a row of a version published before the interval
    c = parse_customer("a", "v0", book, old, None, [])
    assert c.known and c.tier == "gold" and c.clv_low is None and c.clv_high is None
