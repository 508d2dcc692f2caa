"""Redis clients for one node or a Redis Cluster, from ``PATRON_REDIS_URL`` and
``PATRON_REDIS_CLUSTER`` (every command and the API connect through here)."""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster


def connect(url: str, cluster: bool, **options: Any) -> redis.Redis | RedisCluster:
    """A sync client; with ``cluster`` the URL names any node and the rest are discovered."""
    if cluster:
        return RedisCluster.from_url(url, **options)
    return redis.Redis.from_url(url, **options)


def connect_async(url: str, cluster: bool, **options: Any) -> aioredis.Redis | AsyncRedisCluster:
    """The asyncio client of the same kind."""
    if cluster:
        return AsyncRedisCluster.from_url(url, **options)
    return aioredis.Redis.from_url(url, **options)
