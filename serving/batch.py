"""The API's micro-batcher: concurrent plain recommendation requests scored as one batch.

A worker under load has many requests in flight; alone, each pays the fixed cost of a Redis
round trip, the scoring pass and the rules pass. Coalesced, they pay it once per batch: one
Redis read (one Lua call) for all customers, one ``serving.recommend.recommend_batch_rendered``
(the same function a lone request calls). A request never waits on a timer: a batch is
whatever is queued when the event loop gets to it, so at low load a batch is one request and
its latency that of a lone request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from features.online import CustomerOnline
from serving.model import LoadedModel
from serving.recommend import RecResult, recommend_batch_rendered
from serving.render import Answer
from serving.rules.loader import LoadedRules

log = logging.getLogger("patron.serving")


# ------------------------------------------------------------------------------ micro-batcher
def _fail(asks: list[_Ask], exc: BaseException) -> None:
    for a in asks:
        if not a.future.done():
            a.future.set_exception(exc)


@dataclass
class _Ask:
    model: LoadedModel
    rules: LoadedRules
    customer_id: str
    k: int
    exclude: tuple[str, ...]
    future: asyncio.Future[tuple[Answer, CustomerOnline | None]]


class RecBatcher:
    """Coalesces concurrent plain recommendation requests (see the module docstring).

    ``read_many`` is the online gateway's batch read (None rows = Redis unusable). A batch
    that fails as a whole is retried request by request, so one bad request cannot fail the
    others; ``single`` is that one-customer path (``service.recommend``).
    """

    def __init__(
        self,
        read_many: Callable[[Sequence[str]], Awaitable[list[CustomerOnline | None]]],
        single: Callable[..., RecResult],
        max_batch: int = 64,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        self._read_many = read_many
        self._single = single
        self.max_batch = max(1, max_batch)
        self._observe = observe
        self._queue: list[_Ask] = []
        self._task: asyncio.Task[None] | None = None
        self.batches = 0
        self.requests = 0

    async def recommend(
        self,
        model: LoadedModel,
        rules: LoadedRules,
        customer_id: str,
        k: int,
        exclude: Sequence[str] = (),
    ) -> tuple[Answer, CustomerOnline | None]:
        """This customer's picks and the online row they were computed from (None = degraded)."""
        loop = asyncio.get_running_loop()
        ask = _Ask(model, rules, customer_id, k, tuple(exclude), loop.create_future())
        self._queue.append(ask)
        if self._task is None:
            self._task = loop.create_task(self._drain())
        return await ask.future

    async def _drain(self) -> None:
        batch: list[_Ask] = []
        try:
            while self._queue:
                await asyncio.sleep(0)  # requests already in the loop's ready queue join
                batch = self._queue[: self.max_batch]
                del self._queue[: self.max_batch]
                try:
                    await self._run(batch)
                except Exception as exc:  # a bug here must not leave requests waiting
                    log.exception("coalesced batch failed")
                    _fail(batch, exc)
        except asyncio.CancelledError:  # shutdown: nobody is left waiting forever
            _fail(batch + self._queue, RuntimeError("server shutting down"))
            self._queue.clear()
            raise
        finally:
            self._task = None

    async def _run(self, batch: list[_Ask]) -> None:
        rows = await self._read_many([a.customer_id for a in batch])  # None rows: degraded
        self.batches += 1
        self.requests += len(batch)
        if self._observe is not None:
            self._observe(len(batch))
        groups: dict[tuple[int, int, int], list[int]] = {}
        for i, a in enumerate(batch):
            groups.setdefault((id(a.model), id(a.rules), a.k), []).append(i)
        for members in groups.values():
            first = batch[members[0]]
            try:
                res = recommend_batch_rendered(
                    first.model,
                    [batch[i].customer_id for i in members],
                    [rows[i] for i in members],
                    first.k,
                    first.rules,
                    [batch[i].exclude for i in members],
                )
            except Exception:
                log.exception("batch of %d failed; answering one by one", len(members))
                self._one_by_one([batch[i] for i in members], [rows[i] for i in members])
                continue
            for i, r in zip(members, res, strict=True):
                if not batch[i].future.done():
                    batch[i].future.set_result((r, rows[i]))

    def _one_by_one(self, asks: list[_Ask], rows: list[CustomerOnline | None]) -> None:
        for a, row in zip(asks, rows, strict=True):
            if a.future.done():
                continue
            try:
                r = self._single(a.model, a.customer_id, row, a.k, exclude=a.exclude, rules=a.rules)
            except Exception as exc:
                a.future.set_exception(exc)
            else:
                a.future.set_result((r, row))
