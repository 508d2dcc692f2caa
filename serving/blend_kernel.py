"""The batch candidate stage compiled with numba: source hits and blend.

``source_hits`` gathers every row's hits in one pass (``serving.picks.batch_candidates_flat``):
the precomputed ALS neighbours with their stored scores (``als_scores``), or scored against
the customer's vector (``dot_scores``, which the one-customer path uses too), co-purchase
neighbours of the anchors and the popular list of the customer's tier. ``blend_kernel`` is
``serving.picks._blend_flat``'s core.

Same arithmetic as ``serving.candidates.blend`` (the one-customer path; tests/serving/
test_batch.py and tests/rules/test_picks.py compare the two item for item): per (row, source)
min-max scaling to [0.5, 1] in float32, times the source weight (float32); per (row, item) the
contributions summed in float64 in table order (source, then hit); the source and anchor of
an item are those of its largest contribution (the first on ties); each row best total first,
ties by item index.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit


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


@njit(cache=True, nogil=True, error_model="numpy")
def _blend_kernel(
    n: int,
    row: np.ndarray,  # int64, per hit
    part: np.ndarray,  # int64, per hit: index of its source part (table order)
    item: np.ndarray,  # int32
    raw: np.ndarray,  # float32
    anchor: np.ndarray,  # int32
    source: np.ndarray,  # int8
    weight: np.ndarray,  # float32, per part
) -> tuple[np.ndarray, ...]:
    m = len(row)
    n_parts = len(weight)
    # hits grouped by (row, part), keeping their order (a stable counting sort)
    n_seg = n * n_parts
    seg_ptr = np.zeros(n_seg + 1, np.int64)
    for h in range(m):
        seg_ptr[row[h] * n_parts + part[h] + 1] += 1
    for s in range(n_seg):
        seg_ptr[s + 1] += seg_ptr[s]
    fill = seg_ptr[:-1].copy()
    at = np.empty(m, np.int64)
    for h in range(m):
        s = row[h] * n_parts + part[h]
        at[fill[s]] = h
        fill[s] += 1
    # per segment: min-max scaling in float32 (as serving.candidates._scaled)
    contrib = np.empty(m, np.float32)
    half = np.float32(0.5)
    for s in range(n_seg):
        lo_i, hi_i = seg_ptr[s], seg_ptr[s + 1]
        if hi_i == lo_i:
            continue
        lo = raw[at[lo_i]]
        hi = lo
        for t in range(lo_i, hi_i):
            v = raw[at[t]]
            lo = min(lo, v)
            hi = max(hi, v)
        span = np.float64(hi) - np.float64(lo)
        span32 = np.float32(span)
        w = weight[s % n_parts]
        for t in range(lo_i, hi_i):
            h = at[t]
            if span <= 1e-12:
                scaled = np.float32(1.0)
            else:
                scaled = np.float32(half + np.float32(half * np.float32(raw[h] - lo)) / span32)
            contrib[h] = np.float32(scaled * w)
    # per row: one slot per item (first appearance), totals, best contribution, ranking
    counts = np.zeros(n, np.int64)
    width = 0
    cap = 16
    while cap < 2 * (m + 1):
        cap *= 2
    table = np.empty(cap, np.int64)  # item -> slot, open addressing, per row
    keys = np.empty(cap, np.int64)
    s_item = np.empty(m, np.int64)
    s_total = np.empty(m, np.float64)
    s_best = np.empty(m, np.float32)
    s_src = np.empty(m, np.int8)
    s_anchor = np.empty(m, np.int32)
    order = np.empty(m, np.int64)
    tmp = np.empty(m, np.int64)
    out_ptr = np.zeros(n + 1, np.int64)
    flat_item = np.empty(m, np.int32)
    flat_score = np.empty(m, np.float32)
    flat_src = np.empty(m, np.int8)
    flat_anchor = np.empty(m, np.int32)
    for r in range(n):
        lo_i, hi_i = seg_ptr[r * n_parts], seg_ptr[(r + 1) * n_parts]
        size = 16
        while size < 2 * (hi_i - lo_i + 1):
            size *= 2
        mask = size - 1
        keys[:size] = -1
        k = 0
        for t in range(lo_i, hi_i):
            h = at[t]
            it = np.int64(item[h])
            p = (it * 0x9E3779B1) & mask
            while keys[p] >= 0 and keys[p] != it:
                p = (p + 1) & mask
            if keys[p] < 0:
                keys[p] = it
                table[p] = k
                s_item[k] = it
                s_total[k] = 0.0
                s_best[k] = contrib[h]
                s_src[k] = source[h]
                s_anchor[k] = anchor[h]
                k += 1
            slot = table[p]
            s_total[slot] += np.float64(contrib[h])
            if contrib[h] > s_best[slot]:
                s_best[slot] = contrib[h]
                s_src[slot] = source[h]
                s_anchor[slot] = anchor[h]
        for j in range(k):
            order[j] = j
        _rank(s_total, s_item, order, tmp, k)
        base = out_ptr[r]
        for j in range(k):
            slot = order[j]
            flat_item[base + j] = s_item[slot]
            flat_score[base + j] = np.float32(s_total[slot])
            flat_src[base + j] = s_src[slot]
            flat_anchor[base + j] = s_anchor[slot]
        out_ptr[r + 1] = base + k
        counts[r] = k
        width = max(width, k)
    out_item = np.full((n, width), -1, np.int32)
    out_score = np.zeros((n, width), np.float32)
    out_src = np.zeros((n, width), np.int8)  # Source.ALS in the padding, as CandidateBatch
    out_anchor = np.full((n, width), -1, np.int32)
    for r in range(n):
        base = out_ptr[r]
        for j in range(counts[r]):
            out_item[r, j] = flat_item[base + j]
            out_score[r, j] = flat_score[base + j]
            out_src[r, j] = flat_src[base + j]
            out_anchor[r, j] = flat_anchor[base + j]
    return out_item, out_score, out_src, out_anchor


@njit(cache=True, nogil=True, inline="always")
def _dot(factors: np.ndarray, i: int, vecs: np.ndarray, r: int) -> float:
    """Item ``i``'s factors . row ``r``'s vector, summed in float64 in index order (the one
    formula of both paths: one customer alone and in a batch get the same bits)."""
    acc = 0.0
    for d in range(factors.shape[1]):
        acc += np.float64(factors[i, d]) * np.float64(vecs[r, d])
    return acc


@njit(cache=True, nogil=True)
def _dot_scores(factors: np.ndarray, idx: np.ndarray, vecs: np.ndarray) -> np.ndarray:
    """Inner products of each row's items (``idx`` (r, c), -1 = none: 0) with the row's vector,
    summed in float64 in index order, rounded to float32: the same bits whatever the batch."""
    r_n, c_n = idx.shape
    out = np.zeros((r_n, c_n), np.float32)
    for r in range(r_n):
        for c in range(c_n):
            if idx[r, c] >= 0:
                out[r, c] = np.float32(_dot(factors, idx[r, c], vecs, r))
    return out


@njit(cache=True, nogil=True, inline="always")
def _anchors(r: int, rec_ptr: np.ndarray, tr_ptr: np.ndarray, max_anchors: int) -> tuple:  # type: ignore[type-arg]
    """Row ``r``'s co-purchase anchors: (from recent purchases?, start, count) — the recent
    purchases when there are any, else the first ten training purchases."""
    if rec_ptr[r + 1] > rec_ptr[r]:
        return True, rec_ptr[r], min(rec_ptr[r + 1] - rec_ptr[r], max_anchors)
    return False, tr_ptr[r], min(tr_ptr[r + 1] - tr_ptr[r], 10, max_anchors)


@njit(cache=True, nogil=True)
def _source_hits(
    pre: np.ndarray,  # bool (n,): ALS from the precomputed table
    pos: np.ndarray,  # int64 (n,): customer row in the table
    want: np.ndarray,  # int64 (n,): ALS hits wanted
    table: np.ndarray,  # int32 (customers, depth)
    table_scores: np.ndarray,  # float32 (customers, depth), or (1, 0): score with the vectors
    factors: np.ndarray,  # float32 (items, f)
    vecs: np.ndarray,  # float32 (n, f)
    rec_ptr: np.ndarray,
    rec_idx: np.ndarray,  # recent purchases, newest first: the anchors when there are any
    tr_ptr: np.ndarray,
    tr_idx: np.ndarray,  # training purchases: the first ten are the anchors otherwise
    cp_ptr: np.ndarray,
    cp_idx: np.ndarray,
    cp_data: np.ndarray,
    pop_of: np.ndarray,  # int64 (n,): which popular list
    pop_items: np.ndarray,  # int32 (lists, P)
    pop_scores: np.ndarray,  # float32 (lists, P)
    pop_len: np.ndarray,  # int64 (lists,)
    pop_src: np.ndarray,  # int8 (lists,)
    n_pop: np.ndarray,  # int64 (n,)
    max_anchors: int,
    per_anchor: int,
) -> tuple[np.ndarray, ...]:
    """Flat hits (row, part, item, raw score, anchor, source) of parts ALS (0), co-purchase
    (1) and popular (2), in table order, as the one-customer path finds them
    (serving.candidates.precomputed_hits / copurchase_hits and the tier's popular list)."""
    n = len(pre)
    stored = table_scores.shape[1] == table.shape[1] and table.shape[1] > 0
    total = 0
    for r in range(n):
        if pre[r]:
            total += min(want[r], table.shape[1])
        total += _anchors(r, rec_ptr, tr_ptr, max_anchors)[2] * per_anchor
        total += min(n_pop[r], pop_len[pop_of[r]])
    row = np.empty(total, np.int64)
    part = np.empty(total, np.int64)
    item = np.empty(total, np.int32)
    raw = np.empty(total, np.float32)
    anchor = np.empty(total, np.int32)
    source = np.empty(total, np.int8)
    h = 0
    for r in range(n):
        if pre[r]:
            for c in range(min(want[r], table.shape[1])):
                i = table[pos[r], c]
                if i < 0:
                    continue
                # the stored score has the bits of _dot's float32 rounding (candidate_scores)
                acc = table_scores[pos[r], c] if stored else np.float32(_dot(factors, i, vecs, r))
                row[h], part[h], item[h], raw[h], anchor[h], source[h] = r, 0, i, acc, -1, 0
                h += 1
        recent, a_lo, a_n = _anchors(r, rec_ptr, tr_ptr, max_anchors)
        a_list = rec_idx if recent else tr_idx
        for a_rank in range(a_n):
            a = np.int64(a_list[a_lo + a_rank])
            lo = cp_ptr[a]
            hi = min(cp_ptr[a + 1], lo + per_anchor)
            div = np.float32(1.0 + a_rank)
            for j in range(lo, hi):
                row[h], part[h], item[h] = r, 1, cp_idx[j]
                raw[h] = np.float32(np.float32(cp_data[j]) / div)
                anchor[h], source[h] = a, 1
                h += 1
        p = pop_of[r]
        for j in range(min(n_pop[r], pop_len[p])):
            row[h], part[h], item[h], raw[h] = r, 2, pop_items[p, j], pop_scores[p, j]
            anchor[h], source[h] = -1, pop_src[p]
            h += 1
    return row[:h], part[:h], item[:h], raw[:h], anchor[:h], source[:h]


@njit(cache=True, nogil=True)
def _take_rows(
    indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Rows ``rows`` of a CSR list as a new CSR (indptr int64, values of the list's dtype);
    row -1 = an empty row. One pass, O(picked values), whatever the list's size (the API
    takes a few customers' rows out of millions per batch)."""
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


# the compiled functions, typed for callers (numba's Dispatcher hides the signatures)
blend_kernel: Callable[..., tuple[np.ndarray, ...]] = _blend_kernel
source_hits: Callable[..., tuple[np.ndarray, ...]] = _source_hits
dot_scores: Callable[..., np.ndarray] = _dot_scores
take_rows: Callable[..., tuple[np.ndarray, np.ndarray]] = _take_rows


def warm_up() -> None:
    """Compile (or load from numba's cache) before the first request needs it."""
    one = np.zeros(1, np.int64)
    blend_kernel(
        1,
        one,
        one,
        np.zeros(1, np.int32),
        np.ones(1, np.float32),
        np.full(1, -1, np.int32),
        np.zeros(1, np.int8),
        np.ones(1, np.float32),
    )
