"""The scoring pass compiled with numba: every customer of a batch in one call.

``score_rows`` is the one definition of a customer's candidates and their blended scores
(patron/scoring/library.py prepares its arguments and documents the formula). Per row:

1. the exclusion set: training purchases, the request's exclusions and the context item;
2. candidates: the customer's ALS neighbour list, the item-item neighbours of every history
   item (context item, real-time purchases, training purchases; each item once), the
   popular list of the customer's tier; excluded items and, with a category, items of other
   categories are dropped;
3. per candidate: the ALS score of a listed item (the customer's vector . the item's
   factors, summed in float64 in index order; the bundle's stored score where it has one:
   the same bits; items outside the list have none, patron/scoring/select.py), the
   item-item score (the sum over the history of weight x neighbour score; the anchor is the
   history item with the largest term) and the popularity score;
4. each source divided by its best score among the row's candidates (a source whose best
   score is <= 0 contributes nothing), weighted (with a context item the item-item weight is
   raised by the ALS weight) and summed in float32; a customer with
   neither a vector nor item-item candidates gets the raw popularity scores;
5. the row's best ``depth`` sorted by score (descending, ties by item index).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from patron.scoring.select import _BUCKETS, _dot, blend_top

_EMPTY = -1
_EXCLUDED = -1  # a table value: the item is never a candidate of this row
_HISTORY = -2  # a table value: the (offset) key of a history item already taken
_GOLDEN = np.uint64(11400714819323198485)  # 2^64 / golden ratio: Fibonacci hashing


@njit(cache=True, nogil=True, inline="always")
def _find(tab: np.ndarray, shift: np.uint64, mask: int, key: int) -> int:
    """The position of ``key`` in an open-addressing table of (key, value) int32 pairs: its
    own, or the empty one to take (linear probing from the key's Fibonacci hash)."""
    p = np.int64((np.uint64(key) * _GOLDEN) >> shift)
    while tab[2 * p] != _EMPTY and tab[2 * p] != key:
        p = (p + 1) & mask
    return int(p)


@njit(cache=True, nogil=True, inline="always")
def _mark(
    tab: np.ndarray, shift: np.uint64, mask: int, key: int, value: int, used: np.ndarray, n: int
) -> int:
    """Put ``key`` with ``value`` unless present; returns the new count of used positions."""
    p = _find(tab, shift, mask, key)
    if tab[2 * p] == _EMPTY:
        tab[2 * p], tab[2 * p + 1] = key, value
        used[n] = p
        return n + 1
    return n


@njit(cache=True, nogil=True, inline="always")
def _new_slot(
    tab: np.ndarray,
    p: int,
    i: int,
    k: int,
    used: np.ndarray,
    n_used: int,
    s_item: np.ndarray,
    s_cp: np.ndarray,
    s_cp_best: np.ndarray,
    s_anchor: np.ndarray,
    s_pop: np.ndarray,
) -> int:
    """Item ``i`` takes table position ``p`` and candidate slot ``k``, with no scores yet."""
    tab[2 * p], tab[2 * p + 1] = i, k
    used[n_used] = p
    s_item[k] = i
    s_cp[k], s_cp_best[k], s_anchor[k], s_pop[k] = 0.0, 0.0, -1, 0.0
    return n_used + 1


@njit(cache=True, nogil=True)
def _score_rows(
    has_vec: np.ndarray,  # bool (n,): the row has a vector (own or folded in)
    vecs: np.ndarray,  # float32 (n, f)
    als_items: np.ndarray,  # int32 (n, d): the row's ALS neighbour list, -1 padded
    als_stored: np.ndarray,  # float32 (n, d) stored scores, or (0, 0): score with the vectors
    pos: np.ndarray,  # int64 (n,): customer row in the model, -1 = unknown
    ui_ptr: np.ndarray,  # training purchases (CSR over customers)
    ui_idx: np.ndarray,
    rec_ptr: np.ndarray,  # real-time purchases per row (CSR), newest first
    rec_idx: np.ndarray,
    ex_ptr: np.ndarray,  # the request's exclusions per row (CSR)
    ex_idx: np.ndarray,
    context: np.ndarray,  # int32 (n,): the item on screen, -1 = none
    context_weight: float,
    category: np.ndarray,  # int32 (n,): keep only this category, -1 = all
    item_category: np.ndarray,  # int32 (items,)
    cp_ptr: np.ndarray,  # item-item neighbour table (CSR over items), best first
    cp_idx: np.ndarray,
    cp_data: np.ndarray,
    factors: np.ndarray,  # float32 (items, f)
    pop_of: np.ndarray,  # int64 (n,): which popular list
    pop_items: np.ndarray,  # int32 (lists, P)
    pop_scores: np.ndarray,  # float32 (lists, P)
    pop_len: np.ndarray,  # int64 (lists,)
    pop_src: np.ndarray,  # int8 (lists,)
    weights: np.ndarray,  # float32 (3,): als, item-item, popular
    depth: int,  # candidates kept per row (best first)
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(pos)
    # the largest row sets the scratch sizes
    most = 16  # candidate slots (and history items) of the largest row
    entries = 16  # table entries of the largest row: candidates, exclusions, history
    for r in range(n):
        m = als_items.shape[1] + pop_len[pop_of[r]] + 1
        h = rec_ptr[r + 1] - rec_ptr[r] + 1
        e = ex_ptr[r + 1] - ex_ptr[r] + 1
        if pos[r] >= 0:
            h += ui_ptr[pos[r] + 1] - ui_ptr[pos[r]]
            e += ui_ptr[pos[r] + 1] - ui_ptr[pos[r]]
        cp_n = 0
        for j in range(rec_ptr[r], rec_ptr[r + 1]):
            cp_n += cp_ptr[rec_idx[j] + 1] - cp_ptr[rec_idx[j]]
        if pos[r] >= 0:
            for j in range(ui_ptr[pos[r]], ui_ptr[pos[r] + 1]):
                cp_n += cp_ptr[ui_idx[j] + 1] - cp_ptr[ui_idx[j]]
        if context[r] >= 0:
            cp_n += cp_ptr[context[r] + 1] - cp_ptr[context[r]]
        most = max(most, m + min(cp_n, len(item_category)), h)
        entries = max(entries, m + min(cp_n, len(item_category)) + h + e)
    size, bits = 16, 4
    while size < 2 * entries:  # at most half full
        size, bits = size * 2, bits + 1
    shift = np.uint64(64 - bits)
    # one table per row: candidates (item -> slot), exclusions, history items (offset keys)
    tab = np.full(2 * size, _EMPTY, np.int32)
    used = np.empty(size, np.int64)  # positions taken, to clear them for the next row
    s_item = np.empty(most, np.int64)
    s_als = np.empty(most, np.float32)
    s_als_known = np.empty(most, np.bool_)
    s_cp = np.empty(most, np.float64)
    s_cp_best = np.empty(most, np.float64)
    s_anchor = np.empty(most, np.int32)
    s_pop = np.empty(most, np.float32)
    s_total = np.empty(most, np.float32)
    keys = np.empty(most, np.uint64)
    hist = np.empty(_BUCKETS, np.int64)
    s_src = np.empty(most, np.int8)
    order = np.empty(most, np.int64)
    tmp = np.empty(most, np.int64)
    h_item = np.empty(most, np.int64)  # the row's history items, each once
    h_weight = np.empty(most, np.float64)
    out_item = np.full((n, depth), -1, np.int32)
    out_score = np.zeros((n, depth), np.float32)
    out_src = np.zeros((n, depth), np.int8)
    out_anchor = np.full((n, depth), -1, np.int32)
    stored = als_stored.shape[0] == n and als_stored.shape[1] == als_items.shape[1]
    n_items = len(item_category)
    mask = size - 1
    for r in range(n):
        # 1. exclusions
        n_used = 0
        p_lo = ui_ptr[pos[r]] if pos[r] >= 0 else 0
        p_hi = ui_ptr[pos[r] + 1] if pos[r] >= 0 else 0
        for j in range(p_lo, p_hi):
            n_used = _mark(tab, shift, mask, ui_idx[j], _EXCLUDED, used, n_used)
        for j in range(ex_ptr[r], ex_ptr[r + 1]):
            n_used = _mark(tab, shift, mask, ex_idx[j], _EXCLUDED, used, n_used)
        if context[r] >= 0:
            n_used = _mark(tab, shift, mask, context[r], _EXCLUDED, used, n_used)
        cat = category[r]
        k = 0

        # 2a. the ALS neighbour list
        if has_vec[r]:
            for c in range(als_items.shape[1]):
                i = als_items[r, c]
                if i < 0:
                    continue
                if cat >= 0 and item_category[i] != cat:
                    continue
                p = _find(tab, shift, mask, i)
                if tab[2 * p] == _EMPTY:
                    n_used = _new_slot(
                        tab, p, i, k, used, n_used, s_item, s_cp, s_cp_best, s_anchor, s_pop
                    )
                    s_als[k] = als_stored[r, c] if stored else _dot(factors, i, vecs, r)
                    s_als_known[k] = True
                    k += 1
        # 2b. the history (context item, real-time, training; each item once)
        n_hist = 0
        # the item on screen weighs as much as the rest of the history together
        w_context = context_weight * max(1.0, np.float64(rec_ptr[r + 1] - rec_ptr[r] + p_hi - p_lo))
        for part in range(3):
            if part == 0:
                lo, hi = (0, 1) if context[r] >= 0 else (0, 0)
            elif part == 1:
                lo, hi = rec_ptr[r], rec_ptr[r + 1]
            else:
                lo, hi = p_lo, p_hi
            for j in range(lo, hi):
                it = context[r] if part == 0 else (rec_idx[j] if part == 1 else ui_idx[j])
                # history items are kept apart from candidates: their keys are offset
                before = n_used
                n_used = _mark(tab, shift, mask, it + n_items, _HISTORY, used, n_used)
                if n_used == before:  # already taken
                    continue
                h_item[n_hist] = it
                h_weight[n_hist] = w_context if part == 0 else 1.0
                n_hist += 1
        n_cp = 0
        for h in range(n_hist):
            a = h_item[h]
            w = h_weight[h]
            for j in range(cp_ptr[a], cp_ptr[a + 1]):
                i = cp_idx[j]
                if cat >= 0 and item_category[i] != cat:
                    continue
                p = _find(tab, shift, mask, i)
                term = w * np.float64(cp_data[j])
                if tab[2 * p] == _EMPTY:
                    n_used = _new_slot(
                        tab, p, i, k, used, n_used, s_item, s_cp, s_cp_best, s_anchor, s_pop
                    )
                    s_als_known[k] = False
                    s_cp[k], s_cp_best[k], s_anchor[k] = term, term, a
                    k += 1
                    n_cp += 1
                    continue
                s = tab[2 * p + 1]
                if s < 0:  # excluded
                    continue
                s_cp[s] += term
                n_cp += 1
                if term > s_cp_best[s]:
                    s_cp_best[s] = term
                    s_anchor[s] = a
        # 2c. popular in the customer's tier
        pl_ = pop_of[r]
        for c in range(pop_len[pl_]):
            i = pop_items[pl_, c]
            if cat >= 0 and item_category[i] != cat:
                continue
            p = _find(tab, shift, mask, i)
            if tab[2 * p] == _EMPTY:
                n_used = _new_slot(
                    tab, p, i, k, used, n_used, s_item, s_cp, s_cp_best, s_anchor, s_pop
                )
                s_als_known[k] = False
                k += 1
            if tab[2 * p + 1] >= 0:
                s_pop[tab[2 * p + 1]] = pop_scores[pl_, c]
        # 3-5. blend, the best ``depth`` ranked (patron/scoring/select.py)
        m = blend_top(
            k, depth, has_vec[r], n_cp == 0, context[r] >= 0, weights, pop_src[pl_],
            s_item, s_als, s_als_known, s_cp, s_pop, s_total, s_src, keys, order, tmp, hist,
        )  # fmt: skip
        for j in range(m):
            s = order[j]
            out_item[r, j] = s_item[s]
            out_score[r, j] = s_total[s]
            out_src[r, j] = s_src[s]
            out_anchor[r, j] = s_anchor[s] if s_src[s] == 1 else -1
        # clear the table for the next row, by position (clearing by probing would cut
        # linear-probe chains and leave stale keys)
        for j in range(n_used):
            tab[2 * used[j]] = _EMPTY
    return out_item, out_score, out_src, out_anchor


# the compiled functions, typed for callers (numba's Dispatcher hides the signatures)
score_rows: Callable[..., tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = _score_rows


def warm_up() -> None:
    """Compile (or load from numba's cache) the pass for plain arrays (the Docker image runs
    it at build time; each model also runs it on its own array types before serving)."""
    i64, i32, f32 = np.int64, np.int32, np.float32
    one = np.zeros(1, i64)
    items = np.zeros(2, i32)
    score_rows(
        np.ones(1, np.bool_),
        np.ones((1, 2), f32),
        np.zeros((1, 1), i32),
        np.zeros((0, 0), f32),
        one,
        np.array([0, 1], i64),
        np.array([1], i32),
        np.zeros(2, i64),
        np.zeros(0, i32),
        np.zeros(2, i64),
        np.zeros(0, i32),
        np.full(1, -1, i32),
        1.0,
        np.full(1, -1, i32),
        items,
        np.array([0, 1, 1], i64),
        np.array([1], i32),
        np.ones(1, f32),
        np.ones((2, 2), f32),
        one,
        np.zeros((1, 1), i32),
        np.ones((1, 1), f32),
        np.ones(1, i64),
        np.full(1, 3, np.int8),
        np.ones(3, f32),
        4,
    )
