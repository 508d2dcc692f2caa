"""Candidate generation (numpy, FAISS, numba for the inner products; no FastAPI, no Redis).

``CandidateSet`` is the contract between candidate generation and the rules engine
(serving/rules/), shared by the API and batch email picks. Sources:

- ALS: FAISS search on the customer's vector (or a folded-in one, see ``fold_in``),
  over-fetched so enough survive the rules' exclusions;
- COPURCHASE: neighbours of the customer's most recent purchases (training + real-time);
- POPULAR_TIER / POPULAR: popularity fallback.

Each source's scores are min-max scaled to [0.5, 1] and weighted by the bundle's ``blend``;
an item found by several sources adds the contributions (its ``source`` is the largest one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import IntEnum

import faiss
import numpy as np
from scipy import sparse

from serving.index import search


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

    @classmethod
    def empty(cls) -> CandidateSet:
        return cls(
            np.empty(0, np.int32),
            np.empty(0, np.float32),
            np.empty(0, np.int8),
            np.empty(0, np.int32),
        )


@dataclass(frozen=True)
class SourceHits:
    """One source's raw hits: item index, raw score, anchor (-1 when not co-purchase)."""

    source: Source
    item_idx: np.ndarray
    score: np.ndarray
    anchor_idx: np.ndarray | None = None


BLEND_KEYS = {
    Source.ALS: "als",
    Source.COPURCHASE: "copurchase",
    Source.POPULAR_TIER: "popular",
    Source.POPULAR: "popular",
}


def overfetch(k: int, n_excluded: int, n_items: int) -> int:
    """How many ALS neighbours to ask FAISS for so that k survive filtering."""
    return int(min(n_items, max(4 * k, k + n_excluded + 20)))


def als_hits(index: faiss.Index, user_vec: np.ndarray, n: int) -> SourceHits:
    idx, score = search(index, user_vec, n)
    return SourceHits(Source.ALS, idx, score)


def precomputed_scores(
    item_factors: np.ndarray, idx: np.ndarray, user_vecs: np.ndarray
) -> np.ndarray:
    """Inner products of each row's items with its vector: ``idx`` (..., c), ``user_vecs``
    (..., f); -1 scores 0. Summed in float64 in a fixed order (serving/blend_kernel.py) so one
    customer alone and the same customer in a batch get bit-identical scores (a BLAS call may
    sum in a different order)."""
    from serving.blend_kernel import dot_scores

    idx = np.asarray(idx)
    f = item_factors.shape[1]
    out = dot_scores(
        np.asarray(item_factors, np.float32),
        np.ascontiguousarray(idx.reshape(-1, idx.shape[-1]) if idx.ndim else idx[None], np.int32),
        np.ascontiguousarray(np.asarray(user_vecs, np.float32).reshape(-1, f)),
    )
    return out.reshape(idx.shape)


def candidate_scores(
    table: np.ndarray, item_factors: np.ndarray, user_factors: np.ndarray, chunk: int = 65_536
) -> np.ndarray:
    """Every precomputed neighbour's score for its customer (``precomputed_scores`` of each
    row: the bits a request computes), float32, 0 for -1 padding; the bundle's
    ``als_scores.npy``, so requests read a row instead of the items' factors."""
    out = np.empty(table.shape, np.float32)
    for lo in range(0, len(table), chunk):
        hi = min(lo + chunk, len(table))
        out[lo:hi] = precomputed_scores(item_factors, table[lo:hi], user_factors[lo:hi])
    return out


def precomputed_hits(
    table_row: np.ndarray,
    item_factors: np.ndarray,
    user_vec: np.ndarray,
    n: int,
    scores_row: np.ndarray | None = None,
) -> SourceHits:
    """The ALS source from the bundle's precomputed neighbours (``als_candidates``) instead of
    a FAISS search: the first ``n`` of the customer's row, with their stored scores
    (``als_scores``) or scored against the customer's vector (the same bits)."""
    idx = np.asarray(table_row[:n], np.int32)
    keep = idx >= 0
    if scores_row is not None:
        return SourceHits(Source.ALS, idx[keep], np.asarray(scores_row[:n], np.float32)[keep])
    idx = idx[keep]
    return SourceHits(Source.ALS, idx, precomputed_scores(item_factors, idx, user_vec))


def copurchase_hits(
    copurchase: sparse.csr_matrix,
    anchors: np.ndarray,
    *,
    max_anchors: int = 10,
    per_anchor: int = 20,
) -> SourceHits:
    """Neighbours of the most recent purchases (``anchors`` newest first); a neighbour of a
    more recent purchase is discounted less (1 / (1 + position))."""
    anchors = np.asarray(anchors, dtype=np.int64)[:max_anchors]
    indptr, indices, data = copurchase.indptr, copurchase.indices, copurchase.data
    parts_i, parts_s, parts_a = [], [], []
    for pos, a in enumerate(anchors.tolist()):
        lo, hi = int(indptr[a]), int(indptr[a + 1])
        hi = min(hi, lo + per_anchor)
        if hi <= lo:
            continue
        parts_i.append(indices[lo:hi])
        parts_s.append(data[lo:hi] / (1.0 + pos))
        parts_a.append(np.full(hi - lo, a, dtype=np.int32))
    if not parts_i:
        return SourceHits(Source.COPURCHASE, np.empty(0, np.int32), np.empty(0, np.float32))
    return SourceHits(
        Source.COPURCHASE,
        np.concatenate(parts_i).astype(np.int32),
        np.concatenate(parts_s).astype(np.float32),
        np.concatenate(parts_a),
    )


def _scaled(score: np.ndarray) -> np.ndarray:
    if len(score) == 0:
        return score.astype(np.float32)
    lo, hi = float(score.min()), float(score.max())
    if hi - lo <= 1e-12:
        return np.ones(len(score), dtype=np.float32)
    return (0.5 + 0.5 * (score - lo) / (hi - lo)).astype(np.float32)


def blend(hits: Sequence[SourceHits], weights: Mapping[str, float]) -> CandidateSet:
    """Merge source hits into one de-duplicated, best-first CandidateSet."""
    parts = [h for h in hits if len(h.item_idx)]
    if not parts:
        return CandidateSet.empty()
    item = np.concatenate([h.item_idx for h in parts]).astype(np.int32)
    contrib = np.concatenate(
        [_scaled(h.score) * float(weights.get(BLEND_KEYS[h.source], 0.0)) for h in parts]
    )
    src = np.concatenate([np.full(len(h.item_idx), int(h.source), np.int8) for h in parts])
    anchor = np.concatenate(
        [
            h.anchor_idx if h.anchor_idx is not None else np.full(len(h.item_idx), -1, np.int32)
            for h in parts
        ]
    ).astype(np.int32)
    uniq, inv = np.unique(item, return_inverse=True)
    total = np.bincount(inv, weights=contrib, minlength=len(uniq))
    # best single contribution per item decides source and anchor
    order = np.lexsort((-contrib, inv))
    first = order[np.r_[True, inv[order][1:] != inv[order][:-1]]]
    best = first  # sorted by inv, i.e. aligned with uniq
    rank = np.argsort(-total, kind="stable")
    return CandidateSet(
        item_idx=uniq[rank].astype(np.int32),
        score=total[rank].astype(np.float32),
        source=src[best][rank],
        anchor_idx=anchor[best][rank],
    )


def generate(
    *,
    index: faiss.Index,
    copurchase: sparse.csr_matrix,
    popular_idx: np.ndarray,
    popular_score: np.ndarray,
    popular_source: Source,
    weights: Mapping[str, float],
    user_vec: np.ndarray | None,
    recent_idx: np.ndarray,
    n_als: int,
    n_popular: int = 100,
    als: SourceHits | None = None,
) -> CandidateSet:
    """All sources for one customer, blended. ``user_vec`` None = no ALS source; ``als``
    given = the ALS source was already found (precomputed neighbours), no search."""
    hits: list[SourceHits] = []
    if als is not None:
        hits.append(als)
    elif user_vec is not None and n_als > 0:
        hits.append(als_hits(index, user_vec, n_als))
    if len(recent_idx):
        hits.append(copurchase_hits(copurchase, recent_idx))
    hits.append(SourceHits(popular_source, popular_idx[:n_popular], popular_score[:n_popular]))
    return blend(hits, weights)


# ---------------------------------------------------------------------------------- fold-in
def fold_in(
    item_factors: np.ndarray,
    gram: np.ndarray,
    item_idx: np.ndarray,
    *,
    reg: float,
    alpha: float,
    counts: np.ndarray | None = None,
) -> np.ndarray:
    """The ALS user step for a customer the model has not seen:
    solve (YᵀY + reg·I + Y_uᵀ(C_u − I)Y_u) x = Y_uᵀ C_u p_u with C_u = 1 + alpha·r_u."""
    idx = np.asarray(item_idx, dtype=np.int64)
    f = gram.shape[0]
    if len(idx) == 0:
        return np.zeros(f, dtype=np.float32)
    r = np.ones(len(idx)) if counts is None else np.asarray(counts, dtype=np.float64)
    yu = np.asarray(item_factors[idx], dtype=np.float64)
    w = alpha * r
    a = gram + reg * np.eye(f) + (yu * w[:, None]).T @ yu
    b = yu.T @ (1.0 + w)
    return np.linalg.solve(a, b).astype(np.float32)


def fold_in_batch(
    item_factors: np.ndarray,
    gram: np.ndarray,
    user_items: sparse.csr_matrix,
    *,
    reg: float,
    alpha: float,
    chunk_nnz: int = 2_048,
) -> np.ndarray:
    """``fold_in`` for every row of ``user_items`` (values = r_ui), vectorised in chunks.
    Rows with no items get a zero vector (callers use popularity for them)."""
    ui = user_items.tocsr()
    n, f = ui.shape[0], gram.shape[0]
    y = np.asarray(item_factors, dtype=np.float64)
    base = gram + reg * np.eye(f)
    out = np.zeros((n, f), dtype=np.float32)
    indptr = ui.indptr
    start = 0
    while start < n:
        end = int(np.searchsorted(indptr, indptr[start] + chunk_nnz, side="right")) - 1
        end = min(max(end, start + 1), n)
        lo, hi = int(indptr[start]), int(indptr[end])
        rows = end - start
        yu = y[ui.indices[lo:hi]]
        w = alpha * np.asarray(ui.data[lo:hi], dtype=np.float64)
        # S sums each user's rows: (rows, m) 0/1 matrix in CSR form
        s = sparse.csr_matrix(
            (np.ones(hi - lo), np.arange(hi - lo), indptr[start : end + 1] - lo),
            shape=(rows, hi - lo),
        )
        outer = ((yu * w[:, None])[:, :, None] * yu[:, None, :]).reshape(hi - lo, f * f)
        a = base[None, :, :] + np.asarray(s @ outer).reshape(rows, f, f)
        b = np.asarray(s @ (yu * (1.0 + w)[:, None])).reshape(rows, f)
        out[start:end] = np.linalg.solve(a, b[:, :, None])[:, :, 0]
        start = end
    return out
