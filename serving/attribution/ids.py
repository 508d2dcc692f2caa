"""Recommendation ids and experiment names.

A recommendation id is ``<yyyymmdd>-<32 hex>``: the UTC day of the answer, then 128 random
bits (``secrets``). The day says which day's counters an outcome counts in and lets expired
answers be recognised without a lookup; the random part makes an id unguessable. Neither says
anything about the customer. The first random byte picks one of ``AB_SHARDS`` hash tags, so
the answers spread over a cluster's nodes, and an outcome's script finds the answer and the
counters it updates in one slot.

An experiment is the pair of model versions that split the traffic: ``<champion>~<challenger>``
(``-`` when no challenger is loaded). Counters are kept per experiment, so a reload that brings
a new challenger starts new counts instead of mixing two challengers.
"""

from __future__ import annotations

import re
import secrets
import time
from functools import lru_cache

AB_SHARDS = 64
ID_PATTERN = r"^[0-9]{8}-[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)
NO_CHALLENGER = "-"
_UNSAFE = re.compile(r"[|~]")


@lru_cache(maxsize=64)
def _day(day_number: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(day_number * 86_400))


def day_of_ts(ts: float) -> str:
    """The UTC day of a unix time, as ids and counter keys write it (``yyyymmdd``)."""
    return _day(int(ts // 86_400))


def new_id(now: float) -> str:
    return f"{_day(int(now // 86_400))}-{secrets.token_hex(16)}"


def is_id(text: str) -> bool:
    return _ID.match(text) is not None


def shard_of(rec_id: str) -> int:
    return int(rec_id[9:11], 16) % AB_SHARDS


def day_of(rec_id: str) -> str:
    return rec_id[:8]


def _safe(version: str) -> str:
    return _UNSAFE.sub("_", version)


def experiment_of(champion: str, challenger: str | None) -> str:
    """The experiment name of a champion/challenger pair of model versions."""
    return f"{_safe(champion)}~{_safe(challenger) if challenger else NO_CHALLENGER}"


def versions_of(experiment: str) -> tuple[str, str | None]:
    champion, _, challenger = experiment.partition("~")
    return champion, None if challenger in ("", NO_CHALLENGER) else challenger
