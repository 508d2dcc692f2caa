"""Online publish benchmark against a private real redis-server on a free port.

Measures, in one run: publish time of N customers (target 1M < 60 s), Redis memory per
customer (target <= 250 bytes; INFO used_memory delta and MEMORY USAGE sampling of the
bucket hashes), one-round-trip read latency; and baselines on the same server: raw
pipelined SET of the same packed values (one string key per customer) and one hash per
customer (HSET of named fields), with the ratios.

Usage: python benchmarks/publish.py [--customers 1000000]
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
from tests.services import redis_server  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=1_000_000)
    args = ap.parse_args()
    n = args.customers
    customers = synthetic_customers(n)
    items = pl.DataFrame({"item_id": [str(i) for i in range(50_000)], "in_stock": True})
    packed, _ = pack_customers(customers)
    out: dict[str, object] = {"customers": n, "per_bucket": PER_BUCKET}
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as srv:
        r = redis.Redis.from_url(srv.url)
        base_s, base_mem = baseline_set(r, packed)
        hash_mem = baseline_hash_per_customer(r, customers, min(n, 100_000))
        store = OnlineStore(r, namespace="bench")
        rep = store.publish(customers, items)
        keys = [f"bench:v:{rep.version}:c:{b}" for b in range(0, rep.extra["buckets"], 97)][:500]
        sampled = sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)
        in_sampled = sum(int(r.hlen(k)) for k in keys)
        encodings = {r.object("encoding", k) for k in keys[:50]}
        ids = customers["customer_id"].sample(2000, seed=1).to_list()
        lat = []
        for cid in ids:
            t0 = time.perf_counter()
            store.read_customer(cid)
            lat.append(time.perf_counter() - t0)
        glat = []
        for cid in ids:
            t0 = time.perf_counter()
            r.get(f"bench:current:{cid}")
            glat.append(time.perf_counter() - t0)
        # a second publish shows the steady state (previous version TTL'd, not yet gone)
        rep2 = store.publish(customers, items)
    out.update(
        {
            "publish_s": round(rep.seconds, 2),
            "publish_target_s": 60,
            "publish_customers_per_s": round(n / rep.seconds),
            "second_publish_s": round(rep2.seconds, 2),
            "baseline_pipelined_set_s": round(base_s, 2),
            "baseline_customers_per_s": round(n / base_s),
            "ratio_publish_to_set_time": round(rep.seconds / base_s, 2),
            "bytes_per_customer_used_memory": round(rep.bytes_per_customer or -1, 1),
            "bytes_per_customer_memory_usage_sampled": round(sampled / max(in_sampled, 1), 1),
            "bytes_target": 250,
            "baseline_string_key_bytes_per_customer": round(base_mem, 1),
            "baseline_hash_per_customer_bytes": round(hash_mem, 1),
            "bucket_encodings": sorted(e.decode() for e in encodings),
            "read_customer_median_us": round(statistics.median(lat) * 1e6),
            "baseline_get_median_us": round(statistics.median(glat) * 1e6),
        }
    )
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
