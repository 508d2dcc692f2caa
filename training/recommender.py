"""The one contract every Patron recommender satisfies, plus shared top-n helpers.

Indices are internal: row i of ``user_items`` is customer i, column j is item j (the id maps
live in ``training.interactions.Interactions``). Scores are float32, picks are int32 with -1
padding when fewer than ``n`` items are eligible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
from numba import njit
from scipy import sparse


@runtime_checkable
class Recommender(Protocol):
    """fit / score / recommend / similar_items / save / load, no pickle anywhere."""

    name: str

    def fit(self, user_items: sparse.csr_matrix) -> Self:
        """Learn from a customers x items confidence matrix (CSR, float32)."""
        ...

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        """Dense (len(user_idx), n_items) float32 scores; ``user_items`` is the full matrix."""
        ...

    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sparse.csr_matrix,
        n: int = 10,
        filter_already_bought: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` (item indices, scores) per customer in ``user_idx``, best first."""
        ...

    def similar_items(self, item_idx: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` most similar items (excluding the item itself) per item in ``item_idx``."""
        ...

    def save(self, path: Path) -> None:
        """Write to a directory as .npy / JSON files (never pickle)."""
        ...

    @classmethod
    def load(cls, path: Path) -> Self:
        """Read what ``save`` wrote."""
        ...


def top_n(
    scores: np.ndarray, n: int, exclude: sparse.csr_matrix | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` columns per row of ``scores`` (modified in place when ``exclude`` is given):
    score descending, then column ascending on ties.

    ``exclude`` is a CSR matrix with one row per row of ``scores``; its non-zeros are removed.
    Non-finite scores never make the list; short rows are padded with -1 / -inf. One compiled
    pass per row (``_best_per_row``): on 10,000 customers x 100,000 items it replaces an
    ``argpartition`` over a negated copy that cost ~7 s per model in training's validation.
    """
    scores = np.ascontiguousarray(scores, dtype=np.float32)
    n_rows = scores.shape[0]
    if exclude is not None:
        ex = exclude.tocsr()
        rows = np.repeat(np.arange(n_rows), np.diff(ex.indptr))
        scores[rows, ex.indices] = -np.inf
    ids = np.full((n_rows, max(n, 0)), -1, np.int32)
    best = np.full((n_rows, max(n, 0)), -np.inf, np.float32)
    if n > 0 and scores.shape[1] > 0:
        _best_per_row(scores, ids, best)
    return ids, best


@njit(cache=True, nogil=True)
def _best_per_row(scores: np.ndarray, ids: np.ndarray, best: np.ndarray) -> None:
    """Fill ``ids``/``best`` (pre-filled -1 / -inf, n columns) with each row's best finite
    scores: an insertion into the sorted list, entered only by a score above its last."""
    n = ids.shape[1]
    for r in range(scores.shape[0]):
        count = 0
        for j in range(scores.shape[1]):
            s = scores[r, j]
            if not np.isfinite(s):
                continue
            if count == n and not s > best[r, n - 1]:
                continue
            pos = count if count < n else n - 1
            while pos > 0 and best[r, pos - 1] < s:  # equal scores keep the lower column first
                best[r, pos] = best[r, pos - 1]
                ids[r, pos] = ids[r, pos - 1]
                pos -= 1
            best[r, pos] = s
            ids[r, pos] = j
            if count < n:
                count += 1


def recommend_by_scoring(
    model: Recommender,
    user_idx: np.ndarray,
    user_items: sparse.csr_matrix,
    n: int,
    filter_already_bought: bool,
    batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """``recommend`` for any model with ``score``: dense scores in batches, then ``top_n``."""
    user_idx = np.asarray(user_idx, dtype=np.int64)
    ids_out = np.full((len(user_idx), n), -1, np.int32)
    sc_out = np.full((len(user_idx), n), -np.inf, np.float32)
    for start in range(0, len(user_idx), batch):
        users = user_idx[start : start + batch]
        scores = model.score(users, user_items)
        exclude = user_items[users] if filter_already_bought else None
        ids, sc = top_n(scores, n, exclude)
        ids_out[start : start + len(users)] = ids
        sc_out[start : start + len(users)] = sc
    return ids_out, sc_out


class ScoringRecommender:
    """Mixin: ``recommend`` from the model's own ``score`` (dense scores, then ``top_n``)."""

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        raise NotImplementedError

    def recommend(
        self,
        user_idx: np.ndarray,
        user_items: sparse.csr_matrix,
        n: int = 10,
        filter_already_bought: bool = True,
    ) -> tuple[np.ndarray, np.ndarray]:
        return recommend_by_scoring(self, user_idx, user_items, n, filter_already_bought)  # type: ignore[arg-type]


def similar_from_table(
    table: sparse.csr_matrix, item_idx: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` neighbours from a sparse item x item table, the item itself excluded."""
    item_idx = np.asarray(item_idx, dtype=np.int64)
    rows = table[item_idx].toarray().astype(np.float32)
    rows[rows == 0] = -np.inf
    rows[np.arange(len(item_idx)), item_idx] = -np.inf
    return top_n(rows, n)
