"""Implicit-feedback matrix factorisation (``implicit`` CPU ALS) behind the Recommender protocol.

Confidence fed to ALS is ``alpha * weighting(C)`` where C is the interactions matrix and
weighting is ``bm25`` (implicit's BM25 row/column normalisation, damps heavy buyers and
blockbuster items), ``log`` (log1p) or ``none``. Threads: ``num_threads=0`` uses every core;
set ``OPENBLAS_NUM_THREADS=1`` so BLAS does not oversubscribe them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, Self

import numpy as np
from scipy import sparse

from training.recommender import ScoringRecommender, top_n

log = logging.getLogger(__name__)

Weighting = Literal["bm25", "log", "none"]


@dataclass
class ALSParams:
    """Defaults chosen by ``patron tune`` on ML-100K validation data (docs/training.md)."""

    factors: int = 64
    regularization: float = 0.05
    alpha: float = 2.0
    iterations: int = 15
    weighting: Weighting = "bm25"
    bm25_k1: float = 100.0
    bm25_b: float = 0.8
    random_state: int = 42
    num_threads: int = 0


def confidence(user_items: sparse.csr_matrix, p: ALSParams) -> sparse.csr_matrix:
    """The weighted confidence matrix ALS is fitted on (float32 CSR)."""
    x = user_items.tocsr().astype(np.float32)
    if p.weighting == "bm25":
        from implicit.nearest_neighbours import bm25_weight

        x = bm25_weight(x, K1=p.bm25_k1, B=p.bm25_b).tocsr()
    elif p.weighting == "log":
        x = x.copy()
        x.data = np.log1p(x.data)
    elif p.weighting != "none":
        raise ValueError(f"unknown weighting {p.weighting!r}; use bm25, log or none")
    x = (x * p.alpha).astype(np.float32).tocsr()
    return x


class ALSRecommender(ScoringRecommender):
    """``implicit`` ALS; factors are kept as float32 numpy arrays."""

    name = "als"

    def __init__(self, params: ALSParams | None = None, show_progress: bool = False) -> None:
        self.params = params or ALSParams()
        self.show_progress = show_progress
        self.user_factors = np.zeros((0, self.params.factors), np.float32)
        self.item_factors = np.zeros((0, self.params.factors), np.float32)

    def fit(self, user_items: sparse.csr_matrix) -> Self:
        from implicit.cpu.als import AlternatingLeastSquares

        p = self.params
        model = AlternatingLeastSquares(
            factors=p.factors,
            regularization=p.regularization,
            alpha=1.0,  # alpha is applied in ``confidence`` so the weighting is explicit
            iterations=p.iterations,
            random_state=p.random_state,
            num_threads=p.num_threads,
        )
        model.fit(confidence(user_items, p), show_progress=self.show_progress)
        self._model = model
        self.user_factors = np.ascontiguousarray(model.user_factors, dtype=np.float32)
        self.item_factors = np.ascontiguousarray(model.item_factors, dtype=np.float32)
        return self

    def refresh_users(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> None:
        """Re-solve the factors of ``user_idx`` from their rows of ``user_items`` (item
        factors fixed): one exact ALS user step, e.g. after new purchases."""
        from implicit.cpu.als import AlternatingLeastSquares

        user_idx = np.asarray(user_idx, dtype=np.int64)
        if len(user_idx) == 0:
            return
        model = getattr(self, "_model", None)
        if model is None:
            p = self.params
            model = AlternatingLeastSquares(
                factors=p.factors,
                regularization=p.regularization,
                alpha=1.0,
                num_threads=p.num_threads,
            )
            model.item_factors = self.item_factors
            model.user_factors = self.user_factors
            self._model = model
        rows = confidence(user_items.tocsr()[user_idx], self.params)
        self.user_factors[user_idx] = model.recalculate_user(user_idx, rows)

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        return np.asarray(self.user_factors[np.asarray(user_idx)] @ self.item_factors.T)

    def similar_items(self, item_idx: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        item_idx = np.asarray(item_idx, dtype=np.int64)
        norms = np.linalg.norm(self.item_factors, axis=1)
        norms[norms == 0] = 1.0
        unit = self.item_factors / norms[:, None]
        sims = unit[item_idx] @ unit.T
        sims[np.arange(len(item_idx)), item_idx] = -np.inf
        return top_n(sims, n)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "user_factors.npy", self.user_factors, allow_pickle=False)
        np.save(path / "item_factors.npy", self.item_factors, allow_pickle=False)
        (path / "als.json").write_text(json.dumps(asdict(self.params), indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        model = cls(ALSParams(**json.loads((path / "als.json").read_text())))
        model.user_factors = np.load(path / "user_factors.npy", allow_pickle=False)
        model.item_factors = np.load(path / "item_factors.npy", allow_pickle=False)
        return model
