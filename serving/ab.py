"""Stable A/B assignment: the same customer always lands in the same variant."""

from __future__ import annotations

import hashlib
from typing import Literal

Variant = Literal["champion", "challenger"]


def bucket(customer_id: str) -> float:
    """A uniform number in [0, 1) derived from the customer id alone (blake2b, 64 bits)."""
    digest = hashlib.blake2b(customer_id.encode(), digest_size=8, person=b"patron-ab").digest()
    return int.from_bytes(digest, "big") / 2.0**64


def assign_variant(customer_id: str, challenger_traffic: float) -> Variant:
    return "challenger" if bucket(customer_id) < challenger_traffic else "champion"
