"""Recommendation ids and experiment names.

A recommendation id is ``<yyyymmddhh><m>-<32 hex>``: the UTC day, hour and ten-minute bucket
of the answer, then 128 random bits (``secrets``). The bucket says which hash holds the answer
(answers are written ten minutes to a hash, one command per hash and flush) and the day which
day's counters its outcomes count in; the random part makes an id unguessable. Neither says
anything about the customer. The first random byte picks one of ``AB_SHARDS`` hash tags, so
the answers spread over a cluster's nodes, and an outcome's script finds the answer and the
counters it updates in one slot.

An experiment is the pair of model versions that split the traffic: ``<champion>~<challenger>``
(``-`` when no challenger is loaded). Counters are kept per experiment, so a reload that brings
a new challenger starts new counts instead of mixing two challengers.
"""

from __future__ import annotations

import calendar
import re
import secrets
import time
from functools import lru_cache

AB_SHARDS = 16
BUCKET_S = 600  # answers of ten minutes share a hash per shard
ID_PATTERN = r"^[0-9]{11}-[0-9a-f]{32}$"
_ID = re.compile(ID_PATTERN)
NO_CHALLENGER = "-"
_UNSAFE = re.compile(r"[|~]")


@lru_cache(maxsize=64)
def _day(day_number: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(day_number * 86_400))


def day_of_ts(ts: float) -> str:
    """The UTC day of a unix time, as ids and counter keys write it (``yyyymmdd``)."""
    return _day(int(ts // 86_400))


@lru_cache(maxsize=64)
def _bucket(bucket_number: int) -> str:
    t = time.gmtime(bucket_number * BUCKET_S)
    return time.strftime("%Y%m%d%H", t) + str(t.tm_min // 10)


def new_id(now: float) -> str:
    return f"{_bucket(int(now // BUCKET_S))}-{secrets.token_hex(16)}"


def bucket_of(rec_id: str) -> str:
    return rec_id[:11]


def bucket_end(bucket: str) -> int:
    """The unix time a bucket (``yyyymmddhhm``) ends."""
    start = time.strptime(bucket[:10], "%Y%m%d%H")
    return int(calendar.timegm(start)) + (int(bucket[10]) + 1) * BUCKET_S


def is_id(text: str) -> bool:
    return _ID.match(text) is not None


def shard_of(rec_id: str) -> int:
    return int(rec_id[12:14], 16) % AB_SHARDS


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
