"""The admin state every worker and replica serves from, kept in Redis.

One hash ``<ns>:{admin}:state`` holds the active rule set (its JSON and version) and the
model pin (the champion's and challenger's registry versions and bundle fingerprints), each
with who changed it and when, and an ``epoch`` that every change increments. A list
``<ns>:{admin}:log`` keeps the last 1,000 changes. Both keys share the ``{admin}`` hash tag,
so the one script that writes them also runs on Redis Cluster.

A change is one script call: it compares the new value with the stored one, writes it,
increments the epoch and appends the log entry atomically; an unchanged value writes nothing.
Workers poll the epoch (serving/admin_sync.py), so every worker converges on a change within
the poll interval plus the time to apply it, and a restarted worker starts from the stored
state, not from its files.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import redis.asyncio as aioredis

LOG_LENGTH = 1_000

# KEYS: state hash, log list. ARGV: field, value, version, by, at, mode, log entry (JSON
# without the epoch), log length. mode "absent": write only when nothing is stored;
# "differ": write when the stored version differs. Returns the new epoch, or 0 when nothing
# was written.
_CHANGE = """
local cur = redis.call('HGET', KEYS[1], ARGV[1] .. '_version')
if ARGV[6] == 'absent' and cur then return 0 end
if cur == ARGV[3] then return 0 end
local epoch = redis.call('HINCRBY', KEYS[1], 'epoch', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2], ARGV[1] .. '_version', ARGV[3],
  ARGV[1] .. '_by', ARGV[4], ARGV[1] .. '_at', ARGV[5])
local entry = cjson.decode(ARGV[7])
entry['epoch'] = epoch
redis.call('LPUSH', KEYS[2], cjson.encode(entry))
redis.call('LTRIM', KEYS[2], 0, tonumber(ARGV[8]) - 1)
return epoch
"""

Field = Literal["rules", "model"]


@dataclass(frozen=True)
class ModelPin:
    """Which bundles every worker serves: registry versions (empty for a local bundle
    directory) and the fingerprints of the bundles the pinning worker loaded."""

    champion_version: str
    champion_fingerprint: str
    challenger_version: str | None = None
    challenger_fingerprint: str | None = None

    @property
    def key(self) -> str:
        """The pin's identity: versions and fingerprints of both models."""
        return "|".join(
            (
                self.champion_version,
                self.champion_fingerprint,
                self.challenger_version or "",
                self.challenger_fingerprint or "",
            )
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelPin:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Stamp:
    """Who set a value and when."""

    version: str
    by: str
    at: str

    @property
    def source(self) -> str:
        """How a rule set from the shared state names its source, on every worker alike."""
        return f"shared admin state (set by {self.by} at {self.at})"


@dataclass(frozen=True)
class Snapshot:
    epoch: int
    rules: dict[str, Any] | None
    rules_stamp: Stamp | None
    model: ModelPin | None
    model_stamp: Stamp | None


def worker_name() -> str:
    """This process, as the log of changes names it: host and pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _text(v: bytes | str) -> str:
    return v.decode() if isinstance(v, bytes) else v


def _stamp(h: dict[str, str], field: str) -> Stamp | None:
    version = h.get(f"{field}_version")
    if version is None:
        return None
    return Stamp(version, h.get(f"{field}_by", ""), h.get(f"{field}_at", ""))


class AdminState:
    """Reads and changes the shared admin state (an async Redis client that decodes
    nothing; values are UTF-8 JSON)."""

    def __init__(self, client: aioredis.Redis, namespace: str) -> None:
        self.client = client
        self.state_key = f"{namespace}:{{admin}}:state"
        self.log_key = f"{namespace}:{{admin}}:log"
        self._change = client.register_script(_CHANGE)

    async def epoch(self) -> int:
        raw = await self.client.hget(self.state_key, "epoch")
        return int(raw) if raw is not None else 0

    async def read(self) -> Snapshot:
        raw = await self.client.hgetall(self.state_key)
        h = {_text(k): _text(v) for k, v in raw.items()}
        rules = json.loads(h["rules"]) if "rules" in h else None
        model = ModelPin.from_json(h["model"]) if "model" in h else None
        return Snapshot(
            int(h.get("epoch", 0)), rules, _stamp(h, "rules"), model, _stamp(h, "model")
        )

    async def change(
        self,
        field: Field,
        value: str,
        version: str,
        by: str,
        *,
        previous: str | None = None,
        only_if_absent: bool = False,
        at: str | None = None,
    ) -> int:
        """Store ``value`` under ``field`` unless the stored version is ``version`` already
        (or, with ``only_if_absent``, unless anything is stored): the new epoch, else 0."""
        at = at or now()
        entry = {
            "what": field,
            "version": version,
            "previous": previous,
            "by": by,
            "at": at,
            "worker": worker_name(),
        }
        mode = "absent" if only_if_absent else "differ"
        args: list[str | int] = [field, value, version, by, at, mode, json.dumps(entry), LOG_LENGTH]
        epoch = await self._change(keys=[self.state_key, self.log_key], args=args)
        return int(epoch)

    async def changes(self, limit: int = 50) -> list[dict[str, Any]]:
        """The latest changes, newest first."""
        raw = await self.client.lrange(self.log_key, 0, limit - 1)
        return [json.loads(r) for r in raw]
