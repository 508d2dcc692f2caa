"""Candidate generation (pure numpy/FAISS; no FastAPI, no Redis).

INTERFACE STUB — ``CandidateSet`` is the contract between candidate generation and the rules
engine (serving/rules/), shared by the API and batch email picks.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np


class Source(IntEnum):
    ALS = 0  # FAISS search on the customer's (or folded-in) vector
    COPURCHASE = 1  # neighbour of a recent purchase (anchor = that purchase)
    POPULAR_TIER = 2  # popular in the customer's tier
    POPULAR = 3  # popular overall


@dataclass
class CandidateSet:
    """Blended candidates for one customer, best first; arrays of equal length, no duplicates."""

    item_idx: np.ndarray  # int32, bundle item index
    score: np.ndarray  # float32, blended score (higher is better)
    source: np.ndarray  # int8, Source of the best contribution
    anchor_idx: np.ndarray  # int32, item index that triggered a co-purchase candidate, else -1

    def __len__(self) -> int:
        return len(self.item_idx)
