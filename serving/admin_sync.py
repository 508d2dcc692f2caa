"""Every worker serves the shared admin state (serving/admin_state.py): rules and model pin.

- **At start** a worker adopts the stored rule set and model pin; when none is stored it
  seeds the state with what it loaded (its rules file, the aliases' versions). A restarted
  worker therefore serves what the others serve, not its files.
- **Changes** (``PUT /admin/rules``, ``POST /admin/reload``, the alias poller) are validated
  and loaded by the worker that takes them, written to the shared state (which logs who, when
  and the version), and only then made active there.
- **Every** ``PATRON_ADMIN_SYNC_S`` seconds (default 1) each worker reads the state's epoch,
  one HGET; when it moved, it adopts the new rules (a parse, milliseconds) or loads the pinned
  model versions (the load's time). A change therefore reaches every worker and replica within
  the interval plus that time (docs/serving.md has the measured figures).

When Redis is unreachable, changes are refused (503: a change only some workers see is the
bug this module exists for) and workers keep what they serve until it is back.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from redis.exceptions import RedisError

from serving.admin_state import AdminState, Field, Snapshot, Stamp, now, worker_name
from serving.errors import Unavailable
from serving.metrics import Metrics
from serving.rules.holder import RulesHolder
from serving.rules.loader import LoadedRules
from serving.rules.models import RuleError
from serving.state import ModelHolder, Models, ReloadResult

log = logging.getLogger("patron.serving")
STORE_ERRORS = (RedisError, OSError, TimeoutError)


def _unreachable(exc: BaseException) -> Unavailable:
    return Unavailable(
        f"shared admin state unreachable (redis: {type(exc).__name__}); nothing was changed"
    )


class AdminSync:
    def __init__(
        self,
        state: AdminState,
        models: ModelHolder,
        rules: RulesHolder,
        metrics: Metrics,
        interval_s: float,
    ) -> None:
        self.state = state
        self.models = models
        self.rules = rules
        self.metrics = metrics
        self.interval_s = interval_s
        self.epoch = 0  # the epoch this worker has adopted
        self.adopted_at: str | None = None  # when (UTC), for the measured convergence time
        self._unreachable = False
        self._failed_epoch = -1  # the epoch whose model failure was logged (once per epoch)
        self._refused_rules: str | None = None  # the shared rules version refused here

    async def start(self) -> None:
        """Load the rules and models every worker serves (the start waits for it)."""
        seed = self.rules.current()  # from the rules file
        snap = await self._read_at_start()
        if snap is not None and snap.rules is None:  # the first worker ever: its file seeds
            snap = await self._seed(
                "rules", _rules_json(seed), seed.version, f"start from {seed.source}"
            )
        if snap is not None:
            self._adopt_rules(snap, force=True)
            if self.rules.current().version != seed.version:
                log.warning(
                    "the rules file %s (%s) differs from the shared rules %s, which are served: "
                    "PUT /admin/rules changes them for every worker",
                    seed.source,
                    seed.version,
                    self.rules.current().version,
                )
        pin = snap.model if snap is not None else None
        try:
            await self.models.reload(pin=pin)
        except Exception as exc:
            if pin is None:
                raise
            log.error("the pinned models cannot be loaded (%s); serving the aliases' versions", exc)
            await self.models.reload()
        if snap is not None and pin is None:
            mine = self.models.models().pin()
            snap = await self._seed("model", mine.to_json(), mine.key, "start")
        if snap is not None:
            self._adopted(snap.epoch)

    async def _seed(self, field: Field, value: str, version: str, by: str) -> Snapshot | None:
        """Store this worker's value where the state holds none; the state after (None:
        redis failed meanwhile, and the sync loop adopts the state once it is back)."""
        try:
            await self.state.change(field, value, version, by, only_if_absent=True)
            return await self.state.read()
        except STORE_ERRORS as exc:
            log.warning("could not seed the shared admin state (%s)", type(exc).__name__)
            self._unreachable = True
            return None

    def _adopted(self, epoch: int, at: str | None = None) -> None:
        self.epoch = epoch
        self.adopted_at = at or now()
        self.metrics.admin_epoch.set(epoch)

    def _made(self, epoch: int, at: str) -> None:
        """This worker made the change of ``epoch``: adopted, unless it missed one before."""
        if epoch == self.epoch + 1:
            self._adopted(epoch, at)

    async def _read_at_start(self) -> Snapshot | None:
        try:
            return await self.state.read()
        except STORE_ERRORS as exc:
            log.warning(
                "shared admin state unreachable (%s): starting from the rules file and the "
                "aliases; adopting the shared state when redis is back",
                type(exc).__name__,
            )
            self._unreachable = True
            return None

    def _adopt_rules(self, snap: Snapshot, force: bool = False) -> None:
        """Make the stored rules current; rules that do not parse here (e.g. written by a
        newer release) are refused and logged once, and the current rules stay."""
        stamp = snap.rules_stamp
        if stamp is None or snap.rules is None:
            return
        before = self.rules.current().version
        if stamp.version == before and not force:
            return
        try:
            self.rules.set(self.rules.validate(snap.rules, source=stamp.source))
        except RuleError as exc:
            if self._refused_rules != stamp.version:
                log.error(
                    "shared rules %s refused here, keeping %s: %s", stamp.version, before, exc
                )
                self.metrics.admin_changes.labels("rules", "refused").inc()
            self._refused_rules = stamp.version
            return
        if stamp.version != before:
            log.info(
                "rules %s -> %s (set by %s at %s; epoch %d)",
                before,
                stamp.version,
                stamp.by,
                stamp.at,
                snap.epoch,
            )
            self.metrics.admin_changes.labels("rules", "adopted").inc()

    async def _adopt_model(self, snap: Snapshot) -> bool:
        pin, stamp = snap.model, snap.model_stamp
        current = self.models.current
        if pin is None or stamp is None or (current is not None and current.pin() == pin):
            return True
        try:
            res = await self.models.reload(pin=pin)
        except Exception as exc:  # the registry may be back next time: retried every tick
            if self._failed_epoch != snap.epoch:
                log.error(
                    "pinned models %s not loaded, keeping %s: %s",
                    pin.key,
                    current.champion.version if current else None,
                    exc,
                )
            self.metrics.admin_changes.labels("model", "failed").inc()
            return False
        got = self.models.models().pin()
        if got.champion_fingerprint != pin.champion_fingerprint:
            log.warning(
                "this worker's bundle differs from the pinned one (fingerprint %s, pinned %s)",
                got.champion_fingerprint,
                pin.champion_fingerprint,
            )
        log.info(
            "champion %s -> %s (set by %s at %s; epoch %d)",
            res.previous,
            res.champion,
            stamp.by,
            stamp.at,
            snap.epoch,
        )
        self.metrics.admin_changes.labels("model", "adopted").inc()
        return True

    async def sync_once(self) -> None:
        """Adopt the shared state if its epoch moved (one HGET when it did not)."""
        try:
            epoch = await self.state.epoch()
            if epoch == self.epoch:
                return
            snap = await self.state.read()
        except STORE_ERRORS as exc:
            if not self._unreachable:
                log.warning(
                    "shared admin state unreachable (%s); keeping what is served",
                    type(exc).__name__,
                )
            self._unreachable = True
            return
        if self._unreachable:
            log.info("shared admin state reachable again (epoch %d)", snap.epoch)
            self._unreachable = False
        self._adopt_rules(snap)
        if await self._adopt_model(snap):
            self._adopted(snap.epoch)
        else:  # retried next tick, logged once
            self._failed_epoch = snap.epoch

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sync_once()
            except Exception:  # never let the loop die: log and go on
                log.exception("admin state sync failed")

    # -- changes taken by this worker ------------------------------------------------------

    async def put_rules(self, data: Any, by: str) -> LoadedRules:
        """Validate (RuleError), store (Unavailable when redis is not reachable), activate."""
        new = self.rules.validate(data)
        before = self.rules.current().version
        at, stored = now(), _rules_json(new)
        try:
            epoch = await self.state.change(
                "rules", stored, new.version, by, previous=before, at=at
            )
        except STORE_ERRORS as exc:
            raise _unreachable(exc) from None
        if not epoch:  # the shared state holds this rule set already: adopt it from there
            await self.sync_once()
            return self.rules.current()
        # as every other worker reads it: from the stored JSON, with the same source
        new = self.rules.validate(json.loads(stored), source=Stamp(new.version, by, at).source)
        self.rules.set(new)
        self._made(epoch, at)
        log.info(
            "rules %s -> %s (set by %s on %s; epoch %d)",
            before,
            new.version,
            by,
            worker_name(),
            epoch,
        )
        return new

    async def reload(self, by: str) -> ReloadResult:
        """Resolve the aliases and load; store the pin, then swap (nothing swaps when the
        pin cannot be stored)."""
        previous = self.models.current.pin().key if self.models.current else None

        made: list[tuple[int, str]] = []

        async def publish(new: Models) -> None:
            pin, at = new.pin(), now()
            try:
                epoch = await self.state.change(
                    "model", pin.to_json(), pin.key, by, previous=previous, at=at
                )
            except STORE_ERRORS as exc:
                raise _unreachable(exc) from None
            made.append((epoch, at))

        res = await self.models.reload(commit=publish)
        if made and made[0][0]:
            self._made(*made[0])
        if res.changed:
            log.info(
                "champion %s -> %s (by %s on %s)", res.previous, res.champion, by, worker_name()
            )
        elif by != "alias poll":
            log.info("champion %s unchanged (reload by %s on %s)", res.champion, by, worker_name())
        return res


def _rules_json(rules: LoadedRules) -> str:
    return json.dumps(rules.rules.model_dump(mode="json"), sort_keys=True)
