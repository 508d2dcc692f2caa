"""Synthetic ALS-like factors shared by the serving and picks benchmarks.

Real ALS item factors cluster by taste (customers who buy one item of a kind buy others), and
customer vectors sit near the clusters they buy from; pure Gaussian noise has no neighbours
worth the name and is the worst case for any approximate index, so it is not used.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse


def clustered_factors(
    n_items: int, n_customers: int, dim: int, rng: np.random.Generator, n_clusters: int = 2_000
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(item factors, customer factors, item cluster): float32, float32, int64."""
    centres = rng.normal(size=(n_clusters, dim)).astype(np.float32)
    item_cluster = rng.integers(0, n_clusters, n_items)
    y = centres[item_cluster] + rng.normal(scale=0.6, size=(n_items, dim)).astype(np.float32)
    y = (y / np.float32(np.linalg.norm(y, axis=1).mean())).astype(np.float32)
    x = np.empty((n_customers, dim), np.float32)
    for lo in range(0, n_customers, 200_000):
        hi = min(n_customers, lo + 200_000)
        c = centres[rng.integers(0, n_clusters, hi - lo)]
        x[lo:hi] = 0.5 * c + rng.normal(scale=0.5, size=(hi - lo, dim)).astype(np.float32)
    return y, x, item_cluster


def random_rows(
    n_rows: int, n_cols: int, per_row: int, rng: np.random.Generator, decay: bool = False
) -> sparse.csr_matrix:
    """``per_row`` random columns per row (CSR): purchases (values 1) or, with ``decay``,
    neighbour lists scored 1 down to 0.1 in row order."""
    values = (
        np.tile(np.linspace(1.0, 0.1, per_row, dtype=np.float32), n_rows)
        if decay
        else np.ones(n_rows * per_row, np.float32)
    )
    return sparse.csr_matrix(
        (
            values,
            rng.integers(0, n_cols, n_rows * per_row).astype(np.int32),
            np.arange(0, n_rows * per_row + 1, per_row),
        ),
        shape=(n_rows, n_cols),
    )
