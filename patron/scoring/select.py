"""The blend and the top of a row, compiled (called by the scoring pass, patron/scoring/kernel.py).

Formula: patron/scoring/library.py. The ALS part is the customer's neighbour list (their
nearest items by the index, scores stored in the bundle or computed once per listed item);
an item outside the list has no ALS part. Scoring every candidate's factors instead (~4,000
random reads of the factor matrix for 20 purchases x 200 neighbours) cost 1.3 ms per customer
against 0.14 ms on the 100k-item benchmark bundle, and gave the same ML-100K nDCG@10 (0.4836:
the items a list leaves out are ones ALS ranks low). Only the best ``depth`` are sorted: a
partition finds the ``depth``-th total, then those above it are ranked.

Numba's disk cache of the pass (kernel.py) does not notice edits to this file: after changing
it, touch kernel.py or delete patron/scoring/__pycache__/*.nbi (a fresh checkout has none).
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def _dot(factors: np.ndarray, i: int, vecs: np.ndarray, r: int) -> np.float32:
    """Item ``i``'s factors . row ``r``'s vector, summed in float64 in index order."""
    acc = 0.0
    for d in range(factors.shape[1]):
        acc += np.float64(factors[i, d]) * np.float64(vecs[r, d])
    return np.float32(acc)


@njit(cache=True, nogil=True, inline="always")
def _ahead(total: np.ndarray, item: np.ndarray, a: int, b: int) -> bool:
    """Does slot ``a`` rank before slot ``b`` (total descending, then item ascending)?"""
    if total[a] != total[b]:
        return total[a] > total[b]
    return item[a] < item[b]


@njit(cache=True, nogil=True)
def _rank(total: np.ndarray, item: np.ndarray, order: np.ndarray, tmp: np.ndarray, m: int) -> None:
    """Bottom-up merge sort of ``order[:m]`` (slot numbers) by ``_ahead``."""
    width = 1
    while width < m:
        lo = 0
        while lo < m:
            mid = min(lo + width, m)
            hi = min(lo + 2 * width, m)
            i, j, o = lo, mid, lo
            while i < mid and j < hi:
                if _ahead(total, item, order[j], order[i]):
                    tmp[o] = order[j]
                    j += 1
                else:
                    tmp[o] = order[i]
                    i += 1
                o += 1
            while i < mid:
                tmp[o] = order[i]
                i += 1
                o += 1
            while j < hi:
                tmp[o] = order[j]
                j += 1
                o += 1
            lo = hi
        order[:m] = tmp[:m]
        width *= 2


@njit(cache=True, nogil=True)
def blend_top(
    k: int,
    depth: int,
    has_vec: bool,
    no_item_item: bool,  # the row has no item-item candidates
    has_context: bool,
    weights: np.ndarray,  # float32 (3,): als, item-item, popular
    pop_src: np.int8,  # Source of the row's popular list
    s_item: np.ndarray,
    s_als: np.ndarray,  # float32, valid where s_als_known (the listed items)
    s_als_known: np.ndarray,
    s_cp: np.ndarray,
    s_pop: np.ndarray,
    s_total: np.ndarray,  # out: float32 totals
    s_src: np.ndarray,  # out: int8 Source of the selected slots
    tmpf: np.ndarray,  # scratch float32
    order: np.ndarray,  # out: the selected slots, best first
    tmp: np.ndarray,  # scratch
) -> int:
    """Blend slots ``0..k-1``; ``order[:m]`` = the best ``m = min(k, depth)`` ranked."""
    w_als, w_cp, w_pop = weights[0], weights[1], weights[2]
    if has_context:  # the item on screen matters as much as taste
        w_cp = w_cp + w_als
    popular_only = not has_vec and no_item_item
    cp_max = 0.0
    pop_max = np.float32(0.0)
    als_max = np.float32(0.0)
    listed = False
    for s in range(k):
        cp_max = max(cp_max, s_cp[s])
        pop_max = max(pop_max, s_pop[s])
        if has_vec and s_als_known[s] and (not listed or s_als[s] > als_max):
            als_max, listed = s_als[s], True
    use_als = has_vec and listed and als_max > 0
    # each part's scale once per row (multiplying by it, not dividing per candidate)
    a_scale = np.float32(w_als / als_max) if use_als else np.float32(0.0)
    cp_scale = np.float32(w_cp / cp_max) if cp_max > 0 else np.float32(0.0)
    pop_scale = np.float32(1.0) if popular_only else np.float32(0.0)
    if not popular_only and pop_max > 0:
        pop_scale = np.float32(w_pop / pop_max)
    for s in range(k):
        c_als = np.float32(s_als[s] * a_scale) if s_als_known[s] else np.float32(0.0)
        c_cp = np.float32(np.float32(s_cp[s]) * cp_scale)
        c_pop = np.float32(s_pop[s] * pop_scale)
        s_total[s] = np.float32(np.float32(c_als + c_cp) + c_pop)
    m = min(k, depth)
    if m == 0:
        return 0
    n = 0
    if m == k:
        for s in range(k):
            order[s] = s
        n = k
    else:
        for s in range(k):
            tmpf[s] = s_total[s]
        thr = np.partition(tmpf[:k], k - m)[k - m]
        for s in range(k):
            if s_total[s] >= thr:
                order[n] = s
                n += 1
    _rank(s_total, s_item, order, tmp, n)
    m = min(m, n)
    for j in range(m):  # the reason: the largest part among the sources that found the item
        s = order[j]
        c_als = np.float32(s_als[s] * a_scale) if s_als_known[s] else np.float32(0.0)
        c_cp = np.float32(np.float32(s_cp[s]) * cp_scale)
        c_pop = np.float32(s_pop[s] * pop_scale)
        src = np.int8(-1)
        best = np.float32(0.0)
        if has_vec and s_als_known[s]:
            src, best = np.int8(0), c_als
        if s_cp[s] > 0 and (src < 0 or c_cp > best):
            src, best = np.int8(1), c_cp
        if s_pop[s] > 0 and (src < 0 or c_pop > best):
            src = pop_src
        if src < 0:
            src = np.int8(0) if has_vec else pop_src
        s_src[s] = src
    return m
