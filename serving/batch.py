"""Personalised recommendations for many customers at once, and the API's micro-batcher.

``recommend_batch`` is ``serving.service.recommend`` (no category, no context item) for many
customers in one pass: the email export's vectorised candidate blend
(``serving.picks.batch_candidates_flat``, one FAISS search for the whole batch) and the rules
engine over the whole batch (``apply_rules_batch``). Same answers, item for item and in the
same order, as the one-customer path (tests/serving/test_batch.py).

``RecBatcher`` feeds it from the API. A worker under load has many requests in flight; alone,
each pays the fixed cost of a Redis round trip, a FAISS call and ~100 small numpy calls in the
blend and the rules. Coalesced, they pay it once per batch: one Redis read (one Lua call) for
all customers, one FAISS search, one rules pass. A request never waits on a timer: a batch is
whatever is queued when the event loop gets to it, so at low load a batch is one request and
its latency that of a lone request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import numpy as np

from features.online import CustomerOnline
from serving.model import LoadedModel
from serving.picks import batch_candidates_flat, contexts_from_online, rules_batch
from serving.render import Answer, RenderedResult
from serving.rules.engine import BatchPicks, CustomerContext
from serving.rules.loader import LoadedRules
from serving.service import Pick, RecResult

log = logging.getLogger("patron.serving")
# a lone request goes through service.recommend (measured in-process: 0.41-0.45 ms against
# 0.51 ms as a batch of one; from two customers the batch path is cheaper per customer:
# 0.34-0.38 ms). Same answers either way.
SINGLE_MAX = 1


def _csr(lists: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    ptr = np.zeros(len(lists) + 1, np.int64)
    np.cumsum([len(x) for x in lists], out=ptr[1:])
    idx = np.fromiter((i for x in lists for i in x), np.int32, int(ptr[-1]))
    return ptr, idx


def _batch_picks(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules,
    exclude: Sequence[Sequence[str]] | None,
    now: float | None,
) -> tuple[list[CustomerContext], BatchPicks]:
    ctxs = contexts_from_online(online, model, now)
    rec_ptr, rec_idx = _csr([c.recent_item_idx.tolist() for c in ctxs])
    extra = None
    if exclude is not None and any(exclude):
        pos = model.item_pos
        extra = _csr([[pos[e] for e in ex if e in pos] for ex in exclude])
    cands, ex_ptr, ex_idx = batch_candidates_flat(
        model, customer_ids, ctxs, rec_ptr, rec_idx, k, extra_exclude=extra
    )
    return ctxs, rules_batch(model, rules, cands, ex_ptr, ex_idx, ctxs, k)


def _fallback(model: LoadedModel, customer_id: str, ctx: CustomerContext) -> str | None:
    if customer_id in model.customer_pos:
        return None
    return "fold_in" if len(ctx.recent_item_idx) else "popular"


def recommend_batch(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules,
    exclude: Sequence[Sequence[str]] | None = None,
    now: float | None = None,
) -> list[RecResult]:
    """``service.recommend(model, c, row, k, exclude=e, rules=rules)`` for every customer."""
    if len(customer_ids) == 0:
        return []
    ctxs, out = _batch_picks(model, customer_ids, online, k, rules, exclude, now)
    item_ids = model.item_id_list
    reasons = out.all_reasons(item_ids)
    idx, scores, counts = out.item_idx.tolist(), out.score.tolist(), out.count.tolist()
    results = []
    for row, (cid, ctx) in enumerate(zip(customer_ids, ctxs, strict=True)):
        c = counts[row]
        picks = [
            Pick(item_ids[i], s, r)
            for i, s, r in zip(idx[row][:c], scores[row][:c], reasons[row], strict=True)
        ]
        fallback = _fallback(model, cid, ctx)
        results.append(RecResult(ctx.tier, ctx.segment, picks, out.rules_version, fallback))
    return results


def recommend_batch_rendered(
    model: LoadedModel,
    customer_ids: Sequence[str],
    online: Sequence[CustomerOnline | None],
    k: int,
    rules: LoadedRules,
    exclude: Sequence[Sequence[str]] | None = None,
    now: float | None = None,
) -> list[RenderedResult]:
    """``recommend_batch`` with each row's items rendered as response JSON (the API's path:
    no pick objects, no response model; same bytes, tests/serving/test_render.py)."""
    if len(customer_ids) == 0:
        return []
    ctxs, out = _batch_picks(model, customer_ids, online, k, rules, exclude, now)
    rows = model.items_json.rows(out)
    return [
        RenderedResult(ctx.tier, ctx.segment, out.rules_version, _fallback(model, cid, ctx), js)
        for cid, ctx, js in zip(customer_ids, ctxs, rows, strict=True)
    ]


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
            if len(members) <= SINGLE_MAX:  # alone, the one-customer path is cheaper
                self._one_by_one([batch[i] for i in members], [rows[i] for i in members])
                continue
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
