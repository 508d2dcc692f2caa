"""Compiled helpers around the scoring pass: CSR row takes and the ALS scores of
precomputed neighbours (the bundle's ``als_scores.npy``, the bits the pass computes)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from patron.scoring.select import _dot


@njit(cache=True, nogil=True)
def _dot_scores(factors: np.ndarray, idx: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """``_dot`` of each row's items (``idx`` (r, c), -1 = none: 0) with the row's vector."""
    r_n, c_n = idx.shape
    out = np.zeros((r_n, c_n), np.float32)
    for r in range(r_n):
        for c in range(c_n):
            if idx[r, c] >= 0:
                out[r, c] = _dot(factors, idx[r, c], vecs, r)
    return out


@njit(cache=True, nogil=True)
def _take_rows(
    indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a CSR list as a new CSR (indptr int64, values of the list's dtype);
    row -1 = an empty row. One pass, O(picked values), whatever the list's size."""
    n = len(rows)
    ptr = np.zeros(n + 1, np.int64)
    for r in range(n):
        length = 0
        if rows[r] >= 0:
            length = indptr[rows[r] + 1] - indptr[rows[r]]
        ptr[r + 1] = ptr[r] + length
    out = np.empty(ptr[n], indices.dtype)
    for r in range(n):
        if rows[r] >= 0:
            lo = indptr[rows[r]]
            for j in range(ptr[r + 1] - ptr[r]):
                out[ptr[r] + j] = indices[lo + j]
    return ptr, out


dot_scores: Callable[..., np.ndarray] = _dot_scores
take_rows: Callable[..., tuple[np.ndarray, np.ndarray]] = _take_rows


def candidate_scores(
    table: np.ndarray, item_factors: np.ndarray, user_factors: np.ndarray, chunk: int = 65_536
) -> np.ndarray:
    """Every precomputed neighbour's score for its customer (``_dot``: the bits the scoring
    pass computes), float32, 0 for -1 padding; the bundle's ``als_scores.npy``."""
    out = np.empty(table.shape, np.float32)
    y = np.asarray(item_factors, np.float32)
    for lo in range(0, len(table), chunk):
        hi = min(lo + chunk, len(table))
        out[lo:hi] = dot_scores(
            y,
            np.ascontiguousarray(table[lo:hi], np.int32),
            np.ascontiguousarray(user_factors[lo:hi], np.float32),
        )
    return out
