"""Where the online store's keys live: one layout for a single Redis node and Redis Cluster.

Every customer belongs to one of ``SHARDS`` shards (``crc32(customer_id) % SHARDS``, fixed for a
namespace). All keys one customer's read or event touches carry the shard as a hash tag
(``{ns}:{<shard>}:...``), so they sit in one cluster slot and one Lua script reads them in one
round trip on one node:

  {ns}:{s}:current              -> hash: ver, buckets, codebook of the version shard s serves
                                   (the version pointer, one copy per shard)
  {ns}:{s}:v:{ver}:c:{b}        -> hash bucket b (b % SHARDS == s): customer_id -> packed row
  {ns}:{s}:rt:recent:{cid}      -> sorted set item_id -> unix ts, capped, expiring
  {ns}:{s}:rt:spend:{cid}       -> hash version -> spend recorded since that version's build
  {ns}:{s}:rt:event:{event_id}  -> "1" while an event id counts as applied for this customer

and keys nothing reads per request:

  {ns}:current                  -> id of the newest published version (set after every shard)
  {ns}:v:{ver}:meta             -> hash: buckets, customers, items, created_at, codebook (JSON)
  {ns}:v:{ver}:items            -> hash item_id -> "in_stock(0/1)|min_tier"

A version has ``buckets`` buckets, a multiple of ``SHARDS`` (about 48 customers each, so they
stay listpack-encoded), and a customer's bucket is ``crc32(customer_id) % buckets``: since
``buckets`` is a multiple of ``SHARDS``, the bucket's shard is the customer's shard.
docs/loyalty.md explains why a reader never mixes two versions for one customer.
"""

from __future__ import annotations

import math
from typing import Any

from redis.crc import key_slot

from features.online_codec import bucket_of

SHARDS = 1024  # hash tags per namespace; changing it needs a new namespace
PER_BUCKET = 48


def is_cluster(client: Any) -> bool:
    """True for redis-py's RedisCluster clients (sync or asyncio)."""
    from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster | AsyncRedisCluster)


def bucket_count(customers: int) -> int:
    """Buckets of a version with this many customers: a multiple of SHARDS."""
    return SHARDS * max(1, math.ceil(customers / (PER_BUCKET * SHARDS)))


class Layout:
    """Key names of one namespace."""

    def __init__(self, namespace: str) -> None:
        if not namespace or "{" in namespace or "}" in namespace:
            raise ValueError(f"a namespace is non-empty and has no braces, got {namespace!r}")
        self.ns = namespace
        self.tags = [f"{namespace}:{{{s}}}" for s in range(SHARDS)]
        self.pointers = [f"{tag}:current" for tag in self.tags]
        # the cluster slot of each shard's keys (the tag decides it)
        self.slots = [key_slot(p.encode()) for p in self.pointers]

    @staticmethod
    def shard(customer_id: str) -> int:
        return bucket_of(customer_id) % SHARDS

    def _tag(self, shard: int) -> str:
        return self.tags[shard]

    def pointer(self, shard: int) -> str:
        return self.pointers[shard]

    def read_keys(
        self, customer_id: str, version: str | None, buckets: int, spend: bool
    ) -> tuple[int, list[str]]:
        """The slot and keys of one customer's read: shard pointer, bucket of ``version``
        (the pointer again when no version is known: the script then reads only the
        pointer), recent set and, with ``spend``, the spend hash."""
        crc = bucket_of(customer_id)
        s = crc % SHARDS
        tag, ptr = self.tags[s], self.pointers[s]
        bucket = f"{tag}:v:{version}:c:{crc % buckets}" if version else ptr
        keys = [ptr, bucket, f"{tag}:rt:recent:{customer_id}"]
        if spend:
            keys.append(f"{tag}:rt:spend:{customer_id}")
        return self.slots[s], keys

    def bucket(self, version: str, bucket: int) -> str:
        return f"{self._tag(bucket % SHARDS)}:v:{version}:c:{bucket}"

    def customer_bucket(self, version: str, buckets: int, customer_id: str) -> str:
        return self.bucket(version, bucket_of(customer_id) % buckets)

    def recent(self, customer_id: str) -> str:
        return f"{self._tag(self.shard(customer_id))}:rt:recent:{customer_id}"

    def spend(self, customer_id: str) -> str:
        return f"{self._tag(self.shard(customer_id))}:rt:spend:{customer_id}"

    def event(self, customer_id: str, event_id: str) -> str:
        return f"{self._tag(self.shard(customer_id))}:rt:event:{event_id}"

    @property
    def current(self) -> str:
        return f"{self.ns}:current"

    def meta(self, version: str) -> str:
        return f"{self.ns}:v:{version}:meta"

    def items(self, version: str) -> str:
        return f"{self.ns}:v:{version}:items"

    def version_keys(self, version: str, buckets: int) -> list[str]:
        """Every key of one version (meta, items, buckets), for expiry or deletion."""
        keys = [self.meta(version), self.items(version)]
        return keys + [self.bucket(version, b) for b in range(buckets)]
