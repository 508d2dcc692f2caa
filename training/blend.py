"""The served blend: ALS candidates + co-purchase of bought/recent items + popularity fallback.

Scoring formula (serving implements the same one over its candidate set, see docs/training.md):
for each source s in (als, copurchase, popular) the customer's scores over the eligible items
(not already bought) are divided by that source's best eligible score for the customer
(sources whose best score is <= 0 contribute nothing), then

    blend = w_als * als_norm + w_copurchase * copurchase_norm + w_popular * popular_norm

with the weights stored in the bundle manifest (``Manifest.blend``). A customer without
history gets only popularity, which is the fallback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np
from scipy import sparse

from training.recommender import Recommender, ScoringRecommender, top_n

DEFAULT_WEIGHTS = {"als": 0.35, "copurchase": 1.0, "popular": 0.05}


def normalise(scores: np.ndarray, exclude: sparse.csr_matrix | None) -> np.ndarray:
    """Divide each row by its best eligible score; excluded items get 0."""
    s = np.array(scores, dtype=np.float32, copy=True)
    if exclude is not None:
        ex = exclude.tocsr()
        rows = np.repeat(np.arange(s.shape[0]), np.diff(ex.indptr))
        s[rows, ex.indices] = -np.inf
    best = s.max(axis=1, initial=-np.inf)
    scale = np.where(best > 0, best, np.inf).astype(np.float32)
    out = s / scale[:, None]
    out[~np.isfinite(out)] = 0.0
    return out


class BlendRecommender(ScoringRecommender):
    """Weighted sum of max-normalised source scores (weights chosen on validation data)."""

    name = "blend"

    def __init__(self, sources: dict[str, Recommender], weights: dict[str, float]) -> None:
        unknown = set(weights) - set(sources)
        if unknown:
            raise ValueError(f"blend weights for unknown sources: {sorted(unknown)}")
        self.sources = sources
        self.weights = dict(weights)

    def fit(self, user_items: sparse.csr_matrix) -> Self:
        for model in self.sources.values():
            model.fit(user_items)
        return self

    def source_scores(
        self, user_idx: np.ndarray, user_items: sparse.csr_matrix
    ) -> dict[str, np.ndarray]:
        """Normalised per-source scores (computed once, reused when tuning weights)."""
        exclude = user_items[np.asarray(user_idx)]
        return {
            name: normalise(model.score(user_idx, user_items), exclude)
            for name, model in self.sources.items()
            if self.weights.get(name, 0.0) != 0.0
        }

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        parts = self.source_scores(user_idx, user_items)
        total = np.zeros((len(user_idx), user_items.shape[1]), np.float32)
        for name, s in parts.items():
            total += np.float32(self.weights[name]) * s
        return total

    def similar_items(self, item_idx: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Weighted sum of the sources' similar-item lists (scores as returned)."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        rows, cols, vals = [], [], []
        for name, model in self.sources.items():
            w = self.weights.get(name, 0.0)
            if w == 0.0:
                continue
            ids, sc = model.similar_items(item_idx, n)
            ok = (ids >= 0) & np.isfinite(sc)
            r = np.broadcast_to(np.arange(len(item_idx))[:, None], ids.shape)
            rows.append(r[ok])
            cols.append(ids[ok])
            vals.append(w * sc[ok])
        if not rows:
            return top_n(np.zeros((len(item_idx), 0), np.float32), n)
        c = np.concatenate(cols)
        width = int(max(c.max(initial=-1), item_idx.max(initial=-1))) + 1
        acc = sparse.coo_matrix(
            (np.concatenate(vals), (np.concatenate(rows), c)), shape=(len(item_idx), width)
        ).toarray()
        acc[acc == 0] = -np.inf
        return top_n(acc.astype(np.float32), n)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        for name, model in self.sources.items():
            model.save(path / name)
        (path / "blend.json").write_text(json.dumps({"weights": self.weights}, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        from training.als import ALSRecommender
        from training.copurchase import CoPurchaseRecommender
        from training.popularity import PopularityRecommender

        path = Path(path)
        kinds: dict[str, type[Recommender]] = {
            "als": ALSRecommender,
            "copurchase": CoPurchaseRecommender,
            "popular": PopularityRecommender,
        }
        weights = json.loads((path / "blend.json").read_text())["weights"]
        sources: dict[str, Recommender] = {
            name: kind.load(path / name) for name, kind in kinds.items() if (path / name).is_dir()
        }
        return cls(sources, weights)


__all__ = ["DEFAULT_WEIGHTS", "BlendRecommender", "normalise", "top_n"]
