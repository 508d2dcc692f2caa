"""Top-k ranking metrics with the Microsoft Recommenders definitions (binary relevance).

For every evaluated user u with R_u relevant (held-out) items and a ranked list of k picks:

- precision@k = hits / k
- recall@k    = hits / R_u
- nDCG@k      = sum_{hit ranks r} 1/ln(1+r)  /  sum_{r=1..min(R_u,k)} 1/ln(1+r)
- MAP         = sum_{hit ranks r} (hits up to r / r)  /  R_u

Means are over users with R_u > 0; a user without picks (or with fewer than k) scores zero
for the missing positions. The log base cancels in nDCG, so ln and log2 agree.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def hit_matrix(recs: np.ndarray, truth: sparse.csr_matrix) -> np.ndarray:
    """Boolean (users, k): whether the pick at each rank is in the user's truth row."""
    n_users, _ = recs.shape
    truth = truth.tocsr()
    if truth.shape[0] != n_users:
        raise ValueError(f"truth has {truth.shape[0]} rows, recs has {n_users}; they must align")
    n_items = np.int64(truth.shape[1])
    rows = np.repeat(np.arange(truth.shape[0], dtype=np.int64), np.diff(truth.indptr))
    truth_keys = np.sort(rows * n_items + truth.indices.astype(np.int64))
    rec_keys = np.arange(n_users, dtype=np.int64)[:, None] * n_items + recs.astype(np.int64)
    hits = np.isin(rec_keys, truth_keys)
    return hits & (recs >= 0)


def per_user_metrics(
    recs: np.ndarray,
    truth: sparse.csr_matrix,
    k: int = 10,
    n_relevant: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-user precision, recall, nDCG and average precision for the first ``k`` picks.

    ``n_relevant`` overrides R_u, for held-out items the model cannot represent (e.g. items
    first seen in the test period); it defaults to the number of entries in each truth row.
    """
    recs = np.asarray(recs)[:, :k]
    if recs.shape[1] < k:  # pad short lists; missing positions never hit
        pad = np.full((recs.shape[0], k - recs.shape[1]), -1, dtype=recs.dtype)
        recs = np.hstack([recs, pad])
    hits = hit_matrix(recs, truth).astype(np.float64)
    n_rel = np.diff(truth.tocsr().indptr) if n_relevant is None else np.asarray(n_relevant)
    n_rel = n_rel.astype(np.float64)
    safe = np.maximum(n_rel, 1.0)
    ranks = np.arange(1, k + 1, dtype=np.float64)
    disc = 1.0 / np.log(1.0 + ranks)
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    n_hits = hits.sum(axis=1)
    idcg = ideal[np.minimum(n_rel, k).astype(np.int64)]
    ndcg = np.divide(hits @ disc, idcg, out=np.zeros_like(idcg), where=idcg > 0)
    ap = (hits * np.cumsum(hits, axis=1) / ranks).sum(axis=1) / safe
    return {
        "precision": n_hits / k,
        "recall": n_hits / safe,
        "ndcg": ndcg,
        "map": ap,
        "evaluated": n_rel > 0,
    }


def ranking_metrics(
    recs: np.ndarray,
    truth: sparse.csr_matrix,
    k: int = 10,
    n_relevant: np.ndarray | None = None,
) -> dict[str, float]:
    """Mean MAP, nDCG@k, precision@k, recall@k over users with at least one relevant item."""
    per = per_user_metrics(recs, truth, k, n_relevant)
    mask = per["evaluated"]
    n = int(mask.sum())

    def mean(name: str) -> float:
        return float(per[name][mask].sum() / n) if n else 0.0

    return {
        "map": mean("map"),
        f"ndcg@{k}": mean("ndcg"),
        f"precision@{k}": mean("precision"),
        f"recall@{k}": mean("recall"),
        "users": float(n),
    }


def catalog_coverage(recs: np.ndarray, n_items: int) -> float:
    """Share of the catalog that appears in at least one customer's picks."""
    if n_items <= 0:
        return 0.0
    shown = np.unique(recs[recs >= 0])
    return float(len(shown) / n_items)
