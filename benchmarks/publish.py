"""Online publish benchmark against a private real redis-server on a free port.

Measures, in one run: publish time of N customers (target 1M < 60 s), Redis memory per
customer (target <= 250 bytes; INFO used_memory delta and MEMORY USAGE sampling of the
bucket hashes), one-round-trip read latency; and baselines on the same server: raw
pipelined SET of the same packed values (one string key per customer) and one hash per
customer (HSET of named fields), with the ratios.

With ``--redis-cluster`` the same publish and reads also run on a real 3-primary,
3-replica Redis Cluster on loopback ports, and the ratios to the single node are printed
(issue 13's targets: memory per customer within 10%, publish no slower than 1.5x).

Usage: python benchmarks/publish.py [--customers 1000000] [--redis-cluster]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl
import redis

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from features.online import PER_BUCKET, OnlineStore, pack_customers  # noqa: E402
from tests.services import redis_client, redis_cluster, redis_server  # noqa: E402


def synthetic_customers(n: int, seed: int = 5) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    tiers = np.array(["bronze", "silver", "gold", "platinum"])
    t = rng.choice(4, n, p=[0.6, 0.25, 0.1, 0.05])
    return pl.DataFrame(
        {
            "customer_id": pl.Series(rng.permutation(n) + 10_000_000).cast(pl.String),
            "tier": tiers[t],
            "segment": rng.choice(["high_value", "regular", "new", "at_risk"], n),
            "churn_risk": rng.random(n),
            "clv_band": rng.choice(["low", "medium", "high", "top"], n),
            "loyalty_index": np.round(rng.random(n) * 100, 1),
            "marketing_consent": rng.random(n) < 0.6,
            "next_tier": np.where(t < 3, tiers[np.minimum(t + 1, 3)], None),
            "progress_to_next": np.round(rng.gamma(2, 150, n), 2),
            "typical_spend": np.round(rng.gamma(3, 7, n), 2),
        }
    )


def flush(r: redis.Redis) -> None:
    """FLUSHALL ASYNC, then wait until lazy freeing is done (memory deltas stay honest)."""
    r.flushall(asynchronous=True)
    while int(r.info("memory").get("lazyfree_pending_objects", 0)) > 0:
        time.sleep(0.05)


def used(r: redis.Redis) -> int:
    return int(r.info("memory")["used_memory"])


def baseline_set(r: redis.Redis, packed: pl.DataFrame) -> tuple[float, float]:
    """Raw pipelined SET of each customer's packed value under its own key."""
    flush(r)
    m0 = used(r)
    t0 = time.perf_counter()
    pipe = r.pipeline(transaction=False)
    for i, (cid, val) in enumerate(packed.iter_rows()):
        pipe.set(f"b:{cid}", val)
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    secs = time.perf_counter() - t0
    per = (used(r) - m0) / packed.height
    flush(r)
    return secs, per


def baseline_hash_per_customer(r: redis.Redis, customers: pl.DataFrame, n: int) -> float:
    """Memory of the naive layout: one hash with named fields per customer (n sampled)."""
    flush(r)
    m0 = used(r)
    pipe = r.pipeline(transaction=False)
    for i, row in enumerate(customers.head(n).iter_rows(named=True)):
        cid = row.pop("customer_id")
        pipe.hset(f"h:{cid}", mapping={k: str(v) for k, v in row.items()})
        if i % 1000 == 999:
            pipe.execute()
    pipe.execute()
    per = (used(r) - m0) / n
    flush(r)
    return per


def median_us(fn: object, args: list[str]) -> float:
    lat = []
    for a in args:
        t0 = time.perf_counter()
        fn(a)  # type: ignore[operator]
        lat.append(time.perf_counter() - t0)
    return round(statistics.median(lat) * 1e6)


def publish_and_read(
    r: object, customers: pl.DataFrame, items: pl.DataFrame, ids: list[str]
) -> dict[str, object]:
    """One publish, reads, a second publish (the steady state: previous version TTL'd)."""
    store = OnlineStore(r, namespace="bench")
    rep = store.publish(customers, items)
    got = store.read_customers(ids[:1000])
    assert all(c.known for c in got), "a published customer did not read back"
    rep2 = store.publish(customers, items)
    return {
        "publish_s": round(rep.seconds, 2),
        "second_publish_s": round(rep2.seconds, 2),
        "bytes_per_customer_used_memory": round(rep.bytes_per_customer or -1, 1),
        "read_customer_median_us": median_us(store.read_customer, ids),
        "read_batch_of_16_median_us": median_us(
            lambda i: store.read_customers(ids[int(i) : int(i) + 16]),
            [str(k) for k in range(0, 1600, 16)],
        ),
        "version": rep.version,
        "buckets": rep.extra["buckets"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    ap.add_argument("--redis-cluster", action="store_true", help="also on a 3+3 cluster")
    args = ap.parse_args()
    n = args.customers
    customers = synthetic_customers(n)
    items = pl.DataFrame({"item_id": [str(i) for i in range(50_000)], "in_stock": True})
    packed, _ = pack_customers(customers)
    ids = customers["customer_id"].sample(2000, seed=1).to_list()
    out: dict[str, object] = {"customers": n, "per_bucket": PER_BUCKET}
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as srv:
        r = redis.Redis.from_url(srv.url)
        base_s, base_mem = baseline_set(r, packed)
        hash_mem = baseline_hash_per_customer(r, customers, min(n, 100_000))
        node = publish_and_read(r, customers, items, ids)
        store = OnlineStore(r, namespace="bench")
        ver = str(node["version"])
        keys = [store.keys.bucket(ver, b) for b in range(0, int(node["buckets"]), 97)][:500]
        sampled = sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)
        in_sampled = sum(int(r.hlen(k)) for k in keys)
        encodings = {r.object("encoding", k) for k in keys[:50]}
        glat = median_us(lambda cid: r.get(f"bench:current:{cid}"), ids)
    publish_s = float(node["publish_s"])  # type: ignore[arg-type]
    out.update(
        {
            **{k: v for k, v in node.items() if k != "version"},
            "publish_target_s": 60,
            "publish_customers_per_s": round(n / publish_s),
            "baseline_pipelined_set_s": round(base_s, 2),
            "baseline_customers_per_s": round(n / base_s),
            "ratio_publish_to_set_time": round(publish_s / base_s, 2),
            "bytes_per_customer_memory_usage_sampled": round(sampled / max(in_sampled, 1), 1),
            "bytes_target": 250,
            "baseline_string_key_bytes_per_customer": round(base_mem, 1),
            "baseline_hash_per_customer_bytes": round(hash_mem, 1),
            "bucket_encodings": sorted(e.decode() for e in encodings),
            "baseline_get_median_us": glat,
        }
    )
    if args.redis_cluster:
        with tempfile.TemporaryDirectory() as tmp, redis_cluster(Path(tmp)) as cluster:
            rc = redis_client(cluster.url)
            on = publish_and_read(rc, customers, items, ids)
            rc.close()
        on.pop("version")
        out["cluster_3_primaries"] = on
        out["cluster_to_node"] = {
            "publish_s": round(float(on["publish_s"]) / publish_s, 2),  # type: ignore[arg-type]
            "publish_target": 1.5,
            "bytes_per_customer": round(
                float(on["bytes_per_customer_used_memory"])  # type: ignore[arg-type]
                / float(node["bytes_per_customer_used_memory"]),  # type: ignore[arg-type]
                3,
            ),
            "bytes_target": 1.10,
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
