"""The blend and the top of a row, compiled (called by the scoring pass, patron/scoring/kernel.py).

Formula: patron/scoring/library.py. The ALS part is the customer's neighbour list (their
nearest items by the index, scores stored in the bundle or computed once per listed item);
an item outside the list has no ALS part. Scoring every candidate's factors instead (~4,000
random reads of the factor matrix for 20 purchases x 200 neighbours) cost 1.3 ms per customer
against 0.14 ms on the 100k-item benchmark bundle, and gave the same ML-100K nDCG@10 (0.4836:
the items a list leaves out are ones ALS ranks low). Only the best ``depth`` are sorted: a
histogram of the totals keeps the candidates that can be among them, each of those gets one
integer key packing (total, item) (``_rank_key``), a quickselect finds the best ``depth`` keys
and they alone are sorted (``np.partition`` of the floats and a merge sort by comparisons
cost 4x as much at 4,000 candidates).

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


_SIGN = np.uint64(0x80000000)
_LOW32 = np.uint64(0xFFFFFFFF)
_HIGH = np.uint64(32)


@njit(cache=True, nogil=True, inline="always")
def _rank_key(total: np.float32, bits: np.uint32, item: int) -> np.uint64:
    """A key whose ascending order is the ranking: total descending, then item ascending.

    ``bits`` are the float's bits, made to sort as the numbers do (a negative float: all
    bits flipped; else the sign bit set), then reversed; -0.0 ranks as 0.0."""
    u = np.uint64(0) if total == 0 else np.uint64(bits)
    up = (u ^ _LOW32) if u & _SIGN else (u | _SIGN)
    return ((_LOW32 - up) << _HIGH) | np.uint64(item)


@njit(cache=True, nogil=True)
def _smallest(keys: np.ndarray, slots: np.ndarray, k: int, m: int) -> None:
    """Reorder ``keys[:k]`` (distinct) and ``slots`` with them so that the ``m`` smallest
    keys come first, in no particular order (quickselect, Hoare partition, median of three)."""
    lo, hi = 0, k - 1
    target = m - 1
    while lo < hi:
        mid = (lo + hi) >> 1
        a, b, c = keys[lo], keys[mid], keys[hi]
        pivot = max(min(a, b), min(max(a, b), c))
        i, j = lo, hi
        while i <= j:
            while keys[i] < pivot:
                i += 1
            while keys[j] > pivot:
                j -= 1
            if i <= j:
                keys[i], keys[j] = keys[j], keys[i]
                slots[i], slots[j] = slots[j], slots[i]
                i += 1
                j -= 1
        if target <= j:
            hi = j
        elif target >= i:
            lo = i
        else:
            return


_BUCKETS = 1024


@njit(cache=True, nogil=True)
def _select_best(
    k: int,
    m: int,
    total: np.ndarray,
    item: np.ndarray,
    keys: np.ndarray,
    order: np.ndarray,
    tmp: np.ndarray,
    hist: np.ndarray,
) -> None:
    """``order[:m]`` = the best ``m`` of slots ``0..k-1``, ranked by ``_rank_key``.

    With many more slots than ``m``, a histogram of the totals over ``_BUCKETS`` equal
    ranges finds the ranges that hold the best ``m``; only their slots are keyed and
    selected (a range's number never decreases as the total falls, so every slot left out
    is below every slot kept)."""
    hi, lo = total[0], total[0]
    for s in range(k):
        hi, lo = max(hi, total[s]), min(lo, total[s])
    span = np.float64(hi) - np.float64(lo)
    bits = total[:k].view(np.uint32)
    last = _BUCKETS - 1
    if k > 2 * m and span > 0:
        scale = last / span
        hist[:] = 0
        for s in range(k):
            hist[min(last, int((np.float64(hi) - np.float64(total[s])) * scale))] += 1
        cut, held = 0, hist[0]
        while held < m:
            cut += 1
            held += hist[cut]
        n = 0
        for s in range(k):
            if min(last, int((np.float64(hi) - np.float64(total[s])) * scale)) <= cut:
                keys[n] = _rank_key(total[s], bits[s], item[s])
                order[n] = s
                n += 1
    else:
        for s in range(k):
            keys[s] = _rank_key(total[s], bits[s], item[s])
            order[s] = s
        n = k
    if m < n:
        _smallest(keys, order, n, m)
    ranked = np.argsort(keys[:m])
    for j in range(m):
        tmp[j] = order[ranked[j]]
    order[:m] = tmp[:m]


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
    keys: np.ndarray,  # scratch uint64 (_rank_key)
    order: np.ndarray,  # out: the selected slots, best first
    tmp: np.ndarray,  # scratch
    hist: np.ndarray,  # scratch int64 (_BUCKETS,)
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
    _select_best(k, m, s_total, s_item, keys, order, tmp, hist)
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
