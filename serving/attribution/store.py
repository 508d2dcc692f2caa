"""Answers and outcomes in Redis: what each answer served, and counters per variant and day.

Keys (``s``: the id's shard, serving/attribution/ids.py; ``day``: the answer's UTC day)::

  {ns}:{ab<s>}:a:<bucket> -> hash id -> JSON of the answer: t (unix s), e (experiment),
                             v (variant), m (model version), r (rules version), c (customer
                             hash), i (items); the answers of one ten-minute bucket (one HSET
                             per flush and shard), expiring the window and a day after it
  {ns}:{ab<s>}:o:<id>     -> hash of the outcomes already counted for that answer (markers)
  {ns}:{ab<s>}:n:<day>    -> hash "<experiment>|<variant>|<metric>" -> count (or revenue) of
                             the outcomes of that day's answers in shard s
  {ns}:{ab<s>}:r:<day>    -> hash "<experiment>|<variant>|<id>" -> attributed revenue of the
                             answer (the revenue distribution the report bootstraps)
  {ns}:{abn}:n:<day>      -> hash "<experiment>|<variant>|answers" -> answers that day (one
                             key: written once per flush, not once per shard)

The counter keys expire at the end of the answer day + the window + ``retention_s``. One
outcome is one Lua call on one slot: it reads the answer, checks the outcome against it (same
customer, a served item, inside the window, not counted before) and updates the day's counters
atomically, so a retry never counts twice and a counter never disagrees with the markers.
Metrics: ``answers``,
``impressions`` (answers shown), ``clicks`` (distinct items clicked), ``clicked`` (answers
with a click), ``carts``/``carted`` (the same for add_to_cart), ``purchases`` (attributed
purchase events), ``converted`` (answers with an attributed purchase), ``revenue``.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic_core import to_json
from redis.crc import key_slot
from redis.exceptions import NoScriptError

from features.online_layout import is_cluster
from features.online_pipeline import Command, run_async, run_single_async, run_sync
from patron.settings import Settings
from serving.attribution.ids import AB_SHARDS, bucket_end, bucket_of, day_of, shard_of

# KEYS: the answer, its markers, the day's counters, the day's revenue per answer.
# ARGV: type, item, ts, amount, marker, window s, customer hash, id, counters' expiry (unix s),
# marker ttl.
# Returns {outcome, variant, experiment} (variant and experiment when the answer is known).
OUTCOME_LUA = """
local meta = redis.call('HGET', KEYS[1], ARGV[8])
if not meta then return {'unknown_recommendation'} end
local a = cjson.decode(meta)
if a.c ~= '' and a.c ~= ARGV[7] then return {'other_customer', a.v, a.e} end
local kind, item = ARGV[1], ARGV[2]
if kind ~= 'impression' then
  local hit = false
  for _, it in ipairs(a.i) do
    if it == item then hit = true; break end
  end
  if not hit then return {'not_recommended', a.v, a.e} end
end
if kind == 'purchase' then
  local dt = tonumber(ARGV[3]) - a.t
  if dt < -300 or dt > tonumber(ARGV[6]) then return {'outside_window', a.v, a.e} end
end
if redis.call('HSETNX', KEYS[2], ARGV[5], '1') == 0 then return {'repeated', a.v, a.e} end
redis.call('EXPIRE', KEYS[2], ARGV[10])
local pre = a.e .. '|' .. a.v .. '|'
local counted = {impression = 'impressions', click = 'clicks', add_to_cart = 'carts',
                 purchase = 'purchases'}
redis.call('HINCRBY', KEYS[3], pre .. counted[kind], 1)
local answers = {click = 'clicked', add_to_cart = 'carted', purchase = 'converted'}
if answers[kind] and redis.call('HSETNX', KEYS[2], kind, '1') == 1 then
  redis.call('HINCRBY', KEYS[3], pre .. answers[kind], 1)
end
if kind == 'purchase' and tonumber(ARGV[4]) > 0 then
  redis.call('HINCRBYFLOAT', KEYS[3], pre .. 'revenue', ARGV[4])
  redis.call('HINCRBYFLOAT', KEYS[4], pre .. ARGV[8], ARGV[4])
  redis.call('EXPIREAT', KEYS[4], ARGV[9])
end
redis.call('EXPIREAT', KEYS[3], ARGV[9])
return {'attributed', a.v, a.e}
"""

METRICS = (
    "answers",
    "impressions",
    "clicks",
    "clicked",
    "carts",
    "carted",
    "purchases",
    "converted",
    "revenue",
)
OUTCOME_TYPES = ("impression", "click", "add_to_cart", "purchase")


def customer_hash(customer_id: str | None) -> str:
    """What an answer keeps of its customer: 64 bits of a keyed hash (empty: no customer),
    enough to refuse another customer's outcome, not to recover the id."""
    if not customer_id:
        return ""
    return hashlib.blake2b(customer_id.encode(), digest_size=8, person=b"patron-attr").hexdigest()


@dataclass(frozen=True)
class AnswerRecord:
    rec_id: str
    ts: float
    experiment: str
    variant: str
    model_version: str
    rules_version: str
    customer_id: str | None
    items: Sequence[str]

    def json(self) -> bytes:
        return to_json(
            {
                "t": int(self.ts),
                "e": self.experiment,
                "v": self.variant,
                "m": self.model_version,
                "r": self.rules_version,
                "c": customer_hash(self.customer_id),
                "i": self.items,
            }
        )


@dataclass(frozen=True)
class Outcome:
    """One outcome event naming a recommendation id (validated: serving/events.py)."""

    rec_id: str
    type: str  # one of OUTCOME_TYPES
    customer_id: str
    item_id: str | None
    ts: float
    amount: float = 0.0  # attributed revenue of a purchase
    event_id: str | None = None

    def marker(self) -> str:
        if self.type == "impression":
            return "i"
        if self.type == "purchase":
            return f"p:{self.event_id}" if self.event_id else f"p:{self.item_id}@{self.ts:.3f}"
        return f"{self.type[0]}:{self.item_id}"


@dataclass
class Totals:
    """Counters summed over days and shards: experiment -> variant -> metric -> value, and
    (when asked) every converted answer's revenue: experiment -> variant -> values."""

    counts: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    revenues: dict[str, dict[str, list[float]]] = field(default_factory=dict)
    days: dict[str, set[str]] = field(default_factory=dict)  # experiment -> days with answers


class AttributionStore:
    """Answer records and outcome counters of one namespace, over a sync or async client."""

    def __init__(
        self,
        client: Any,
        namespace: str,
        *,
        window_s: int = 7 * 86_400,
        retention_s: int = 90 * 86_400,
    ) -> None:
        self.r = client
        self.ns = namespace
        self.window_s = window_s
        self.answer_ttl_s = window_s + 86_400
        self.retention_s = retention_s
        self.cluster = is_cluster(client)
        self.tags = [f"{namespace}:{{ab{s}}}" for s in range(AB_SHARDS)]
        self.slots = [key_slot(t.encode()) for t in self.tags]
        self.answers_tag = f"{namespace}:{{abn}}"
        self.answers_slot = key_slot(self.answers_tag.encode())
        self._expiring: set[str] = set()  # keys whose expiry this store has set
        self.script = client.register_script(OUTCOME_LUA)

    @classmethod
    def from_settings(cls, client: Any, settings: Settings) -> AttributionStore:
        """The store of ``PATRON_REDIS_NAMESPACE`` with ``PATRON_AB_*``'s window and retention."""
        return cls(
            client,
            settings.redis_namespace,
            window_s=settings.ab_window_days * 86_400,
            retention_s=settings.ab_retention_days * 86_400,
        )

    # ------------------------------------------------------------------ commands (no I/O)
    def expires_at(self, day: str) -> int:
        """When the counters of answers of ``day`` expire (unix s)."""
        start = int(datetime.strptime(day, "%Y%m%d").replace(tzinfo=UTC).timestamp())
        return start + 86_400 + self.window_s + self.retention_s

    def answer_commands(self, records: Iterable[AnswerRecord]) -> list[Command]:
        """One HSET per (shard, bucket) with its answers, then one HINCRBY per (day,
        experiment, variant); a key's expiry the first time this store writes it."""
        out: list[Command] = []
        fields: dict[tuple[int, str], list[str | bytes]] = defaultdict(list)
        counts: dict[tuple[str, str], int] = defaultdict(int)
        for rec in records:
            fields[(shard_of(rec.rec_id), bucket_of(rec.rec_id))] += (rec.rec_id, rec.json())
            counts[(day_of(rec.rec_id), f"{rec.experiment}|{rec.variant}|answers")] += 1
        for (s, bucket), pairs in fields.items():
            key = f"{self.tags[s]}:a:{bucket}"
            out.append((self.slots[s], ("HSET", key, *pairs)))
            if key not in self._expiring:
                at = bucket_end(bucket) + self.answer_ttl_s
                out.append((self.slots[s], ("EXPIREAT", key, at)))
        for (day, fld), n in counts.items():
            out.append((self.answers_slot, ("HINCRBY", self.answers_key(day), fld, n)))
            if self.answers_key(day) not in self._expiring:  # (marked once a write succeeded)
                at = self.expires_at(day)
                out.append((self.answers_slot, ("EXPIREAT", self.answers_key(day), at)))
        return out

    def answers_key(self, day: str) -> str:
        return f"{self.answers_tag}:n:{day}"

    def outcome_command(self, o: Outcome) -> Command:
        s, tag = shard_of(o.rec_id), self.tags[shard_of(o.rec_id)]
        day = day_of(o.rec_id)
        answers = f"{tag}:a:{bucket_of(o.rec_id)}"
        keys = (answers, f"{tag}:o:{o.rec_id}", f"{tag}:n:{day}", f"{tag}:r:{day}")
        args = (
            o.type,
            o.item_id or "",
            repr(float(o.ts)),
            repr(float(o.amount)),
            o.marker(),
            self.window_s,
            customer_hash(o.customer_id),
            o.rec_id,
            self.expires_at(day),
            self.answer_ttl_s,
        )
        return (self.slots[s], ("EVALSHA", self.script.sha, len(keys), *keys, *args))

    def totals_commands(self, days: Sequence[str], revenues: bool) -> list[Command]:
        kinds = ("n", "r") if revenues else ("n",)
        return [
            (self.slots[s], ("HGETALL", f"{self.tags[s]}:{kind}:{day}"))
            for day in days
            for s in range(AB_SHARDS)
            for kind in kinds
        ] + [(self.answers_slot, ("HGETALL", self.answers_key(day))) for day in days]

    @staticmethod
    def parse_totals(
        commands: Sequence[Command], replies: Sequence[Any], experiment: str | None = None
    ) -> Totals:
        """Sum the HGETALL replies of ``totals_commands`` (revenue values of ``experiment``
        only, or of every experiment when it is None)."""
        totals = Totals()
        for (_, command), reply in zip(commands, replies, strict=True):
            if isinstance(reply, Exception):
                raise reply
            kind_day = command[1].rsplit(":", 2)
            kind, day = kind_day[-2], kind_day[-1]
            for raw_field, raw_value in reply.items():
                f = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
                exp, variant, last = f.split("|", 2)
                if kind == "r":
                    if experiment is None or exp == experiment:
                        totals.revenues.setdefault(exp, {}).setdefault(variant, []).append(
                            float(raw_value)
                        )
                    continue
                metrics = totals.counts.setdefault(exp, {}).setdefault(
                    variant, dict.fromkeys(METRICS, 0.0)
                )
                metrics[last] = metrics.get(last, 0.0) + float(raw_value)
                if last == "answers":
                    totals.days.setdefault(exp, set()).add(day)
        return totals

    # ------------------------------------------------------------------ sync calls
    def _send_sync(self, commands: Sequence[Command]) -> list[Any]:
        if self.cluster:
            return run_sync(self.r, commands)[0]
        pipe = self.r.pipeline(transaction=False)
        for _, command in commands:
            pipe.execute_command(*command)
        return list(pipe.execute(raise_on_error=False))

    def write_answers_sync(self, records: Sequence[AnswerRecord]) -> None:
        commands = self.answer_commands(records)
        _raise_first(self._send_sync(commands))
        self._expiring.update(_keys_written(commands))

    def record_sync(self, rec_id: str) -> dict[str, Any] | None:
        """The stored answer of a recommendation id (None: unknown or expired)."""
        raw = self.r.hget(f"{self.tags[shard_of(rec_id)]}:a:{bucket_of(rec_id)}", rec_id)
        return None if raw is None else dict(json.loads(raw))

    def totals_sync(self, days: Sequence[str], experiment: str | None = None) -> Totals:
        commands = self.totals_commands(days, revenues=True)
        return self.parse_totals(commands, self._send_sync(commands), experiment)

    def record_outcomes_sync(self, outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
        commands = [self.outcome_command(o) for o in outcomes]
        replies = self._send_sync(commands)
        if any(isinstance(r, NoScriptError) for r in replies):
            self.r.script_load(OUTCOME_LUA)
            replies = self._send_sync(commands)
        return _decoded(_raise_first(replies))

    # ------------------------------------------------------------------ async calls
    async def _send(self, commands: Sequence[Command]) -> list[Any]:
        if self.cluster:
            return (await run_async(self.r, commands))[0]
        return (await run_single_async(self.r, [c for _, c in commands]))[0]

    async def write_answers(self, records: Sequence[AnswerRecord]) -> None:
        commands = self.answer_commands(records)
        _raise_first(await self._send(commands))
        self._expiring.update(_keys_written(commands))

    async def record_outcomes(self, outcomes: Sequence[Outcome]) -> list[tuple[str, ...]]:
        """Each outcome's verdict: (outcome, variant, experiment); outcome 'attributed' when
        it was counted."""
        commands = [self.outcome_command(o) for o in outcomes]
        replies = await self._send(commands)
        if any(isinstance(r, NoScriptError) for r in replies):
            await self.r.script_load(OUTCOME_LUA)  # every primary on a cluster
            replies = await self._send(commands)
        return _decoded(_raise_first(replies))

    async def totals(self, days: Sequence[str], revenues: bool = False) -> Totals:
        commands = self.totals_commands(days, revenues)
        return self.parse_totals(commands, await self._send(commands))


def _keys_written(commands: Sequence[Command]) -> set[str]:
    """The keys whose expiry the commands set (no need to set it again)."""
    return {str(c[1]) for _, c in commands if c[0] == "EXPIREAT"}


def _raise_first(replies: list[Any]) -> list[Any]:
    for r in replies:
        if isinstance(r, Exception):
            raise r
    return replies


def _decoded(replies: list[Any]) -> list[tuple[str, ...]]:
    return [tuple(v.decode() if isinstance(v, bytes) else str(v) for v in r) for r in replies]
