"""FAISS in the API process: loading a bundle's index, batch searches, precomputed neighbours.

The index itself is built by ``patron.scoring.index.build_index`` (the one builder, shared with
training). Each worker uses one FAISS thread: requests are single queries and the workers
already fill the cores.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import faiss
import numpy as np

from patron.scoring.index import HNSW_EF_SEARCH, build_index, set_ef_search

faiss.omp_set_num_threads(1)

__all__ = ["HNSW_EF_SEARCH", "build_index", "set_ef_search"]


def load_index(path: Path, n_items: int, dim: int) -> faiss.Index:
    """Read a prebuilt index, checking it covers the bundle's items."""
    index = faiss.read_index(str(path))
    if index.ntotal != n_items or index.d != dim:
        raise ValueError(
            f"{path}: index has {index.ntotal} x {index.d}, bundle has {n_items} x {dim}"
        )
    set_ef_search(index, HNSW_EF_SEARCH)
    return index


def write_index(index: faiss.Index, path: Path) -> None:
    faiss.write_index(index, str(path))


def search(index: faiss.Index, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k by inner product; returns (item_idx int32, score float32) with FAISS's -1
    padding removed (single query) — callers never see a -1 index."""
    q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, index.d)
    k = max(1, min(int(k), int(index.ntotal)))
    scores, idx = index.search(q, k)
    if q.shape[0] == 1:
        keep = idx[0] >= 0
        return idx[0][keep].astype(np.int32), scores[0][keep].astype(np.float32)
    return idx.astype(np.int32), scores.astype(np.float32)


@contextmanager
def faiss_threads(threads: int | None) -> Iterator[None]:
    """Let FAISS use ``threads`` threads for batch searches (the API process keeps 1)."""
    if threads is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(max(1, threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


CANDIDATE_DEPTH = 64


def precompute_candidates(
    index: faiss.Index,
    user_factors: np.ndarray,
    depth: int = CANDIDATE_DEPTH,
    *,
    threads: int | None = None,
    chunk: int = 8_192,
    ef: int | None = None,
) -> np.ndarray:
    """Every customer's ``depth`` nearest items by ``index`` (int32, -1 padded), in chunks.

    The search serving would run per request, done once per model with all cores: the API and
    the email export then read a row instead of searching (``patron.scoring``). ``ef``
    sets the HNSW search depth for it (FAISS searches at least ``depth`` deep anyway); the
    index keeps that setting afterwards.
    """
    n = len(user_factors)
    depth = max(1, min(int(depth), int(index.ntotal)))
    out = np.empty((n, depth), np.int32)
    if ef is not None:
        set_ef_search(index, ef)
    with faiss_threads(threads):
        for lo in range(0, n, chunk):
            q = np.ascontiguousarray(user_factors[lo : lo + chunk], dtype=np.float32)
            out[lo : lo + len(q)] = index.search(q, depth)[1]
    return out


def candidate_recall(
    table: np.ndarray,
    item_factors: np.ndarray,
    user_factors: np.ndarray,
    k: int = 10,
    sample: int = 500,
) -> float:
    """Recall@k of precomputed rows against exact inner-product search, on an evenly spaced
    sample of customers (recorded in the bundle manifest by training)."""
    n = len(table)
    if n == 0:
        return 1.0
    rows = np.unique(np.linspace(0, n - 1, min(sample, n)).astype(np.int64))
    x = np.asarray(user_factors[rows], np.float32)
    scores = x @ np.asarray(item_factors, np.float32).T
    k = min(k, table.shape[1], scores.shape[1])
    exact = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    got = np.asarray(table[rows][:, :k])
    return float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, exact, strict=True)]))
