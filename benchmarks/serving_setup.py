"""The serving benchmark's fixtures (benchmarks/serving.py): the synthetic bundle with its
HNSW index, its recall and the rules' cost on one request, and the customers published to
a real redis-server."""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from benchmarks.factors import clustered_factors, random_rows

ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def cid(u: int) -> str:
    return f"c{u:07d}"


# ----------------------------------------------------------------------------- bundle
def build_bundle(
    out: Path,
    n_items: int,
    n_customers: int,
    dim: int,
    depth: int,
    ef: int,
    *,
    purchases: int = 20,
    neighbours: int = 200,
    seed: int = 0,
) -> None:
    import faiss
    import polars as pl

    from features.schemas import DEFAULT_TIERS
    from patron.bundle import BundleData, Manifest, write_bundle
    from patron.scoring.rows import candidate_scores
    from serving.index import build_index, precompute_candidates, set_ef_search, write_index

    rng = np.random.default_rng(seed)
    y, x, item_cluster = clustered_factors(n_items, n_customers, dim, rng)
    ui = random_rows(n_customers, n_items, purchases, rng)
    ui.sum_duplicates()
    cp = random_rows(n_items, n_items, neighbours, rng, decay=True)
    pop_score = rng.pareto(1.5, n_items)
    order = np.argsort(-pop_score)[:500]
    cats = np.array([f"cat{c % 50}" for c in item_cluster])
    frames = [pl.DataFrame({"scope": "overall", "key": "", "item_idx": order})]
    for t in DEFAULT_TIERS:
        frames.append(pl.DataFrame({"scope": "tier", "key": t, "item_idx": rng.permutation(order)}))
    pop = pl.concat(
        [
            f.with_columns(
                pl.col("item_idx").cast(pl.Int32),
                pl.Series("score", np.linspace(1, 0.01, f.height)),
                pl.int_range(pl.len()).cast(pl.Int32).alias("rank"),
            )
            for f in frames
        ]
    )
    catalog = pl.DataFrame(
        {
            "item_id": [f"i{j:06d}" for j in range(n_items)],
            "category": cats,
            "price": rng.uniform(5, 200, n_items),
            "in_stock": rng.random(n_items) > 0.05,
            "min_tier": pl.Series(
                ["gold" if v else None for v in rng.random(n_items) < 0.02], dtype=pl.String
            ),
            "premium": rng.random(n_items) < 0.05,
            "on_promo": rng.random(n_items) < 0.1,
        }
    )
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    t0 = time.perf_counter()
    index = build_index(y)
    log(f"built {type(index).__name__} over {n_items} items in {time.perf_counter() - t0:.0f}s")
    table = None
    if depth > 0:  # as training does (training/bundle_builder.py): efSearch = depth
        t0 = time.perf_counter()
        table = precompute_candidates(index, x, depth, threads=os.cpu_count(), ef=depth)
        set_ef_search(index, ef)
        log(
            f"precomputed {depth} neighbours of {n_customers} customers in "
            f"{time.perf_counter() - t0:.0f}s"
        )
    with tempfile.TemporaryDirectory() as tmp:
        write_index(index, Path(tmp) / "faiss.index")
        write_bundle(
            BundleData(
                customer_ids=np.array([cid(u) for u in range(n_customers)]),
                item_ids=np.array([f"i{j:06d}" for j in range(n_items)]),
                user_factors=x,
                item_factors=y,
                copurchase=cp,
                user_items=ui,
                popularity=pop,
                catalog=catalog,
                manifest=Manifest(
                    model_version="bench",
                    params={"factors": dim, "regularization": 0.05, "alpha": 2.0},
                ),
                als_candidates=table,
                als_scores=None if table is None else candidate_scores(table, y, x),
            ),
            out,
            faiss_index_file=Path(tmp) / "faiss.index",
        )


def index_recall(bundle: Path, ef: int, n_queries: int = 200) -> float:
    """Recall@10 of the bundle's index at this efSearch against exact search, on customer
    vectors (the queries serving sends)."""
    import faiss

    from serving.index import load_index, set_ef_search

    y = np.load(bundle / "item_factors.npy")
    x = np.load(bundle / "user_factors.npy", mmap_mode="r")
    q = np.ascontiguousarray(x[:: max(1, len(x) // n_queries)][:n_queries], dtype=np.float32)
    index = load_index(bundle / "faiss.index", len(y), y.shape[1])
    set_ef_search(index, ef)
    exact = faiss.IndexFlatIP(y.shape[1])
    exact.add(y)
    _, got = index.search(q, 10)
    _, want = exact.search(q, 10)
    return round(
        float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, want, strict=True)])), 4
    )


def rules_per_request(bundle: Path, ef: int, n: int = 5_000) -> dict[str, object]:
    """The default rules applied to one request's candidates, in-process, on this bundle's
    customers (benchmarks/picks.py ``per_request``): p50/p99 wall and CPU milliseconds."""
    from benchmarks.picks import per_request
    from serving.model import load_model
    from serving.rules.loader import load_rules

    model = load_model(bundle, ef_search=ef)
    out = per_request(model, load_rules(), n, 10, customer_id=cid)
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}


# ----------------------------------------------------------------------------- redis
def publish(url: str, n_customers: int, n_items: int, namespace: str) -> dict[str, float]:
    import polars as pl

    from features.online import OnlineStore, PurchaseEvent
    from tests.services import redis_client

    rng = np.random.default_rng(1)
    tiers = np.array(["bronze", "silver", "gold", "platinum"])
    customers = pl.DataFrame(
        {
            "customer_id": [cid(u) for u in range(n_customers)],
            "tier": tiers[rng.choice(4, n_customers, p=[0.6, 0.25, 0.1, 0.05])],
            "segment": np.array(["new", "regular", "high-value", "at-risk"])[
                rng.integers(0, 4, n_customers)
            ],
            "churn_risk": rng.random(n_customers),
            "clv_band": np.array(["low", "mid", "high"])[rng.integers(0, 3, n_customers)],
            "marketing_consent": rng.random(n_customers) < 0.7,
            "next_tier": tiers[np.minimum(3, rng.integers(1, 4, n_customers))],
            "loyalty_index": rng.uniform(0, 100, n_customers),
            "progress_to_next": rng.uniform(0, 500, n_customers),
            "typical_spend": rng.uniform(5, 100, n_customers),
        }
    )
    items = pl.DataFrame(
        {
            "item_id": [f"i{j:06d}" for j in range(n_items)],
            "in_stock": [True] * n_items,
            "min_tier": [None] * n_items,
        },
        schema={"item_id": pl.String, "in_stock": pl.Boolean, "min_tier": pl.String},
    )
    client = redis_client(url)
    store = OnlineStore(client, namespace=namespace)
    rep = store.publish(customers, items)
    now = datetime.now(UTC)
    n_rt = min(50_000, n_customers)
    buyers = rng.choice(n_customers, n_rt, replace=False)
    events = [
        PurchaseEvent(cid(int(u)), f"i{int(j):06d}", now - timedelta(hours=int(h)), 1.0, 20.0)
        for u in buyers
        for j, h in zip(rng.integers(0, n_items, 3), rng.integers(1, 200, 3), strict=True)
    ]
    for lo in range(0, len(events), 2_000):
        store.record_events(events[lo : lo + 2_000])
    client.close()
    return {"publish_s": rep.seconds, "bytes_per_customer": rep.bytes_per_customer or -1.0}
