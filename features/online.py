"""Online features in Redis: atomic versioned publish, one-round-trip reads, real-time events.

The same code runs on one Redis node and on Redis Cluster (``redis.cluster.RedisCluster``
clients): the key layout is features/online_layout.py, the Lua scripts and their calls
features/online_scripts.py, how calls are sent features/online_calls.py and
features/online_pipeline.py, the packed row format
features/online_codec.py.

A publish writes a complete new version (pipelined; on a cluster the pipeline goes to each
node), then flips every shard's pointer to it (one transaction on a single node; per shard on a
cluster), then ``{ns}:current``, then gives the previous version's keys a TTL. A read of one
customer is one EVALSHA on one node; a batch is one call on a single node and one call per
slot, pipelined per node, on a cluster.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from features.online_calls import AsyncCalls, SyncCalls
from features.online_codec import (
    CODED,
    PACKED_FIELDS,
    ROUNDING,
    CustomerOnline,
    PurchaseEvent,
    bucket_of,
    pack_customers,
    parse_customer,
    text,
)
from features.online_layout import PER_BUCKET, SHARDS, bucket_count
from features.online_scripts import Durability, NotReplicated, event_calls

__all__ = [
    "CODED",
    "PACKED_FIELDS",
    "PER_BUCKET",
    "ROUNDING",
    "SHARDS",
    "AsyncOnlineStore",
    "CustomerOnline",
    "Durability",
    "NotReplicated",
    "OnlineStore",
    "PublishReport",
    "PurchaseEvent",
    "bucket_of",
    "pack_customers",
    "parse_customer",
]

PIPELINE_CHUNK = 1_000


@dataclass
class PublishReport:
    version: str
    customers: int
    items: int
    seconds: float
    bytes_per_customer: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _summed_memory(info: dict[str, Any]) -> int:
    """Memory the data takes on one node, or summed over a cluster's primaries (one INFO
    dict per node): used_memory less the replication buffers (a primary's backlog and output
    buffers for its replicas fill while a publish streams to them; they are not data)."""
    nodes = [info] if "used_memory" in info else list(info.values())
    return sum(
        int(n["used_memory"])
        - int(n.get("mem_replication_backlog", 0))
        - int(n.get("mem_clients_slaves", 0))
        for n in nodes
    )


class OnlineStore(SyncCalls):
    """Sync access (``redis.Redis`` or ``redis.cluster.RedisCluster``): publish jobs, tests,
    batch picks."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        super().__init__(client, namespace)

    # ---- publish -------------------------------------------------------------------------
    def publish(
        self, customers: pl.DataFrame, items: pl.DataFrame, ttl_s: int = 86_400
    ) -> PublishReport:
        """Write a complete new version, flip every shard's pointer, expire the previous
        version."""
        t0 = time.perf_counter()
        packed, book = pack_customers(customers)
        n = packed.height
        buckets = bucket_count(n)
        version = f"{int(time.time()):x}{secrets.token_hex(2)}"
        mem0 = self._used_memory()
        ids = packed["customer_id"].to_list()
        crc = pl.Series("b", [bucket_of(c) % buckets for c in ids], dtype=pl.UInt32)
        grouped = (
            packed.with_columns(crc)
            .group_by("b")
            .agg(pl.col("customer_id"), pl.col("packed"))
            .iter_rows()
        )
        codebook = json.dumps(book)
        try:
            pipe = self._pipeline()
            queued = 0
            for b, cids, vals in grouped:
                flat: list[str] = [v for pair in zip(cids, vals, strict=True) for v in pair]
                pipe.execute_command("HSET", self.keys.bucket(version, b), *flat)
                queued += 1
                if queued >= PIPELINE_CHUNK:
                    pipe.execute()
                    queued = 0
            pipe.execute()
            mem1 = self._used_memory()
            n_items = self._write_items(version, items)
            self.r.hset(
                self.keys.meta(version),
                mapping={
                    "buckets": buckets,
                    "customers": n,
                    "items": n_items,
                    "created_at": datetime.now().astimezone().isoformat(),
                    "codebook": codebook,
                },
            )
        except Exception:
            self._delete_version(version, buckets)
            raise
        previous = self._flip(version, buckets, codebook)
        if previous:
            self._expire_version(previous, ttl_s)
        per = (mem1 - mem0) / n if n and mem0 is not None and mem1 is not None else None
        return PublishReport(
            version=version,
            customers=n,
            items=n_items,
            seconds=time.perf_counter() - t0,
            bytes_per_customer=per,
            extra={"buckets": buckets, "previous": previous},
        )

    def _flip(self, version: str, buckets: int, codebook: str) -> str | None:
        """Point every shard at ``version``, then ``{ns}:current``; returns the previous
        version. One transaction on a single node (a batch read sees one version); on a
        cluster each shard flips on its own (each customer still sees one version)."""
        pointer = {"ver": version, "buckets": buckets, "codebook": codebook}
        pipe = self.r.pipeline() if self.cluster else self.r.pipeline(transaction=True)
        for s in range(SHARDS):
            pipe.hset(self.keys.pointer(s), mapping=pointer)
        if self.cluster:
            pipe.execute()
            previous = self.r.set(self.keys.current, version, get=True)
        else:
            pipe.set(self.keys.current, version, get=True)
            previous = pipe.execute()[-1]
        return text(previous) if previous else None

    def _write_items(self, version: str, items: pl.DataFrame) -> int:
        if items.height == 0:
            return 0
        cols = items.columns
        flags = items.select(
            pl.col("item_id").cast(pl.String),
            pl.concat_str(
                [
                    (pl.col("in_stock") if "in_stock" in cols else pl.lit(True))
                    .cast(pl.Boolean)
                    .fill_null(True)
                    .cast(pl.Int8)
                    .cast(pl.String),
                    (pl.col("min_tier") if "min_tier" in cols else pl.lit(None))
                    .cast(pl.String)
                    .fill_null(""),
                ],
                separator="|",
            ).alias("v"),
        )
        key = self.keys.items(version)
        pipe = self._pipeline()
        for chunk in flags.iter_slices(5_000):
            flat = [v for pair in zip(chunk["item_id"], chunk["v"], strict=True) for v in pair]
            pipe.execute_command("HSET", key, *flat)
        pipe.execute()
        return flags.height

    def _version_keys(self, version: str) -> list[str]:
        raw = self.r.hget(self.keys.meta(version), "buckets")
        return self.keys.version_keys(version, int(raw) if raw else 0)

    def _each_key(self, keys: list[str], command: str, *args: object) -> None:
        for i in range(0, len(keys), PIPELINE_CHUNK):
            pipe = self._pipeline()
            for k in keys[i : i + PIPELINE_CHUNK]:
                pipe.execute_command(command, k, *args)
            pipe.execute()

    def _expire_version(self, version: str, ttl_s: int) -> None:
        self._each_key(self._version_keys(version), "EXPIRE", ttl_s)

    def _delete_version(self, version: str, buckets: int) -> None:
        self._each_key(self.keys.version_keys(version, buckets), "DEL")

    def _used_memory(self) -> int | None:
        try:
            if self.cluster:
                return _summed_memory(self.r.info("memory", target_nodes=self.r.PRIMARIES))
            return _summed_memory(self.r.info("memory"))
        except Exception:  # INFO may be disabled on managed servers
            return None

    # ---- read ----------------------------------------------------------------------------
    def current_version(self) -> str | None:
        v = self.r.get(self.keys.current)
        return text(v) if v else None

    def read_customer(self, customer_id: str, recent_k: int = 20) -> CustomerOnline:
        return self.read_customers([customer_id], recent_k)[0]

    def read_customers(
        self, customer_ids: Sequence[str], recent_k: int = 20
    ) -> list[CustomerOnline]:
        """All customers: one EVALSHA on a single node, one per node on a cluster (features,
        real-time keys, each customer's version checked atomically)."""
        if not customer_ids:
            return []
        steps = self._planner.steps(customer_ids, recent_k, True)
        calls = next(steps)
        while True:
            try:
                calls = steps.send(self._run(self._read, calls)[0])
            except StopIteration as done:
                return list(done.value)

    def read_item_flags(self) -> pl.DataFrame:
        """item_id, in_stock, min_tier of the current version (serving caches it)."""
        schema = {"item_id": pl.String, "in_stock": pl.Boolean, "min_tier": pl.String}
        ver = self.current_version()
        if ver is None:
            return pl.DataFrame(schema=schema)
        raw = self.r.hgetall(self.keys.items(ver))
        ids = [text(k) for k in raw]
        vals = [text(v).split("|", 1) for v in raw.values()]
        return pl.DataFrame(
            {
                "item_id": ids,
                "in_stock": [v[0] == "1" for v in vals],
                "min_tier": [v[1] or None for v in vals],
            },
            schema=schema,
        )

    # ---- real-time -----------------------------------------------------------------------
    def record_events(
        self, events: Sequence[PurchaseEvent], durable: Durability | None = None
    ) -> int:
        """Apply purchase/return events to the real-time keys atomically per customer;
        returns how many were applied (an event whose ``event_id`` was applied before is not
        applied again). With ``durable``, raises NotReplicated unless enough replicas
        confirmed them."""
        calls = event_calls(self.keys, events, self.cluster)
        if not calls:
            return 0
        return self._recorded(*self._run(self._record, calls, self._tail(durable)), durable)


class AsyncOnlineStore(AsyncCalls):
    """The same over redis.asyncio (``Redis`` or ``RedisCluster``) for the API."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        super().__init__(client, namespace)

    async def read_customer(self, customer_id: str, recent_k: int = 20) -> CustomerOnline:
        return (await self.read_customers([customer_id], recent_k))[0]

    async def read_customers(
        self, customer_ids: Sequence[str], recent_k: int = 20, spend: bool = True
    ) -> list[CustomerOnline]:
        """Many customers in one round trip per node; ``spend=False`` skips the
        spend-since-build counter (``spend_since_build`` is then 0: recommendations do not
        use it)."""
        if not customer_ids:
            return []
        steps = self._planner.steps(customer_ids, recent_k, spend)
        calls = next(steps)
        while True:
            try:
                calls = steps.send((await self._run(self._read, calls))[0])
            except StopIteration as done:
                return list(done.value)

    async def record_events(
        self, events: Sequence[PurchaseEvent], durable: Durability | None = None
    ) -> int:
        calls = event_calls(self.keys, events, self.cluster)
        if not calls:
            return 0
        return self._recorded(*await self._run(self._record, calls, self._tail(durable)), durable)

    async def current_version(self) -> str | None:
        v = await self.r.get(self.keys.current)
        return text(v) if v else None
