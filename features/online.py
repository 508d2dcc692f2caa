"""Online features in Redis: atomic versioned publish, one-round-trip reads, real-time events.

(The packed row format and its decoding are features/online_codec.py, re-exported here.)

Key layout (namespace ``ns``, default "patron"; docs/loyalty.md has the full description):
  {ns}:current                  -> id of the current published version (the pointer)
  {ns}:v:{ver}:meta             -> hash: buckets, customers, items, created_at, codebook (JSON)
  {ns}:v:{ver}:c:{b}            -> hash bucket b = crc32(customer_id) % buckets:
                                   customer_id -> packed "tier|segment|churn|band|index|consent|
                                   next_tier|progress|typical_spend" (categoricals as codes)
  {ns}:v:{ver}:items            -> hash item_id -> "in_stock(0/1)|min_tier"
  {ns}:rt:recent:{customer_id}  -> sorted set item_id -> unix ts, capped, expiring
  {ns}:rt:spend:{customer_id}   -> hash version -> spend recorded since that version's build
  {ns}:rt:event:{event_id}      -> "1" while an event id counts as applied (7 days)

Buckets hold ~48 customers each so they stay listpack-encoded under the default
hash-max-listpack-entries 128 / -value 64 (no server config change needed): ~70 bytes per
customer instead of ~200+ for one hash per customer. A new version is written in full with
pipelined writes, then ``SET {ns}:current`` flips to it in one command, then the previous
version's keys get a TTL. Readers run one Lua script (EVALSHA) that reads the pointer and the
customer's keys atomically: one round trip, never a mix of two versions.
Limitation: the scripts touch keys they do not declare, so they need a single Redis node
(or Redis Cluster with every key of a namespace in one hash slot via a ``{tag}`` namespace).
"""

from __future__ import annotations

import json
import math
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

from features.online_codec import (
    CODED,
    PACKED_FIELDS,
    ROUNDING,
    Codebooks,
    CustomerOnline,
    PurchaseEvent,
    bucket_of,
    pack_customers,
    parse_customer,
    text,
)

__all__ = [
    "CODED",
    "PACKED_FIELDS",
    "PER_BUCKET",
    "ROUNDING",
    "AsyncOnlineStore",
    "CustomerOnline",
    "OnlineStore",
    "PublishReport",
    "PurchaseEvent",
    "bucket_of",
    "pack_customers",
    "parse_customer",
]

PER_BUCKET = 48
RECENT_CAP = 50
RECENT_TTL_S = 30 * 86_400
SPEND_TTL_S = 30 * 86_400
EVENT_ID_TTL_S = 7 * 86_400  # a retried event (same event_id) within this is applied once
PIPELINE_CHUNK = 1_000

_READ_LUA = """
local ns = ARGV[1]
local cached = ARGV[2]
local k = tonumber(ARGV[3])
local with_spend = ARGV[4] == '1'
local ver = redis.call('GET', ns .. ':current')
local buckets = nil
local codebook = false
if ver then
  local meta = redis.call('HMGET', ns .. ':v:' .. ver .. ':meta', 'buckets', 'codebook')
  buckets = tonumber(meta[1])
  if ver ~= cached then codebook = meta[2] end
end
local out = {ver, codebook}
local i = 5
while i <= #ARGV do
  local cid = ARGV[i]
  local packed = false
  local spend = false
  if buckets then
    local b = tonumber(ARGV[i + 1]) % buckets
    packed = redis.call('HGET', ns .. ':v:' .. ver .. ':c:' .. string.format('%d', b), cid)
    if with_spend then
      spend = redis.call('HGET', ns .. ':rt:spend:' .. cid, ver)
    end
  end
  local recent = redis.call('ZREVRANGE', ns .. ':rt:recent:' .. cid, 0, k - 1, 'WITHSCORES')
  out[#out + 1] = {packed, spend, recent}
  i = i + 2
end
return out
"""

_RECORD_LUA = """
local ns = ARGV[1]
local cap = tonumber(ARGV[2])
local recent_ttl = tonumber(ARGV[3])
local spend_ttl = tonumber(ARGV[4])
local id_ttl = tonumber(ARGV[5])
local ver = redis.call('GET', ns .. ':current') or 'none'
local n = 0
local i = 6
while i <= #ARGV do
  local cid, item, ts, amount, kind, eid =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  -- an event with an id is applied once: a retry within id_ttl finds its id taken
  local fresh = eid == '' or redis.call('SET', ns .. ':rt:event:' .. eid, '1', 'NX', 'EX', id_ttl)
  if fresh then
    local rk = ns .. ':rt:recent:' .. cid
    if kind == 'purchase' then
      redis.call('ZADD', rk, ts, item)
      redis.call('ZREMRANGEBYRANK', rk, 0, -(cap + 1))
      redis.call('EXPIRE', rk, recent_ttl)
    end
    if tonumber(amount) ~= 0 then
      local sk = ns .. ':rt:spend:' .. cid
      redis.call('HINCRBYFLOAT', sk, ver, amount)
      redis.call('EXPIRE', sk, spend_ttl)
    end
    n = n + 1
  end
  i = i + 6
end
return n
"""


@dataclass
class PublishReport:
    version: str
    customers: int
    items: int
    seconds: float
    bytes_per_customer: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _key(ns: str, *parts: object) -> str:
    return ":".join([ns, *(str(p) for p in parts)])


def _read_args(
    ns: str, cached: str | None, ids: Sequence[str], k: int, spend: bool = True
) -> list[Any]:
    args: list[Any] = [ns, cached or "", k, 1 if spend else 0]
    for cid in ids:
        args += [cid, bucket_of(cid)]
    return args


def _event_args(ns: str, events: Sequence[PurchaseEvent]) -> list[Any]:
    args: list[Any] = [ns, RECENT_CAP, RECENT_TTL_S, SPEND_TTL_S, EVENT_ID_TTL_S]
    for e in events:
        if e.type not in ("purchase", "return"):
            raise ValueError(f"event type must be 'purchase' or 'return', got {e.type!r}")
        ts = e.ts.timestamp()
        qty = abs(e.quantity) if e.type == "purchase" else -abs(e.quantity)
        amount = qty * (e.unit_price or 0.0)
        args += [e.customer_id, e.item_id, ts, amount, e.type, e.event_id or ""]
    return args


class OnlineStore:
    """Sync (redis.Redis) access: publish jobs, tests, batch picks."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        self.r = client
        self.ns = namespace
        self._read = client.register_script(_READ_LUA)
        self._record = client.register_script(_RECORD_LUA)
        self._books = Codebooks()

    # ---- publish -------------------------------------------------------------------------
    def publish(
        self, customers: pl.DataFrame, items: pl.DataFrame, ttl_s: int = 86_400
    ) -> PublishReport:
        """Write a complete new version, flip the pointer, expire the previous version."""
        t0 = time.perf_counter()
        packed, book = pack_customers(customers)
        n = packed.height
        buckets = max(1, math.ceil(n / PER_BUCKET))
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
        try:
            pipe = self.r.pipeline(transaction=False)
            queued = 0
            for b, cids, vals in grouped:
                flat: list[str] = [v for pair in zip(cids, vals, strict=True) for v in pair]
                pipe.execute_command("HSET", _key(self.ns, "v", version, "c", b), *flat)
                queued += 1
                if queued >= PIPELINE_CHUNK:
                    pipe.execute()
                    queued = 0
            pipe.execute()
            mem1 = self._used_memory()
            n_items = self._write_items(version, items)
            self.r.hset(
                _key(self.ns, "v", version, "meta"),
                mapping={
                    "buckets": buckets,
                    "customers": n,
                    "items": n_items,
                    "created_at": datetime.now().astimezone().isoformat(),
                    "codebook": json.dumps(book),
                },
            )
        except Exception:
            self._delete_version(version, buckets)
            raise
        previous = self.r.set(_key(self.ns, "current"), version, get=True)  # the atomic flip
        if previous:
            self._expire_version(text(previous), ttl_s)
        per = (mem1 - mem0) / n if n and mem0 is not None and mem1 is not None else None
        return PublishReport(
            version=version,
            customers=n,
            items=n_items,
            seconds=time.perf_counter() - t0,
            bytes_per_customer=per,
            extra={"buckets": buckets, "previous": text(previous) if previous else None},
        )

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
        key = _key(self.ns, "v", version, "items")
        pipe = self.r.pipeline(transaction=False)
        for chunk in flags.iter_slices(5_000):
            flat = [v for pair in zip(chunk["item_id"], chunk["v"], strict=True) for v in pair]
            pipe.execute_command("HSET", key, *flat)
        pipe.execute()
        return flags.height

    def _version_keys(self, version: str) -> list[str]:
        raw = self.r.hget(_key(self.ns, "v", version, "meta"), "buckets")
        buckets = int(raw) if raw else 0
        return self._keys_for(version, buckets)

    def _keys_for(self, version: str, buckets: int) -> list[str]:
        base = [_key(self.ns, "v", version, "meta"), _key(self.ns, "v", version, "items")]
        return base + [_key(self.ns, "v", version, "c", b) for b in range(buckets)]

    def _expire_version(self, version: str, ttl_s: int) -> None:
        keys = self._version_keys(version)
        pipe = self.r.pipeline(transaction=False)
        for i, k in enumerate(keys, 1):
            pipe.expire(k, ttl_s)
            if i % PIPELINE_CHUNK == 0:
                pipe.execute()
        pipe.execute()

    def _delete_version(self, version: str, buckets: int) -> None:
        keys = self._keys_for(version, buckets)
        for i in range(0, len(keys), PIPELINE_CHUNK):
            self.r.delete(*keys[i : i + PIPELINE_CHUNK])

    def _used_memory(self) -> int | None:
        try:
            return int(self.r.info("memory")["used_memory"])
        except Exception:  # INFO may be disabled on managed servers
            return None

    # ---- read ----------------------------------------------------------------------------
    def current_version(self) -> str | None:
        v = self.r.get(_key(self.ns, "current"))
        return text(v) if v else None

    def read_customer(self, customer_id: str, recent_k: int = 20) -> CustomerOnline:
        return self.read_customers([customer_id], recent_k)[0]

    def read_customers(
        self, customer_ids: Sequence[str], recent_k: int = 20
    ) -> list[CustomerOnline]:
        """All customers in one EVALSHA round trip (pointer, features, real-time keys)."""
        if not customer_ids:
            return []
        reply = self._read(args=_read_args(self.ns, self._books.latest, customer_ids, recent_k))
        ver, book = self._books.update(reply[0], reply[1])
        if ver is not None and book is None:  # codebook evicted: ask again (rare)
            reply = self._read(args=_read_args(self.ns, None, customer_ids, recent_k))
            ver, book = self._books.update(reply[0], reply[1])
        return [
            parse_customer(cid, ver, book, *row)
            for cid, row in zip(customer_ids, reply[2:], strict=True)
        ]

    def read_item_flags(self) -> pl.DataFrame:
        """item_id, in_stock, min_tier of the current version (serving caches it)."""
        schema = {"item_id": pl.String, "in_stock": pl.Boolean, "min_tier": pl.String}
        ver = self.current_version()
        if ver is None:
            return pl.DataFrame(schema=schema)
        raw = self.r.hgetall(_key(self.ns, "v", ver, "items"))
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
    def record_events(self, events: Sequence[PurchaseEvent]) -> int:
        """Apply purchase/return events to the real-time keys atomically; returns how many
        were applied (an event whose ``event_id`` was applied before is not applied again)."""
        if not events:
            return 0
        return int(self._record(args=_event_args(self.ns, events)))


class AsyncOnlineStore:
    """The same over redis.asyncio for the API; same key layout and parsing."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        self.r = client
        self.ns = namespace
        self._read = client.register_script(_READ_LUA)
        self._record = client.register_script(_RECORD_LUA)
        self._books = Codebooks()

    async def read_customer(self, customer_id: str, recent_k: int = 20) -> CustomerOnline:
        return (await self.read_customers([customer_id], recent_k))[0]

    async def read_customers(
        self, customer_ids: Sequence[str], recent_k: int = 20, spend: bool = True
    ) -> list[CustomerOnline]:
        """Many customers in one round trip; ``spend=False`` skips the spend-since-build
        counter (``spend_since_build`` is then 0: recommendations do not use it)."""
        if not customer_ids:
            return []
        reply = await self._read(
            args=_read_args(self.ns, self._books.latest, customer_ids, recent_k, spend)
        )
        ver, book = self._books.update(reply[0], reply[1])
        if ver is not None and book is None:
            reply = await self._read(args=_read_args(self.ns, None, customer_ids, recent_k, spend))
            ver, book = self._books.update(reply[0], reply[1])
        return [
            parse_customer(cid, ver, book, *row)
            for cid, row in zip(customer_ids, reply[2:], strict=True)
        ]

    async def record_events(self, events: Sequence[PurchaseEvent]) -> int:
        if not events:
            return 0
        return int(await self._record(args=_event_args(self.ns, events)))

    async def current_version(self) -> str | None:
        v = await self.r.get(_key(self.ns, "current"))
        return text(v) if v else None
