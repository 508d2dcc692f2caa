"""Popularity baseline: items ranked by number of distinct buyers, overall and per tier.

Per-tier popularity counts only buyers of that tier; a customer is scored with their tier's
popularity (customers without a known tier use the lowest tier, ``bronze``; with no tier data
at all every customer is bronze and tier popularity equals overall popularity). Scores are
buyer counts normalised to [0, 1] by the top item's count.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Self

import numpy as np
import polars as pl
from scipy import sparse

from features.schemas import DEFAULT_TIERS
from training.recommender import ScoringRecommender, top_n


def buyer_counts(user_items: sparse.csr_matrix, rows: np.ndarray | None = None) -> np.ndarray:
    """Distinct buyers per item (optionally among ``rows`` only)."""
    m = user_items.tocsr()
    if rows is not None:
        m = m[rows]
    return np.bincount(m.indices, minlength=m.shape[1]).astype(np.float64)


class PopularityRecommender(ScoringRecommender):
    """Overall or per-tier popularity; ``user_tiers[u]`` is an index into ``tiers``."""

    name = "popular"

    def __init__(
        self, user_tiers: np.ndarray | None = None, tiers: tuple[str, ...] = DEFAULT_TIERS
    ) -> None:
        self.tiers = tuple(tiers)
        self.user_tiers = user_tiers
        self.overall = np.zeros(0, np.float32)
        self.by_tier = np.zeros((len(self.tiers), 0), np.float32)

    def fit(self, user_items: sparse.csr_matrix) -> Self:
        counts = buyer_counts(user_items)
        self.overall = (counts / max(counts.max(initial=0.0), 1.0)).astype(np.float32)
        rows = []
        for t in range(len(self.tiers)):
            if self.user_tiers is None:
                rows.append(self.overall)
                continue
            c = buyer_counts(user_items, np.flatnonzero(self.user_tiers == t))
            rows.append(
                (c / c.max()).astype(np.float32) if c.max(initial=0.0) > 0 else self.overall
            )
        self.by_tier = np.vstack(rows) if rows else self.by_tier
        return self

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        user_idx = np.asarray(user_idx)
        if self.user_tiers is None:
            return np.tile(self.overall, (len(user_idx), 1))
        return np.asarray(self.by_tier[self.user_tiers[user_idx]], dtype=np.float32)

    def similar_items(self, item_idx: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Popularity has no notion of similarity: the most popular other items."""
        item_idx = np.asarray(item_idx, dtype=np.int64)
        scores = np.tile(self.overall, (len(item_idx), 1))
        scores[np.arange(len(item_idx)), item_idx] = -np.inf
        return top_n(scores, n)

    def table(self, catalog: pl.DataFrame | None = None, keep: int = 1000) -> pl.DataFrame:
        """Bundle popularity table: scope, key, item_idx, score, rank (top ``keep`` per key)."""
        parts = [_ranked("overall", "all", self.overall, keep)]
        parts += [_ranked("tier", t, self.by_tier[k], keep) for k, t in enumerate(self.tiers)]
        if catalog is not None and "category" in catalog.columns:
            cats = catalog["category"].fill_null("unknown").to_numpy()
            for cat in np.unique(cats):
                mask = cats == cat
                s = np.where(mask, self.overall, 0.0).astype(np.float32)
                parts.append(_ranked("category", str(cat), s, min(keep, int(mask.sum()))))
        return pl.concat(parts)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "popularity_overall.npy", self.overall, allow_pickle=False)
        np.save(path / "popularity_by_tier.npy", self.by_tier, allow_pickle=False)
        if self.user_tiers is not None:
            np.save(path / "popularity_user_tiers.npy", self.user_tiers, allow_pickle=False)
        (path / "popularity.json").write_text(json.dumps({"tiers": list(self.tiers)}))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        tiers = tuple(json.loads((path / "popularity.json").read_text())["tiers"])
        ut = path / "popularity_user_tiers.npy"
        model = cls(np.load(ut, allow_pickle=False) if ut.is_file() else None, tiers)
        model.overall = np.load(path / "popularity_overall.npy", allow_pickle=False)
        model.by_tier = np.load(path / "popularity_by_tier.npy", allow_pickle=False)
        return model


def _ranked(scope: str, key: str, scores: np.ndarray, keep: int) -> pl.DataFrame:
    k = min(keep, len(scores))
    order = np.argsort(-scores, kind="stable")[:k]
    order = order[scores[order] > 0]
    return pl.DataFrame(
        {
            "scope": pl.Series([scope] * len(order), dtype=pl.String),
            "key": pl.Series([key] * len(order), dtype=pl.String),
            "item_idx": order.astype(np.int32),
            "score": scores[order].astype(np.float32),
            "rank": np.arange(1, len(order) + 1, dtype=np.int32),
        }
    )


def tiers_for(
    customer_ids: np.ndarray,
    customers: pl.DataFrame | None,
    tiers: tuple[str, ...] = DEFAULT_TIERS,
) -> np.ndarray | None:
    """Tier index per customer from a features table (customer_id, tier); unknown -> lowest."""
    if customers is None:
        return None
    if "tier" not in customers.columns or "customer_id" not in customers.columns:
        raise ValueError("customer features need 'customer_id' and 'tier' columns")
    lut = {t: k for k, t in enumerate(tiers)}
    frame = pl.DataFrame({"customer_id": np.asarray(customer_ids).astype(str)}).join(
        customers.select(pl.col("customer_id").cast(pl.String), pl.col("tier").cast(pl.String)),
        on="customer_id",
        how="left",
        maintain_order="left",
    )
    idx = frame["tier"].replace_strict(lut, default=0, return_dtype=pl.Int16).fill_null(0)
    return idx.to_numpy()
