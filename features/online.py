"""Online features in Redis: atomic versioned publish, one-round-trip reads, real-time events.

Key layout (namespace ``ns``, default "patron"; docs/loyalty.md has the full description):
  {ns}:current                  -> id of the current published version (the pointer)
  {ns}:v:{ver}:meta             -> hash: buckets, customers, items, created_at, codebook (JSON)
  {ns}:v:{ver}:c:{b}            -> hash bucket b = crc32(customer_id) % buckets:
                                   customer_id -> packed "tier|segment|churn|band|index|consent|
                                   next_tier|progress|typical_spend" (categoricals as codes)
  {ns}:v:{ver}:items            -> hash item_id -> "in_stock(0/1)|min_tier"
  {ns}:rt:recent:{customer_id}  -> sorted set item_id -> unix ts, capped, expiring
  {ns}:rt:spend:{customer_id}   -> hash version -> spend recorded since that version's build
  {ns}:rt:trend:{hour}          -> sorted set item_id -> purchases in that UTC hour, expiring

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
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import polars as pl

PACKED_FIELDS = (
    "tier",
    "segment",
    "churn_risk",
    "clv_band",
    "loyalty_index",
    "marketing_consent",
    "next_tier",
    "progress_to_next",
    "typical_spend",
)
CODED = ("tier", "segment", "clv_band", "next_tier")
ROUNDING = {"churn_risk": 3, "loyalty_index": 1, "progress_to_next": 2, "typical_spend": 2}
PER_BUCKET = 48
RECENT_CAP = 50
RECENT_TTL_S = 30 * 86_400
TREND_TTL_S = 8 * 86_400
SPEND_TTL_S = 30 * 86_400
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
local trend_ttl = tonumber(ARGV[4])
local spend_ttl = tonumber(ARGV[5])
local ver = redis.call('GET', ns .. ':current') or 'none'
local n = 0
local i = 6
while i <= #ARGV do
  local cid, item, ts, qty, amount, kind, hour =
    ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5], ARGV[i + 6]
  local rk = ns .. ':rt:recent:' .. cid
  if kind == 'purchase' then
    redis.call('ZADD', rk, ts, item)
    redis.call('ZREMRANGEBYRANK', rk, 0, -(cap + 1))
    redis.call('EXPIRE', rk, recent_ttl)
    local tk = ns .. ':rt:trend:' .. hour
    redis.call('ZINCRBY', tk, qty, item)
    redis.call('EXPIRE', tk, trend_ttl)
  end
  if tonumber(amount) ~= 0 then
    local sk = ns .. ':rt:spend:' .. cid
    redis.call('HINCRBYFLOAT', sk, ver, amount)
    redis.call('EXPIRE', sk, spend_ttl)
  end
  n = n + 1
  i = i + 7
end
return n
"""


@dataclass(frozen=True)
class CustomerOnline:
    """Everything serving needs about one customer, read in one round trip."""

    customer_id: str
    known: bool  # False when the current version has no row for this customer
    tier: str | None = None
    segment: str | None = None
    churn_risk: float | None = None
    clv_band: str | None = None
    loyalty_index: float | None = None
    marketing_consent: bool = False
    next_tier: str | None = None
    progress_to_next: float | None = None  # amount still needed at build time
    spend_since_build: float = 0.0  # from real-time events
    typical_spend: float | None = None  # average spend per item, for price-band boosts
    recent_items: tuple[tuple[str, float], ...] = ()  # (item_id, unix ts), newest first
    version: str | None = None


@dataclass(frozen=True)
class PurchaseEvent:
    customer_id: str
    item_id: str
    ts: datetime
    quantity: float = 1.0
    unit_price: float | None = None
    type: str = "purchase"  # purchase | return


@dataclass
class PublishReport:
    version: str
    customers: int
    items: int
    seconds: float
    bytes_per_customer: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def bucket_of(customer_id: str) -> int:
    """Version-independent hash; the bucket is this modulo the version's bucket count."""
    return zlib.crc32(customer_id.encode("utf-8"))


def _key(ns: str, *parts: object) -> str:
    return ":".join([ns, *(str(p) for p in parts)])


def _codebook(customers: pl.DataFrame) -> dict[str, list[str]]:
    tiers = sorted(
        set(customers["tier"].drop_nulls().unique().to_list())
        | set(customers["next_tier"].drop_nulls().unique().to_list())
    )
    return {
        "tier": tiers,
        "next_tier": tiers,
        "segment": sorted(customers["segment"].drop_nulls().unique().to_list()),
        "clv_band": sorted(customers["clv_band"].drop_nulls().unique().to_list()),
    }


def _typed_customers(customers: pl.DataFrame, cols: list[str]) -> pl.DataFrame:
    """customer_id and every packed field in its storage type (missing ones as nulls)."""
    return customers.select(
        pl.col("customer_id").cast(pl.String),
        *[
            (
                (pl.col(c) if c in cols else pl.lit(None)).cast(
                    pl.String if c in CODED else pl.Float64
                )
                if c != "marketing_consent"
                else (pl.col(c) if c in cols else pl.lit(False)).cast(pl.Boolean).fill_null(False)
            ).alias(c)  # a missing optional column becomes nulls under its own name
            for c in PACKED_FIELDS
        ],
    )


def pack_customers(customers: pl.DataFrame) -> tuple[pl.DataFrame, dict[str, list[str]]]:
    """customer_id, packed value string (vectorised) and the codebook used for categoricals."""
    cols = customers.columns
    if "customer_id" not in cols:
        raise ValueError("customers table needs a customer_id column")
    try:
        filled = _typed_customers(customers, cols)
    except pl.exceptions.PolarsError as exc:  # e.g. a text column where a number belongs
        msg = " ".join(str(exc).split())[:200]
        raise ValueError(f"customers table has a column of the wrong type: {msg}") from None
    book = _codebook(filled)
    parts: list[pl.Expr] = []
    for c in PACKED_FIELDS:
        if c in CODED:
            mapping = {v: str(i) for i, v in enumerate(book[c])}
            e = pl.col(c).replace_strict(mapping, default=None, return_dtype=pl.String)
        elif c == "marketing_consent":
            e = pl.col(c).cast(pl.Int8).cast(pl.String)
        else:
            e = pl.col(c).round(ROUNDING[c]).cast(pl.String).str.replace(r"\.0$", "")
        parts.append(e.fill_null(""))
    packed = filled.select("customer_id", pl.concat_str(parts, separator="|").alias("packed"))
    return packed, book


def _num(s: str) -> float | None:
    return float(s) if s else None


def parse_customer(
    customer_id: str,
    version: str | None,
    book: dict[str, list[str]] | None,
    packed: bytes | str | None,
    spend: bytes | str | None,
    recent: Sequence[Any],
) -> CustomerOnline:
    """Decode one reply of the read script (shared by the sync and async readers)."""
    items = tuple((_s(recent[i]), float(recent[i + 1])) for i in range(0, len(recent) - 1, 2))
    spent = float(spend) if spend else 0.0
    if not packed or book is None:
        return CustomerOnline(
            customer_id, False, spend_since_build=spent, recent_items=items, version=version
        )
    f = _s(packed).split("|")

    def code(name: str, v: str) -> str | None:
        return book[name][int(v)] if v else None

    return CustomerOnline(
        customer_id=customer_id,
        known=True,
        tier=code("tier", f[0]),
        segment=code("segment", f[1]),
        churn_risk=_num(f[2]),
        clv_band=code("clv_band", f[3]),
        loyalty_index=_num(f[4]),
        marketing_consent=f[5] == "1",
        next_tier=code("next_tier", f[6]),
        progress_to_next=_num(f[7]),
        spend_since_build=spent,
        typical_spend=_num(f[8]),
        recent_items=items,
        version=version,
    )


def _s(v: bytes | str) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else v


def _read_args(
    ns: str, cached: str | None, ids: Sequence[str], k: int, spend: bool = True
) -> list[Any]:
    args: list[Any] = [ns, cached or "", k, 1 if spend else 0]
    for cid in ids:
        args += [cid, bucket_of(cid)]
    return args


def _event_args(ns: str, events: Sequence[PurchaseEvent]) -> list[Any]:
    args: list[Any] = [ns, RECENT_CAP, RECENT_TTL_S, TREND_TTL_S, SPEND_TTL_S]
    for e in events:
        if e.type not in ("purchase", "return"):
            raise ValueError(f"event type must be 'purchase' or 'return', got {e.type!r}")
        ts = e.ts.timestamp()
        qty = abs(e.quantity) if e.type == "purchase" else -abs(e.quantity)
        amount = qty * (e.unit_price or 0.0)
        args += [e.customer_id, e.item_id, ts, abs(qty), amount, e.type, int(ts // 3600)]
    return args


class _Codebooks:
    """Codebooks by version, so the read script only sends one when the version changed.

    ``latest`` is what the next read announces as cached; replies always carry their own
    version, so concurrent readers (async) decode each reply with the right codebook.
    """

    def __init__(self) -> None:
        self.latest: str | None = None
        self.books: dict[str, dict[str, list[str]]] = {}

    def update(
        self, version: bytes | str | None, raw: bytes | str | None
    ) -> tuple[str | None, dict[str, list[str]] | None]:
        ver = _s(version) if version else None
        if ver is None:
            return None, None
        if raw:
            self.books[ver] = json.loads(_s(raw))
            while len(self.books) > 8:
                self.books.pop(next(iter(self.books)))
            self.latest = ver
        book = self.books.get(ver)
        if book is None:
            self.latest = None  # the next read asks for the codebook again
        return ver, book


class OnlineStore:
    """Sync (redis.Redis) access: publish jobs, tests, batch picks."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        self.r = client
        self.ns = namespace
        self._read = client.register_script(_READ_LUA)
        self._record = client.register_script(_RECORD_LUA)
        self._books = _Codebooks()

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
            self._expire_version(_s(previous), ttl_s)
        per = (mem1 - mem0) / n if n and mem0 is not None and mem1 is not None else None
        return PublishReport(
            version=version,
            customers=n,
            items=n_items,
            seconds=time.perf_counter() - t0,
            bytes_per_customer=per,
            extra={"buckets": buckets, "previous": _s(previous) if previous else None},
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
        return _s(v) if v else None

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
        ids = [_s(k) for k in raw]
        vals = [_s(v).split("|", 1) for v in raw.values()]
        return pl.DataFrame(
            {
                "item_id": ids,
                "in_stock": [v[0] == "1" for v in vals],
                "min_tier": [v[1] or None for v in vals],
            },
            schema=schema,
        )

    def read_trending(
        self, hours: int = 24, k: int = 50, now: datetime | None = None
    ) -> list[tuple[str, float]]:
        """Items with the most real-time purchases over the last ``hours`` UTC hours."""
        keys = _trend_keys(self.ns, hours, now)
        rows = self.r.zunion(keys, withscores=True)
        rows = sorted(rows, key=lambda r: -r[1])[:k]
        return [(_s(i), float(s)) for i, s in rows]

    # ---- real-time -----------------------------------------------------------------------
    def record_events(self, events: Sequence[PurchaseEvent]) -> int:
        """Apply purchase/return events to the real-time keys atomically; returns the count."""
        if not events:
            return 0
        return int(self._record(args=_event_args(self.ns, events)))


def _trend_keys(ns: str, hours: int, now: datetime | None) -> list[str]:
    hour = int((now.timestamp() if now else time.time()) // 3600)
    return [_key(ns, "rt", "trend", h) for h in range(hour - hours + 1, hour + 1)]


class AsyncOnlineStore:
    """The same over redis.asyncio for the API; same key layout and parsing."""

    def __init__(self, client: Any, namespace: str = "patron") -> None:
        self.r = client
        self.ns = namespace
        self._read = client.register_script(_READ_LUA)
        self._record = client.register_script(_RECORD_LUA)
        self._books = _Codebooks()

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
        return _s(v) if v else None

    async def read_trending(
        self, hours: int = 24, k: int = 50, now: datetime | None = None
    ) -> list[tuple[str, float]]:
        rows = await self.r.zunion(_trend_keys(self.ns, hours, now), withscores=True)
        rows = sorted(rows, key=lambda r: -r[1])[:k]
        return [(_s(i), float(s)) for i, s in rows]
