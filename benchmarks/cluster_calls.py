"""Batch reads on Redis Cluster: per-node pipelines (features.online_pipeline.py) against
redis-py's ClusterPipeline, and a single node for reference, in one run.

    PYTHONPATH=. python benchmarks/cluster_calls.py [--customers 100000] [--batch 32]

Publishes the same synthetic customers to a private redis-server and a private 3+3 cluster
(loopback), then times ``AsyncOnlineStore.read_customers`` on random batches (the API's
micro-batcher sends such batches under load): on the cluster once as shipped and once with
the calls sent through ``ClusterPipeline`` (the previous code, kept here as the baseline),
in alternating rounds. Prints the medians per batch and the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.publish import synthetic_customers  # noqa: E402
from features.online import AsyncOnlineStore, OnlineStore  # noqa: E402
from features.online_scripts import Call  # noqa: E402
from patron.redis_connect import connect_async  # noqa: E402
from tests.services import redis_client, redis_cluster, redis_server  # noqa: E402


class ClusterPipelineStore(AsyncOnlineStore):
    """The baseline: every call through redis-py's ClusterPipeline."""

    async def _run(
        self, script: Any, calls: list[Call], tail: Any = None
    ) -> tuple[list[Any], list[Any]]:
        if len(calls) == 1:
            return [await script(keys=calls[0].keys, args=calls[0].args)], []
        pipe = self.r.pipeline()
        for c in calls:
            pipe.execute_command("EVALSHA", script.sha, len(c.keys), *c.keys, *c.args)
        return list(await pipe.execute(raise_on_error=False)), []


def server_cpu(url: str, cluster: bool) -> float:
    """CPU seconds the Redis server (every node of a cluster) has used."""
    info = redis_client(url).info("cpu", **({"target_nodes": "all"} if cluster else {}))
    nodes = list(info.values()) if cluster else [info]
    return sum(float(n["used_cpu_user"]) + float(n["used_cpu_sys"]) for n in nodes)


async def time_batches(
    store: AsyncOnlineStore, ids: list[str], batch: int, n: int, url: str
) -> tuple[float, float, float]:
    """Median wall microseconds per batch read of ``n`` random batches, and the client's and
    the server's mean CPU microseconds per batch."""
    rng = random.Random(7)
    await store.read_customers(rng.sample(ids, batch))  # warm: pointer, scripts
    laps = []
    cpu0, srv0 = time.process_time(), server_cpu(url, store.cluster)
    for _ in range(n):
        chosen = rng.sample(ids, batch)
        t0 = time.perf_counter()
        rows = await store.read_customers(chosen, spend=False)
        laps.append(time.perf_counter() - t0)
        assert all(r.known for r in rows), "a published customer read as unknown"
    client_cpu = (time.process_time() - cpu0) / n * 1e6
    srv_cpu = (server_cpu(url, store.cluster) - srv0) / n * 1e6
    return statistics.median(laps) * 1e6, client_cpu, srv_cpu


async def measure(
    url: str, cluster: bool, ids: list[str], args: argparse.Namespace
) -> dict[str, Any]:
    client = connect_async(url, cluster)
    kinds = {"shipped": AsyncOnlineStore(client, "bench")}
    if cluster:
        kinds["cluster_pipeline"] = ClusterPipelineStore(client, "bench")
    out: dict[str, list[tuple[float, float, float]]] = {k: [] for k in kinds}
    order = list(kinds)
    for round_ in range(args.rounds):
        for k in order if round_ % 2 == 0 else order[::-1]:
            out[k].append(await time_batches(kinds[k], ids, args.batch, args.batches, url))
    await client.aclose()
    return {
        k: {
            name: round(statistics.median(lap[i] for lap in v), 1)
            for i, name in enumerate(("wall_us", "client_cpu_us", "server_cpu_us"))
        }
        for k, v in out.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", type=int, default=300, help="batches per round")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()
    customers = synthetic_customers(args.customers)
    items = pl.DataFrame({"item_id": ["1"], "in_stock": [True]})
    ids = customers["customer_id"].to_list()
    with tempfile.TemporaryDirectory() as tmp:
        for sub in ("node", "cluster"):
            (Path(tmp) / sub).mkdir()
        with redis_server(Path(tmp) / "node") as srv:
            OnlineStore(redis_client(srv.url), "bench").publish(customers, items)
            node = asyncio.run(measure(srv.url, False, ids, args))
        with redis_cluster(Path(tmp) / "cluster") as cl:
            OnlineStore(redis_client(cl.url), "bench").publish(customers, items)
            on = asyncio.run(measure(cl.url, True, ids, args))
    wall = {"single_node": node["shipped"], **{f"cluster_{k}": v for k, v in on.items()}}
    print(
        json.dumps(
            {
                "customers": args.customers,
                "batch": args.batch,
                "median_per_batch": wall,
                "cluster_pipeline_to_per_node_wall": round(
                    on["cluster_pipeline"]["wall_us"] / on["shipped"]["wall_us"], 2
                ),
                "cluster_to_single_node_wall": round(
                    on["shipped"]["wall_us"] / node["shipped"]["wall_us"], 2
                ),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
