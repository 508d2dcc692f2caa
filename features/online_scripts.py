"""The online store's Lua scripts and what to send them (no I/O: the sync and async stores in
features/online.py run the calls).

Every script declares its keys, and on a cluster one call only touches keys of one slot (a
customer's keys share one, features/online_layout.py): on a single node one call carries a
whole batch, on a cluster there is one call per slot, pipelined per node. (Redis refuses a
script whose declared keys are in several slots even with ``allow-cross-slot-keys``.)

A read names the version it expects for each customer (the reader's last known pointer). The
script checks it against the customer's shard pointer and reads the bucket of that version in
the same atomic step; a shard that serves another version answers with its pointer instead,
and the customer is read again with it (after a publish, once per reader and shard).
"""

from __future__ import annotations

import json
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

from features.online_codec import CustomerOnline, PurchaseEvent, parse_customer, text
from features.online_layout import Layout

RECENT_CAP = 50
RECENT_TTL_S = 30 * 86_400
SPEND_TTL_S = 30 * 86_400
EVENT_ID_TTL_S = 7 * 86_400  # a retried event (same event_id) within this is applied once
READ_TRIES = 4  # a customer whose shard flips version between tries is read again

# KEYS: per customer its shard pointer, bucket (of the expected version), recent set and, when
# ARGV[2] is '1', spend hash. ARGV: recent depth, '1' to read spend, the expected version (the
# customer id is the recent key's tail: "<ns>:{<shard>}:rt:recent:<id>"). Per customer:
# {0, recent} (nothing published), {1, version, buckets, codebook} (the shard serves another
# version) or {2, packed row, spend, recent}.
READ_LUA = """
local k = tonumber(ARGV[1])
local with_spend = ARGV[2] == '1'
local want = ARGV[3]
local stride = with_spend and 4 or 3
local out = {}
local seen = {}
for c = 0, #KEYS / stride - 1 do
  local b = stride * c
  local ptr, bucket, recent = KEYS[b + 1], KEYS[b + 2], KEYS[b + 3]
  local cur = seen[ptr]
  if cur == nil then
    cur = redis.call('HGET', ptr, 'ver')
    seen[ptr] = cur
  end
  if not cur then
    out[c + 1] = {0, redis.call('ZREVRANGE', recent, 0, k - 1, 'WITHSCORES')}
  elseif cur ~= want then
    local p = redis.call('HMGET', ptr, 'buckets', 'codebook')
    out[c + 1] = {1, cur, p[1], p[2]}
  else
    local spent = false
    if with_spend then spent = redis.call('HGET', KEYS[b + 4], cur) end
    local cid = string.sub(recent, string.find(recent, '}', 1, true) + 12)
    out[c + 1] = {2, redis.call('HGET', bucket, cid), spent,
                  redis.call('ZREVRANGE', recent, 0, k - 1, 'WITHSCORES')}
  end
end
return out
"""

# KEYS: per event its customer's shard pointer, recent set, spend hash, event-id key.
# ARGV: cap, recent ttl, spend ttl, id ttl; per event: item, ts, amount, kind, has id (1/0).
RECORD_LUA = """
local cap, recent_ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local spend_ttl, id_ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local n = 0
for e = 0, #KEYS / 4 - 1 do
  local ptr, rk, sk, ek = KEYS[4 * e + 1], KEYS[4 * e + 2], KEYS[4 * e + 3], KEYS[4 * e + 4]
  local a = 5 + 5 * e
  local item, ts, amount, kind, has_id = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  -- an event with an id is applied once: a retry within id_ttl finds its id taken
  local fresh = has_id == '0' or redis.call('SET', ek, '1', 'NX', 'EX', id_ttl)
  if fresh then
    if kind == 'purchase' then
      redis.call('ZADD', rk, ts, item)
      redis.call('ZREMRANGEBYRANK', rk, 0, -(cap + 1))
      redis.call('EXPIRE', rk, recent_ttl)
    end
    if tonumber(amount) ~= 0 then
      local ver = redis.call('HGET', ptr, 'ver') or 'none'
      redis.call('HINCRBYFLOAT', sk, ver, amount)
      redis.call('EXPIRE', sk, spend_ttl)
    end
    n = n + 1
  end
end
return n
"""


@dataclass(frozen=True)
class Durability:
    """Events count as recorded only once ``replicas`` replicas of each primary that took
    them have them too (Redis ``WAIT`` on the connection that wrote, at most ``timeout_ms``)."""

    replicas: int
    timeout_ms: int

    def command(self) -> tuple[Any, ...]:
        return ("WAIT", self.replicas, self.timeout_ms)

    def acknowledged(self, replies: list[Any]) -> int:
        """The fewest replicas any primary confirmed (0 when one could not say)."""
        return min((r if isinstance(r, int) else 0 for r in replies), default=0)


class NotReplicated(Exception):
    """The events were applied on the primary (``applied`` of them) but fewer replicas than
    asked confirmed them in time: a failover now could lose them."""

    def __init__(self, applied: int, acknowledged: int, durability: Durability) -> None:
        super().__init__(
            f"events applied on the primary but confirmed by {acknowledged} of "
            f"{durability.replicas} replicas within {durability.timeout_ms} ms"
        )
        self.applied = applied
        self.acknowledged = acknowledged


@dataclass(frozen=True)
class Pointer:
    """A version as a shard pointer names it."""

    version: str
    buckets: int
    book: dict[str, list[str]]


@dataclass(frozen=True)
class Call:
    """One script call: the batch positions it answers for, its keys and arguments, and
    on a cluster the slot of its keys (-1 on a single node)."""

    positions: list[int]
    keys: list[str]
    args: list[Any]
    slot: int = -1


Rows = list[CustomerOnline]
ReadSteps = Generator[list[Call], list[Any], Rows]


class ReadPlanner:
    """Builds a read's script calls and decodes the replies; remembers the last pointer seen
    (``guess``) so the next read expects it."""

    def __init__(self, layout: Layout, cluster: bool) -> None:
        self.layout = layout
        self.cluster = cluster
        self.guess: Pointer | None = None
        self._pointers: dict[tuple[str, str], Pointer] = {}

    def steps(self, ids: Sequence[str], k: int, spend: bool) -> ReadSteps:
        """Yields the calls to run, receives their replies; returns one row per id."""
        rows: list[CustomerOnline | None] = [None] * len(ids)
        want: dict[int, Pointer | None] = dict.fromkeys(range(len(ids)), self.guess)
        for _ in range(READ_TRIES):
            if not want:
                break
            calls = self._calls(ids, want, k, spend)
            replies = yield calls
            want = self._absorb(ids, want, calls, replies, rows)
        for i, p in want.items():  # the pointer kept changing: no row this time
            rows[i] = CustomerOnline(ids[i], False, version=p.version if p else None)
        return [r for r in rows if r is not None]

    def _calls(
        self, ids: Sequence[str], want: dict[int, Pointer | None], k: int, spend: bool
    ) -> list[Call]:
        """One call per expected version (and per slot on a cluster)."""
        groups: dict[tuple[int, str], Call] = {}
        read_keys, cluster = self.layout.read_keys, self.cluster
        for i, p in want.items():
            ver = p.version if p else ""
            slot, keys = read_keys(ids[i], ver, p.buckets if p else 0, spend)
            group = (slot if cluster else -1, ver)
            call = groups.get(group)
            if call is None:
                call = groups[group] = Call([], [], [k, int(spend), ver], group[0])
            call.positions.append(i)
            call.keys.extend(keys)
        return list(groups.values())

    def _absorb(
        self,
        ids: Sequence[str],
        want: dict[int, Pointer | None],
        calls: list[Call],
        replies: list[Any],
        rows: list[CustomerOnline | None],
    ) -> dict[int, Pointer | None]:
        again: dict[int, Pointer | None] = {}
        for call, reply in zip(calls, replies, strict=True):
            for i, r in zip(call.positions, reply, strict=True):
                kind = int(r[0])
                if kind == 0:
                    rows[i] = parse_customer(ids[i], None, None, None, None, r[1])
                elif kind == 1:
                    again[i] = self.guess = self._pointer(r[1], r[2], r[3])
                else:
                    p = want[i]
                    assert p is not None  # kind 2 answers a read that named a version
                    rows[i] = parse_customer(ids[i], p.version, p.book, r[1], r[2], r[3])
        return again

    def _pointer(self, version: Any, buckets: Any, book: Any) -> Pointer:
        key = (text(version), text(buckets or b"0"))
        p = self._pointers.get(key)
        if p is None:
            p = Pointer(key[0], int(key[1]), json.loads(text(book)) if book else {})
            self._pointers[key] = p
            while len(self._pointers) > 8:
                self._pointers.pop(next(iter(self._pointers)))
        return p


def event_calls(layout: Layout, events: Sequence[PurchaseEvent], cluster: bool) -> list[Call]:
    """The record script's calls for these events (checked first: nothing is sent if one is
    invalid): one on a single node, one per slot on a cluster."""
    head: list[Any] = [RECENT_CAP, RECENT_TTL_S, SPEND_TTL_S, EVENT_ID_TTL_S]
    calls: dict[int, Call] = {}
    for pos, e in enumerate(events):
        if e.type not in ("purchase", "return"):
            raise ValueError(f"event type must be 'purchase' or 'return', got {e.type!r}")
        cid = e.customer_id
        shard = layout.shard(cid)
        group = layout.slots[shard] if cluster else -1
        call = calls.get(group)
        if call is None:
            call = calls[group] = Call([], [], list(head), group)
        qty = abs(e.quantity) if e.type == "purchase" else -abs(e.quantity)
        call.positions.append(pos)
        call.keys.extend(
            [
                layout.pointer(shard),
                layout.recent(cid),
                layout.spend(cid),
                layout.event(cid, e.event_id or ""),
            ]
        )
        call.args.extend(
            [
                e.item_id,
                e.ts.timestamp(),
                qty * (e.unit_price or 0.0),
                e.type,
                1 if e.event_id else 0,
            ]
        )
    return list(calls.values())
