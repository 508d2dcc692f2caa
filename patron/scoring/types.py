"""The scoring library's data: candidate sources and the candidates of a batch of customers.

``CandidateBatch`` is the contract between the scoring library and the business rules
(serving/rules/): one row per customer, best first, -1 padding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Source(IntEnum):
    """Which part of the blend contributed most to a candidate (it decides its reason)."""

    ALS = 0  # the customer's (or the folded-in) vector: "recommended for you"
    COPURCHASE = 1  # the item-item model over the history: "bought together with <anchor>"
    POPULAR_TIER = 2  # popular in the customer's tier
    POPULAR = 3  # popular overall


@dataclass
class CandidateSet:
    """Candidates of one customer or one item, best first; arrays of equal length."""

    item_idx: np.ndarray  # int32, bundle item index
    score: np.ndarray  # float32
    source: np.ndarray  # int8 Source
    anchor_idx: np.ndarray  # int32, the history item behind a co-purchase candidate, else -1

    def __len__(self) -> int:
        return len(self.item_idx)

    @classmethod
    def empty(cls) -> CandidateSet:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.float32),
            np.empty(0, np.int8),
            np.empty(0, np.int32),
        )


@dataclass
class CandidateBatch:
    """Candidates of many customers as (n, C) matrices, best first per row, -1 = padding."""

    item_idx: np.ndarray  # int32
    score: np.ndarray  # float32
    source: np.ndarray  # int8
    anchor_idx: np.ndarray  # int32

    def __len__(self) -> int:
        return self.item_idx.shape[0]

    def row(self, r: int) -> CandidateSet:
        """Row ``r`` without its padding."""
        m = int((self.item_idx[r] >= 0).sum())
        return CandidateSet(
            self.item_idx[r, :m], self.score[r, :m], self.source[r, :m], self.anchor_idx[r, :m]
        )

    @classmethod
    def from_sets(cls, sets: list[CandidateSet]) -> CandidateBatch:
        n, width = len(sets), max((len(c) for c in sets), default=0)
        out = cls(
            item_idx=np.full((n, width), -1, np.int32),
            score=np.zeros((n, width), np.float32),
            source=np.full((n, width), int(Source.ALS), np.int8),
            anchor_idx=np.full((n, width), -1, np.int32),
        )
        for i, c in enumerate(sets):
            m = len(c)
            out.item_idx[i, :m] = c.item_idx
            out.score[i, :m] = c.score
            out.source[i, :m] = c.source
            out.anchor_idx[i, :m] = c.anchor_idx
        return out
