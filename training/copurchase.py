"""Co-purchase model: item -> top-N associated items, kept as a sparse table.

Learned from baskets (one row per order when order ids exist, else one row per customer).
Two documented weightings, chosen by catalog size:

- ``ease`` (catalogs up to ``dense_max_items`` items): the closed-form item-item regression
  EASE (Steck 2019), B = I - P / diag(P) with P = (X^T X + lambda I)^-1. It needs one dense
  items x items float32 matrix, inverted in place; the default limit is derived from a 4 GiB
  budget (``ease_max_items``: 31,000 items; 10,000 items = 400 MB), and it is refused above
  the limit.
- ``cosine`` (any size, the default above the limit): item-item cosine of the binary baskets
  computed sparsely by ``implicit``'s nearest-neighbour code, keeping the top N per item.
  Memory is O(nnz + items * N); it scales to 100k+ items. ``bm25`` (BM25-weighted cosine) is
  available but favoured rare items on the synthetic retail data (nDCG@10 0.016-0.046 vs 0.108-
  0.152 for cosine, 50k customers / 10k items, temporal protocol), so it is not the default.

``source`` says what a basket is: ``orders`` (items in the same order), ``customers`` (items
bought by the same customer) or ``auto`` (orders when the events carry order ids, else
customers).

Either way only the best ``top_n`` positive neighbours per item are kept (CSR rows, best first),
which is what the bundle stores and serving uses. A customer's scores are the sum of the
neighbour rows of the items they bought (``recent`` items in serving).
"""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal, Self

import numpy as np
from scipy import sparse

from training.recommender import ScoringRecommender, similar_from_table

log = logging.getLogger(__name__)

Method = Literal["auto", "ease", "bm25", "cosine"]
Source = Literal["auto", "orders", "customers"]


EASE_MEMORY_GIB = 4.0  # default budget for EASE's dense items x items matrix
_EASE_OVERHEAD = 1.1  # the matrix itself, plus row blocks of the top-N pass
_BLOCK = 2048  # rows per block of the in-place passes


def ease_max_items(memory_gib: float = EASE_MEMORY_GIB) -> int:
    """The largest catalog whose EASE fits ``memory_gib``: one float32 items x items matrix,
    inverted in place (4 GiB: 31,000 items)."""
    return int(math.sqrt(memory_gib * 2**30 / (4 * _EASE_OVERHEAD)))


@dataclass
class CoPurchaseParams:
    """Defaults chosen by ``patron tune`` on ML-100K validation data (docs/training.md)."""

    method: Method = "auto"
    source: Source = "auto"
    ease_lambda: float = 400.0
    top_n: int = 200
    dense_max_items: int = field(default_factory=ease_max_items)  # EASE_MEMORY_GIB
    bm25_k1: float = 1.2
    bm25_b: float = 0.75
    num_threads: int = 0


def keep_top_n(dense_or_sparse: np.ndarray | sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    """Best ``n`` positive entries per row as CSR, rows sorted best first, diagonal removed."""
    if sparse.issparse(dense_or_sparse):
        m = sparse.csr_matrix(dense_or_sparse, dtype=np.float32)
        m.setdiag(0)
        m.eliminate_zeros()
        m.data[m.data < 0] = 0
        m.eliminate_zeros()
        m.sort_indices()
        rows = np.repeat(np.arange(m.shape[0], dtype=np.int64), np.diff(m.indptr))
        order = np.lexsort((-m.data, rows))  # by row, then best first
        rows, cols, vals = rows[order], m.indices[order], m.data[order]
        rank = np.arange(len(rows)) - m.indptr[rows]
        keep = rank < n
        counts = np.bincount(rows[keep], minlength=m.shape[0])
        indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        return sparse.csr_matrix(
            (vals[keep].astype(np.float32), cols[keep].astype(np.int32), indptr), shape=m.shape
        )
    dense = np.asarray(dense_or_sparse, dtype=np.float32)
    np.fill_diagonal(dense, 0.0)
    k = min(n, dense.shape[1])
    cols = np.empty((dense.shape[0], k), np.int64)
    vals = np.empty((dense.shape[0], k), np.float32)
    for lo in range(0, dense.shape[0], _BLOCK):  # row blocks: no second items x items array
        block = dense[lo : lo + _BLOCK]
        part = np.argpartition(-block, k - 1, axis=1)[:, :k]
        v = np.take_along_axis(block, part, axis=1)
        order = np.argsort(-v, axis=1, kind="stable")
        cols[lo : lo + _BLOCK] = np.take_along_axis(part, order, axis=1)
        vals[lo : lo + _BLOCK] = np.take_along_axis(v, order, axis=1)
    keep = vals > 0
    counts = keep.sum(axis=1)
    indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return sparse.csr_matrix(
        (vals[keep].astype(np.float32), cols[keep].astype(np.int32), indptr), shape=dense.shape
    )


def ease_weights(x: sparse.csr_matrix, lam: float) -> np.ndarray:
    """Dense EASE item-item weights (diagonal zero) from a binary baskets x items matrix."""
    return ease_from_gram((x.T @ x).astype(np.float32).toarray(), lam)


def ease_from_gram(gram: np.ndarray, lam: float) -> np.ndarray:
    """EASE weights B = -P / diag(P), diagonal 0, with P = (G + lambda I)^-1, from the items x
    items co-occurrence counts G = X^T X (diagonal: each item's basket count), however they
    were counted. float32, computed in the memory of ``gram`` when it is a C-contiguous float32
    array (it is overwritten): a Cholesky factorisation and inverse in place (LAPACK potrf,
    potri), so the whole job needs one items x items matrix (``ease_max_items``)."""
    g = np.ascontiguousarray(gram, dtype=np.float32)
    n = g.shape[0]
    g[np.diag_indices(n)] += np.float32(lam)
    _inverse_spd_in_place(g)
    d = np.diag(g).copy()
    for lo in range(0, n, _BLOCK):  # B = -P / diag(P) per column, block by block
        g[lo : lo + _BLOCK] /= -d[None, :]
    g[np.diag_indices(n)] = 0.0
    return g


def _inverse_spd_in_place(g: np.ndarray) -> None:
    """Overwrite the symmetric positive definite C-contiguous float32 ``g`` with its inverse."""
    from scipy.linalg import lapack

    f = g.T  # the same memory in Fortran order (g is symmetric)
    c, info = lapack.spotrf(f, lower=0, overwrite_a=1, clean=0)
    if info != 0:
        raise ValueError(f"EASE: the regularised Gram matrix is not positive definite ({info})")
    inv, info = lapack.spotri(c, lower=0, overwrite_c=1)
    if info != 0 or not np.shares_memory(inv, g):
        raise ValueError(f"EASE: the in-place inverse failed ({info})")
    n = g.shape[0]  # Fortran's upper triangle is C's lower one: mirror it upwards
    for lo in range(0, n, _BLOCK):
        hi = min(lo + _BLOCK, n)
        g[lo:hi, hi:] = g[hi:, lo:hi].T
        blk = g[lo:hi, lo:hi]
        low = np.tril_indices(hi - lo, -1)
        blk.T[low] = blk[low]


class CoPurchaseRecommender(ScoringRecommender):
    """Item-to-item association; ``table[i, j]`` is how strongly buying i suggests j."""

    name = "copurchase"

    def __init__(self, params: CoPurchaseParams | None = None) -> None:
        self.params = params or CoPurchaseParams()
        self.table = sparse.csr_matrix((0, 0), dtype=np.float32)
        self.method_used = ""
        self.source_used = ""

    def resolve_method(self, n_items: int) -> str:
        m = self.params.method
        if m == "auto":
            return "ease" if n_items <= self.params.dense_max_items else "cosine"
        if m == "ease" and n_items > self.params.dense_max_items:
            raise ValueError(
                f"EASE needs a dense {n_items} x {n_items} matrix; above dense_max_items="
                f"{self.params.dense_max_items} use method 'cosine' (sparse) or 'auto'"
            )
        return m

    def fit(self, user_items: sparse.csr_matrix, baskets: sparse.csr_matrix | None = None) -> Self:
        """Learn from ``baskets`` (orders x items) when given and ``source`` allows, else from
        customers x items."""
        use_orders = baskets is not None and self.params.source != "customers"
        x = (baskets if use_orders else user_items).tocsr().astype(np.float32)  # type: ignore[union-attr]
        self.source_used = "orders" if use_orders else "customers"
        x.data = np.ones_like(x.data)
        n_items = x.shape[1]
        method = self.resolve_method(n_items)
        p = self.params
        if method == "ease":
            self.table = keep_top_n(ease_weights(x, p.ease_lambda), p.top_n)
        else:
            from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

            knn = (
                BM25Recommender(K=p.top_n + 1, K1=p.bm25_k1, B=p.bm25_b, num_threads=p.num_threads)
                if method == "bm25"
                else CosineRecommender(K=p.top_n + 1, num_threads=p.num_threads)
            )
            with warnings.catch_warnings():  # implicit converts its own COO output
                warnings.simplefilter("ignore", category=UserWarning)
                knn.fit(x, show_progress=False)
            self.table = keep_top_n(knn.similarity.tocsr(), p.top_n)
        self.method_used = method
        return self

    def score(self, user_idx: np.ndarray, user_items: sparse.csr_matrix) -> np.ndarray:
        rows = user_items[np.asarray(user_idx)].tocsr().astype(np.float32)
        rows.data = np.ones_like(rows.data)
        return np.asarray((rows @ self.table).toarray(), dtype=np.float32)

    def similar_items(self, item_idx: np.ndarray, n: int = 10) -> tuple[np.ndarray, np.ndarray]:
        return similar_from_table(self.table, item_idx, n)

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        t = self.table.tocsr()
        np.save(path / "copurchase_indptr.npy", t.indptr.astype(np.int64), allow_pickle=False)
        np.save(path / "copurchase_indices.npy", t.indices.astype(np.int32), allow_pickle=False)
        np.save(path / "copurchase_scores.npy", t.data.astype(np.float32), allow_pickle=False)
        meta = {
            "params": asdict(self.params),
            "method_used": self.method_used,
            "source_used": self.source_used,
            "n": t.shape[0],
        }
        (path / "copurchase.json").write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, path: Path) -> Self:
        path = Path(path)
        meta = json.loads((path / "copurchase.json").read_text())
        model = cls(CoPurchaseParams(**meta["params"]))
        n = int(meta["n"])
        model.table = sparse.csr_matrix(
            (
                np.load(path / "copurchase_scores.npy", allow_pickle=False),
                np.load(path / "copurchase_indices.npy", allow_pickle=False),
                np.load(path / "copurchase_indptr.npy", allow_pickle=False),
            ),
            shape=(n, n),
        )
        model.method_used = meta["method_used"]
        model.source_used = meta.get("source_used", "")
        return model
