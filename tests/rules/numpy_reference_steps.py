"""The numpy rules oracle's small steps (tests/rules/numpy_reference.py): membership of
keys in sorted rows, stable orders, first occurrences, ranks within a category, the
diversity cap's keep mask."""

from __future__ import annotations

import functools

import numpy as np

from serving.rules.engine import CompiledRules


def _member(values: np.ndarray, keys: np.ndarray, stride: int | None = None) -> np.ndarray:
    """``np.isin`` for int64 keys. ``values`` (n, w) and ``keys`` are ``row * stride + x``:
    given ``stride``, with few keys per row and many rows, each key column is compared with
    the whole matrix (a handful of sequential passes); else a sorted search."""
    if keys.size == 0:
        return np.zeros(values.shape, bool)
    if stride is not None and values.ndim == 2 and values.shape[0] >= 64:
        n = values.shape[0]
        rows = keys // stride
        counts = np.bincount(rows, minlength=n)
        e = int(counts.max())
        if e <= 16:
            order = np.argsort(rows, kind="stable")
            col = np.arange(keys.size) - np.repeat(np.cumsum(counts) - counts, counts)
            padded = np.full((n, e), -1, np.int64)
            padded[rows[order], col] = keys[order]
            out = values == padded[:, :1]
            for j in range(1, e):
                out |= values == padded[:, j : j + 1]
            return out
    ks = np.sort(keys)
    pos = np.minimum(np.searchsorted(ks, values), ks.size - 1)
    return ks[pos] == values


def _row_keys(indptr: np.ndarray, values: np.ndarray, stride: int) -> np.ndarray:
    if len(indptr) == 2:  # one row: key = value
        return values.astype(np.int64)
    rows = np.repeat(np.arange(len(indptr) - 1, dtype=np.int64), np.diff(indptr))
    return rows * stride + values.astype(np.int64)


@functools.lru_cache(maxsize=16)
def _pad_scores(width: int) -> np.ndarray:
    """Reported base score of fallback items: decays with popularity rank."""
    out = 1.0 / (2.0 + np.arange(width))
    out.flags.writeable = False
    return out


def _tk(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``take_along_axis(a, idx, axis=1)`` without its per-call overhead."""
    if a.shape[0] == 1:
        return a[0][idx]
    return a[np.arange(a.shape[0])[:, None], idx]


def _stable_order(keys: np.ndarray) -> np.ndarray:
    return np.argsort(keys, axis=1, kind="stable")


def _first_occurrence(m: np.ndarray) -> np.ndarray:
    """True where the value in a row is seen for the first time (left to right)."""
    order = _stable_order(m)
    s = _tk(m, order)
    new = np.ones(s.shape, bool)
    np.not_equal(s[:, 1:], s[:, :-1], out=new[:, 1:])
    first = np.empty_like(new)
    if m.shape[0] == 1:
        first[0, order[0]] = new[0]
    else:
        first[np.arange(m.shape[0])[:, None], order] = new
    return first


def _first_in_row(
    mi: np.ndarray, valid: np.ndarray, n_pin: int, n_head: int, n_items: int
) -> np.ndarray:
    """``_first_occurrence`` for rows laid out as [pins | candidates | fallback lists] whose
    candidates hold no repeats (a blend's output), without sorting every row: a candidate
    can only repeat a pin, and a fallback entry an earlier column, tracked in a (row, item)
    table over the few items the fallback lists hold. Only valid entries are meaningful."""
    n, width = mi.shape
    first = np.ones((n, width), bool)
    for j in range(n_pin):  # a later pin or candidate repeating pin j
        pin = np.where(valid[:, j], mi[:, j], -1)[:, None]
        first[:, j + 1 : n_head] &= mi[:, j + 1 : n_head] != pin
    if n_head >= width:
        return first
    tail_items = np.unique(mi[:, n_head:][valid[:, n_head:]])
    sink = len(tail_items)  # column for entries that are not fallback items (never read)
    lookup = np.full(n_items, sink, np.int64)
    lookup[tail_items] = np.arange(sink)
    cell = np.where(valid, lookup[mi], sink) + (np.arange(n, dtype=np.int64) * (sink + 1))[:, None]
    seen = np.zeros(n * (sink + 1), bool)
    seen[cell[:, :n_head].ravel()] = True
    for j in range(n_head, width):
        c = cell[:, j]
        first[:, j] = ~seen[c]
        seen[c] = True
    return first


def _rank_within(cats: np.ndarray) -> np.ndarray:
    """For each entry, how many entries of the same value precede it in its row."""
    n, w = cats.shape
    if w == 0:
        return np.zeros((n, 0), np.int64)
    if n >= 256:  # many rows: count column by column in a (row, value) table, no sort
        width = int(cats.max()) + 1
        flat = np.arange(n, dtype=np.int64)[:, None] * width + cats  # (row, value) cell
        seen = np.zeros(n * width, np.int64)
        occ_cols = np.empty((n, w), np.int64)
        for j in range(w):  # a row's cells in one column are distinct: plain fancy +=
            cell = flat[:, j]
            occ_cols[:, j] = seen[cell]
            seen[cell] += 1
        return occ_cols
    order = _stable_order(cats)
    s = _tk(cats, order)
    pos = np.arange(w)[None, :]
    start = np.zeros((n, w), bool)
    start[:, 0] = True
    start[:, 1:] = s[:, 1:] != s[:, :-1]
    run_start = np.maximum.accumulate(np.where(start, pos, 0), axis=1)
    occ = np.empty((n, w), np.int64)
    if n == 1:
        occ[0, order[0]] = (pos - run_start)[0]
    else:
        occ[np.arange(n)[:, None], order] = pos - run_start
    return occ


def _keep(
    eligible: np.ndarray, item_cat: np.ndarray, order: np.ndarray, cr: CompiledRules
) -> np.ndarray:
    """Eligible and within the diversity cap, for the columns ``order`` lists (in that order)."""
    elig_s = _tk(eligible, order)
    if cr.max_per_category is None:
        return elig_s
    cat_s = _tk(np.where(eligible, item_cat, cr.n_cat), order)
    return elig_s & (_rank_within(cat_s) < cr.max_per_category)
