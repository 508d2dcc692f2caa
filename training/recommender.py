"""The one contract every Patron recommender satisfies, plus shared top-n helpers.

Indices are internal: row i of ``user_items`` is customer i, column j is item j (the id maps
live in ``training.interactions.Interactions``). Scores are float32, picks are int32 with -1
padding when fewer than ``n`` items are eligible.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self, runtime_checkable

import numpy as np
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
    """Best ``n`` columns per row of ``scores`` (modified in place when ``exclude`` is given).

    ``exclude`` is a CSR matrix with one row per row of ``scores``; its non-zeros are removed.
    Non-finite scores never make the list; short rows are padded with -1 / -inf.
    """
    scores = np.asarray(scores, dtype=np.float32)
    n_rows, n_cols = scores.shape
    if exclude is not None:
        ex = exclude.tocsr()
        rows = np.repeat(np.arange(n_rows), np.diff(ex.indptr))
        scores[rows, ex.indices] = -np.inf
    scores[~np.isfinite(scores)] = -np.inf
    n_eff = min(n, n_cols)
    if n_eff <= 0:
        return np.full((n_rows, n), -1, np.int32), np.full((n_rows, n), -np.inf, np.float32)
    part = np.argpartition(-scores, n_eff - 1, axis=1)[:, :n_eff]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.argsort(-part_scores, axis=1, kind="stable")
    ids = np.take_along_axis(part, order, axis=1).astype(np.int32)
    best = np.take_along_axis(part_scores, order, axis=1).astype(np.float32)
    ids[~np.isfinite(best)] = -1
    if n_eff < n:
        ids = np.hstack([ids, np.full((n_rows, n - n_eff), -1, np.int32)])
        best = np.hstack([best, np.full((n_rows, n - n_eff), -np.inf, np.float32)])
    return ids, best


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
