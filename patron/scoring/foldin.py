"""Fold-in: the ALS user step for a customer the model has not seen (no retraining)."""

from __future__ import annotations

import numpy as np
from scipy import sparse


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
