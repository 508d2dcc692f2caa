"""Synthetic ALS-like factors shared by the serving and picks benchmarks.

Real ALS item factors cluster by taste (customers who buy one item of a kind buy others), and
customer vectors sit near the clusters they buy from; pure Gaussian noise has no neighbours
worth the name and is the worst case for any approximate index, so it is not used.
"""

from __future__ import annotations

import numpy as np


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
