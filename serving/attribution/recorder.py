"""What the API served, written to Redis in the background.

A request mints its answer's id and appends what the answer served to a buffer: no Redis
call, no JSON, on the request's path (``mint`` may run on a worker thread: appending is its
only step). A task writes the buffer every ``flush_s`` in one pipeline per node. An outcome
naming an answer still in the buffer (sent within ``flush_s`` of the answer) counts as
unknown: clients send impressions after rendering, well after that. When Redis is unusable
the buffered answers are dropped and counted (``patron_ab_answers_total{outcome="dropped"}``);
recommendations never wait on it, and after a failed write the writes pause for ``pause_s``
(logged once). The buffer is bounded (``max_pending``): beyond it the
oldest answers are dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Protocol

from serving.attribution.ids import experiment_of, new_id
from serving.attribution.store import AnswerRecord, AttributionStore

log = logging.getLogger("patron.serving")


class Served(Protocol):
    """An answer as the recorder sees it (serving/render.py's ``Answer``)."""

    rules_version: str

    def served_items(self, item_ids: Sequence[str]) -> list[str]: ...


class _Model(Protocol):
    @property
    def version(self) -> str: ...

    @property
    def item_id_list(self) -> Sequence[str]: ...


class AnswerRecorder:
    """Mints recommendation ids and writes the answers' records (see the module docstring)."""

    def __init__(
        self,
        store: AttributionStore | None,
        *,
        flush_s: float = 0.05,
        max_pending: int = 50_000,
        metrics: Any = None,
    ) -> None:
        self.store = store  # None: ids are minted, nothing is stored (attribution off)
        self.flush_s = flush_s
        self.max_pending = max_pending
        self.metrics = metrics
        # a deque: append (a request, maybe on a thread) and popleft (the task) are atomic
        self._pending: deque[tuple[str, float, str, str, Any, Any, str | None]] = deque()
        self.available = lambda: True  # the gateway's breaker: False = Redis is down
        self.closing = False
        self.pause_s = 1.0  # after a failed write, records are dropped this long
        self.write_timeout_s = 2.0
        self._paused_until = 0.0
        self._failing = False

    def mint(
        self,
        variant: str,
        model: _Model,
        champion: str,
        challenger: str | None,
        answer: Served,
        customer_id: str | None,
    ) -> str:
        """A new recommendation id for this answer, its record queued for writing."""
        now = time.time()
        rec_id = new_id(now)
        if self.store is None:
            return rec_id
        experiment = experiment_of(champion, challenger)
        self._pending.append((rec_id, now, variant, experiment, model, answer, customer_id))
        return rec_id

    def records(self) -> list[AnswerRecord]:
        """Take the buffered answers as records (the buffer is emptied)."""
        pending = self._pending
        taken = [pending.popleft() for _ in range(len(pending))]
        if len(taken) > self.max_pending:
            self._count("dropped", len(taken) - self.max_pending)
            taken = taken[-self.max_pending :]
        return [
            AnswerRecord(
                rec_id,
                ts,
                experiment,
                variant,
                model.version,
                answer.rules_version,
                customer_id,
                answer.served_items(model.item_id_list),
            )
            for rec_id, ts, variant, experiment, model, answer, customer_id in taken
        ]

    async def flush(self) -> None:
        if self.store is None or not self._pending:
            return
        records = self.records()
        if not self.available() or time.monotonic() < self._paused_until:
            self._count("dropped", len(records))
            return
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self.store.write_answers(records)
        except Exception as exc:  # attribution must never fail an answer
            # a failing Redis (full, unreachable) is left alone for pause_s, and said once
            self._paused_until = time.monotonic() + self.pause_s
            if not self._failing:
                why = type(exc).__name__
                log.warning(
                    "answer records not written (%s): dropping them for %.0f s at a time "
                    "until a write succeeds",
                    why,
                    self.pause_s,
                )
            self._failing = True
            self._count("dropped", len(records))
            return
        if self._failing:
            log.info("answer records written again")
        self._failing = False
        self._count("stored", len(records))

    def _count(self, outcome: str, n: int) -> None:
        if self.metrics is not None and n:
            self.metrics.ab_answers.labels(outcome).inc(n)

    async def run(self) -> None:
        """Flush every ``flush_s`` until ``closing`` (set before the task is cancelled: a
        cancellation that arrives as a Redis call's own timeout fires can be lost inside
        ``asyncio.timeout`` on Python 3.11, and the loop must end anyway)."""
        while not self.closing:
            await asyncio.sleep(self.flush_s)
            await self.flush()
