"""Small compiled steps of the rules pass (serving/rules/kernel.py): open-addressing hash
sets of item indices, and step 5 (the picks in order, with the diversity cap) with the early
stop's bound."""

from __future__ import annotations

import numpy as np
from numba import njit

from serving.rules import packing as pk


@njit(cache=True, nogil=True, inline="always")
def _hs_slot(table: np.ndarray, key: int) -> int:
    """Where ``key`` (>= 0) is in an open-addressing set, or the free slot it would take."""
    mask = len(table) - 1
    h = (key * 0x9E3779B1) & mask
    while table[h] >= 0 and table[h] != key:
        h = (h + 1) & mask
    return h


@njit(cache=True, nogil=True, inline="always")
def _hs_add(table: np.ndarray, key: int) -> bool:
    """Insert ``key``; True when it was new."""
    h = _hs_slot(table, key)
    if table[h] == key:
        return False
    table[h] = key
    return True


@njit(cache=True, nogil=True, inline="always")
def _hs_insert(table: np.ndarray, key: int) -> int:
    """Insert ``key``: its slot when it was new, -1 when it was there already."""
    h = _hs_slot(table, key)
    if table[h] == key:
        return -1
    table[h] = key
    return h


@njit(cache=True, nogil=True, inline="always")
def _hs_has(table: np.ndarray, key: int) -> bool:
    return table[_hs_slot(table, key)] == key


@njit(cache=True, nogil=True, inline="always")
def _take(i, ew0, cat_count, max_per_cat, sel, n_sel):  # type: ignore[no-untyped-def]
    """Step 5 for the next eligible entry in order: picked unless its category is full."""
    c = (ew0[i] >> pk.CATEGORY_SHIFT) & pk.CATEGORY_MASK
    if max_per_cat < 0 or cat_count[c] < max_per_cat:
        sel[n_sel] = i
        n_sel += 1
    cat_count[c] += 1
    return n_sel


@njit(cache=True, nogil=True)
def _pick_head(  # type: ignore[no-untyped-def]
    end, n_pin, kk, elig, boosted, cand_cols, cand_keys, ew0, cat_count, max_per_cat, sel
):
    """Step 5 over the entries before ``end``: eligible pins, then eligible candidates by
    boosted score (ties by column); returns how many were picked (at most ``kk``)."""
    n_sel = 0
    for j in range(n_pin):
        if n_sel < kk and elig[j]:
            n_sel = _take(j, ew0, cat_count, max_per_cat, sel, n_sel)
    if n_sel < kk:
        m = 0
        for j in range(n_pin, end):
            if elig[j]:
                cand_cols[m] = j
                cand_keys[m] = -boosted[j]
                m += 1
        order = np.argsort(cand_keys[:m], kind="mergesort")
        for o in range(m):
            if n_sel >= kk:
                break
            n_sel = _take(cand_cols[order[o]], ew0, cat_count, max_per_cat, sel, n_sel)
    return n_sel


@njit(cache=True, nogil=True, inline="always")
def _bound(score: float, most: float) -> float:
    """The largest boosted score an entry of raw ``score`` can get from boosts whose
    multipliers' product is at most ``most`` (>= 1): positive scores are multiplied,
    negative ones divided (step 4)."""
    return score * most if score >= 0 else score / most


def _table_size(n: int) -> int:
    size = 16
    while size < 2 * n + 2:
        size *= 2
    return size
