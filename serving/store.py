"""The API's view of the online store: short timeouts, circuit breakers, degraded answers.

Wraps ``features.online.AsyncOnlineStore`` (or anything with the same methods). When Redis
fails or times out, reads return ``None`` (the caller answers from the bundle alone, marked
degraded) and Redis is skipped for ``retry_s`` so no request waits on a dead server; the
first call after that window probes Redis again, so the service recovers by itself.

Reads and writes have their own breaker: events failing (a full Redis refuses writes and
still serves reads) never degrade recommendations. Only an unreachable or slow Redis opens a
breaker; an error reply (``ResponseError``: the server is up and said no) fails that call
alone. A reachable store without a published feature version (e.g. restarted empty) reads as
``None`` too: answers are degraded and /readyz says why, instead of serving every customer as
an unknown one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, RedisClusterException, RedisError, ResponseError

from features.online import CustomerOnline, Durability, NotReplicated, PurchaseEvent
from patron.redis_connect import connect_async
from serving.attribution.store import AttributionStore, Outcome
from serving.errors import Unavailable

log = logging.getLogger("patron.serving")
# what a failing or unreachable store raises (RedisClusterException: e.g. no node covers a
# slot during a failover; it is not a RedisError)
_UNUSABLE = (RedisError, RedisClusterException, OSError, TimeoutError)
T = TypeVar("T")


class AsyncStore(Protocol):
    async def read_customer(self, customer_id: str) -> CustomerOnline: ...

    async def read_customers(
        self, customer_ids: Sequence[str], recent_k: int = 20, spend: bool = True
    ) -> list[CustomerOnline]: ...

    async def record_events(
        self, events: Sequence[PurchaseEvent], durable: Durability | None = None
    ) -> int: ...

    async def current_version(self) -> str | None: ...


StoreFactory = Callable[[Any, str], AsyncStore]


def default_store_factory(client: Any, namespace: str) -> AsyncStore:
    from features.online import AsyncOnlineStore

    return AsyncOnlineStore(client, namespace=namespace)


def make_client(url: str, timeout_ms: int, cluster: bool = False) -> Any:
    """An async pool (per node on a cluster) that fails fast: socket and connect timeouts of
    timeout_ms, timeouts never retried. A connection error is retried once, at once, on a
    fresh connection: after a Redis restart every pooled connection is dead, and without the
    retry each one failed its next command, answering degraded long after Redis was back. On
    a cluster the client also refreshes its slot map after such an error, which is how it
    finds a promoted replica."""
    timeout = timeout_ms / 1000.0
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "health_check_interval": 0,
        "max_connections": 256,
    }
    if not cluster:
        options["retry_on_timeout"] = False
    return connect_async(url, cluster, **options)


class OnlineGateway:
    """Reads and writes online features; tracks whether Redis is currently usable."""

    def __init__(
        self,
        client: Any,
        store: AsyncStore,
        timeout_ms: int,
        retry_s: float,
        durable: Durability | None = None,
    ) -> None:
        self.client = client
        self.store = store
        self.durable = durable  # events wait for replicas (PATRON_EVENTS_REPLICAS)
        self.timeout = timeout_ms / 1000.0
        self.retry_s = retry_s
        self._down_until = 0.0
        self._writes_down_until = 0.0
        self.last_error: str | None = None
        self.unpublished = False  # the last read found no published feature version

    @property
    def down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: BaseException) -> None:
        if isinstance(exc, ResponseError):  # the server answered: this call failed, not Redis
            return
        self.last_error = f"redis unreachable: {type(exc).__name__}"
        if not self.down:
            log.warning("online store unavailable (%s); answering degraded", self.last_error)
        self._down_until = time.monotonic() + self.retry_s

    def _ok(self) -> None:
        if self.last_error is not None:
            log.info("online store reachable again")
        self.last_error = None
        self._down_until = 0.0

    def _published(self, rows: list[CustomerOnline]) -> list[CustomerOnline | None]:
        """The rows, or None rows when no feature version is published (one read, one
        version: the first row tells)."""
        missing = bool(rows) and rows[0].version is None
        if missing != self.unpublished:
            if missing:
                log.warning("online store has no published feature version; answering degraded")
            else:
                log.info("online store has a published feature version again")
        self.unpublished = missing
        return [None] * len(rows) if missing else list(rows)

    async def customer(self, customer_id: str) -> CustomerOnline | None:
        """The customer's online features, or None when Redis is unusable (degraded)."""
        if self.down:
            return None
        try:
            async with asyncio.timeout(self.timeout * 2):  # no extra task, unlike wait_for
                row = await self.store.read_customer(customer_id)
        except _UNUSABLE as exc:
            self._failed(exc)
            return None
        self._ok()
        return self._published([row])[0]

    async def customers(self, customer_ids: Sequence[str]) -> list[CustomerOnline | None]:
        """Many customers in one round trip, for recommendations (all None when Redis is
        unusable); the spend-since-build counter only /profile needs is not read."""
        if self.down:
            return [None] * len(customer_ids)
        try:
            async with asyncio.timeout(self.timeout * 10):
                rows = await self.store.read_customers(customer_ids, spend=False)
        except _UNUSABLE as exc:
            self._failed(exc)
            return [None] * len(customer_ids)
        self._ok()
        return self._published(list(rows))

    async def _write(self, what: str, call: Callable[[], Awaitable[T]], timeout_s: float) -> T:
        """One write with the writes' breaker: raises Unavailable (nothing is silently
        dropped) when Redis is unreachable or refuses the write. A failed write opens the
        writes' breaker only: reads go on; a refusal (the server answered) opens none."""
        if time.monotonic() < self._writes_down_until or self.down:
            why = self.last_error or "redis unreachable"
            raise Unavailable(f"{why}; {what} not recorded, retry later")
        try:
            async with asyncio.timeout(timeout_s):
                out = await call()
        except ResponseError as exc:  # the server is up and refused (e.g. maxmemory): no breaker
            full = isinstance(exc, OutOfMemoryError)
            why = "the online store is full (maxmemory)" if full else "the online store refused"
            log.warning("%s not recorded: %s", what, why)
            raise Unavailable(f"{why}; {what} not recorded, retry later") from None
        except _UNUSABLE as exc:
            self._writes_down_until = time.monotonic() + self.retry_s
            why = f"redis unreachable: {type(exc).__name__}"
            log.warning("%s not recorded: %s", what, why)
            raise Unavailable(f"{why}; {what} not recorded, retry later") from None
        self._writes_down_until = 0.0
        return out

    async def record(self, events: Sequence[PurchaseEvent]) -> int:
        """Record events (how many were applied); raises Unavailable as ``_write`` does, or
        when too few replicas confirmed them (the primary has applied them: a retry with the
        same event ids is applied once; an unconfirmed write opens no breaker)."""
        wait_s = self.durable.timeout_ms / 1000.0 if self.durable else 0.0
        try:
            return await self._write(
                "events were",
                lambda: self.store.record_events(events, self.durable),
                self.timeout * 10 + wait_s,
            )
        except NotReplicated as exc:
            log.warning("events not confirmed by replicas: %s", exc)
            raise Unavailable(
                f"{exc}; retry: events with an event_id are applied once, events without one "
                "would be counted again"
            ) from None

    async def attribute(
        self, store: AttributionStore, outcomes: Sequence[Outcome]
    ) -> list[tuple[str, ...]]:
        """Count outcomes for their answers' variants (serving/attribution/store.py): each
        one's (result, variant, experiment). Raises Unavailable as ``_write`` does; a retry
        counts an outcome once (the answer's markers)."""
        return await self._write(
            "events were", lambda: store.record_outcomes(outcomes), self.timeout * 10
        )

    async def published_version(self) -> str | None:
        """The published feature version (None: none is), for /readyz."""
        async with asyncio.timeout(self.timeout * 2):
            return await self.store.current_version()

    async def ping(self) -> str | None:
        """None when Redis answers, else why not (for /readyz)."""
        try:
            async with asyncio.timeout(self.timeout * 2):
                await self.client.ping()
        except _UNUSABLE as exc:
            self._failed(exc)
            return self.last_error
        self._ok()
        return None

    async def close(self) -> None:
        await self.client.aclose()
