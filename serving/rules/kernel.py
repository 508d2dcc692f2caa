"""The rules pass compiled with numba: one loop over a customer's candidates per row.

(Its small steps, the hash sets and the picking of step 5, are serving/rules/kernel_steps.py;
numba's disk cache of this pass does not notice edits there: touch this file after one.)

The vectorised numpy version needed ~100 array calls per pass whatever the batch size, which
dominated one API request (~0.5-1 ms). Here each row is a handful of loops over its entries
(pins | candidates | fallback lists); a request costs tens of microseconds and the export
scales with the number of candidates, not the number of calls.

Semantics (``serving.rules.engine`` documents them; tests/rules/numpy_reference.py is an
independent vectorised implementation the property tests compare this with, row for row):

1. entries: active pins (score, source and anchor of the first candidate with the same item),
   then the candidates, then each fallback list in chain order (base score 1 / (2 + rank));
2. valid: an item index in the catalog whose source the fallback chain allows (pins always);
3. eligible: valid, the first valid entry with that item, allowed (stock, blocklist), at or
   above its minimum tier, not recently bought within its category's window, not excluded;
4. boosts multiply the scores of eligible entries whose item and customer conditions hold;
5. order: eligible pins, eligible candidates by boosted score (ties by column), eligible
   fallback entries in list order; the diversity cap drops entries whose category already has
   ``max_per_category`` eligible entries before them; the first k left are the picks;
6. pins move to their slots (a slot already taken keeps its pick), the rest fill the free
   slots in order; reasons: pin, exclusive, each applied boost, source.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

from serving.rules import packing as pk
from serving.rules.kernel_steps import (
    _bound,
    _hs_add,
    _hs_has,
    _hs_insert,
    _pick_head,
    _table_size,
    _take,
)

NO_GROUP = 127  # group of an empty output slot


@njit(cache=True, nogil=True, error_model="numpy")
def _apply_kernel(
    # candidates (n, C), best first, -1 = padding
    cand_m: np.ndarray,
    cand_s: np.ndarray,
    cand_src: np.ndarray,
    cand_a: np.ndarray,
    # fallback lists: (R, P) rows; row of each customer; source and group of the list
    pad1: np.ndarray,
    pad1_row: np.ndarray,
    pad1_src: int,
    pad1_group: int,
    pad2: np.ndarray,
    pad2_row: np.ndarray,
    pad2_src: int,
    pad2_group: int,
    # customers
    tier_rank: np.ndarray,
    spend: np.ndarray,
    rec_ptr: np.ndarray,
    rec_idx: np.ndarray,
    rec_days: np.ndarray,
    past_ptr: np.ndarray,
    past_code: np.ndarray,
    ex_ptr: np.ndarray,
    ex_idx: np.ndarray,
    boost_on: np.ndarray,  # (n, B) customer condition of each boost
    pin_on: np.ndarray,  # (n, P) customer condition of each pin
    # compiled rules
    cat: np.ndarray,
    min_rank: np.ndarray,
    window: np.ndarray,
    chain_sources: np.ndarray,
    enforce_tier: bool,
    n_cat: int,
    price: np.ndarray,
    b_static: np.ndarray,  # (n_items, B)
    item_info: np.ndarray,  # int64 (n_items, 2): the packed item words (serving/rules/packing.py)
    b_mult: np.ndarray,
    b_sources: np.ndarray,  # (B, len(Source) + 1) allowed sources (all True = any)
    b_past: np.ndarray,  # int8: -1 no condition, 0 not a past category, 1 a past category
    b_pmin: np.ndarray,  # nan = no price band
    b_pmax: np.ndarray,  # nan = no upper bound
    b_rbase: np.ndarray,  # -1 = no reason
    b_tstride: np.ndarray,
    b_cstride: np.ndarray,
    pin_item: np.ndarray,
    pin_slot: np.ndarray,
    pin_reason: np.ndarray,
    max_per_cat: int,  # -1 = no cap
    exclusive_base: int,
    n_tiers: int,
    source_reason: np.ndarray,
    k: int,
    set_size: int,
    banned_size: int,
) -> tuple[np.ndarray, ...]:
    n, n_c = cand_m.shape
    n_items = len(cat)
    n_b = b_mult.shape[0]
    n_pin = pin_item.shape[0]
    w1 = pad1.shape[1]
    w2 = pad2.shape[1]
    width = n_pin + n_c + w1 + w2
    kk = min(k, width)
    n_r = 3 + n_b

    out_m = np.full((n, kk), -1, np.int32)
    out_s = np.zeros((n, kk), np.float32)
    out_src = np.full((n, kk), -1, np.int8)
    out_a = np.full((n, kk), -1, np.int32)
    out_g = np.full((n, kk), NO_GROUP, np.int8)
    out_r = np.full((n, kk, n_r), -1, np.int32)
    count = np.zeros(n, np.int64)

    em = np.empty(width, np.int64)
    es = np.empty(width, np.float64)
    esrc = np.empty(width, np.int64)
    ea = np.empty(width, np.int32)
    eg = np.empty(width, np.int64)
    elig = np.empty(width, np.bool_)
    ew0 = np.zeros(width, np.int64)  # each entry's packed item words (item_info row)
    ew1 = np.zeros(width, np.int64)
    hit = np.zeros((width, max(n_b, 1)), np.bool_)
    active = np.empty(max(n_b, 1), np.int64)
    wide = n_b > pk.BOOST_BITS  # more boosts than bits: no pre-filter
    boosted = np.empty(width, np.float64)
    cand_cols = np.empty(n_c, np.int64)
    cand_keys = np.empty(n_c, np.float64)
    tail_max = np.empty(max(n_c, 1), np.float64)  # largest raw score of columns >= c
    sel = np.empty(max(kk, 1), np.int64)
    final = np.empty(max(kk, 1), np.int64)
    cat_count = np.zeros(n_cat + 1, np.int64)
    past_seen = np.zeros(n_cat + 1, np.bool_)
    seen = np.full(set_size, -1, np.int64)
    seen_slots = np.empty(width, np.int64)  # slots a row filled: emptied after it
    n_seen = 0
    banned = np.empty(banned_size, np.int64)
    occupied = np.zeros(max(kk, 1), np.bool_)
    placed = np.zeros(max(kk, 1), np.bool_)
    target = np.empty(max(kk, 1), np.int64)

    for r in range(n):
        # 1. entries: pins and candidates now; fallback entries only as far as they are read
        e = 0
        for j in range(n_pin):
            item, s, sr, a = -1, 0.0, -1, -1
            if pin_item[j] >= 0 and pin_slot[j] < k and pin_on[r, j]:
                item = pin_item[j]
                for c in range(n_c):
                    if cand_m[r, c] == item:
                        s, sr, a = np.float64(cand_s[r, c]), cand_src[r, c], cand_a[r, c]
                        break
            em[e], es[e], esrc[e], ea[e], eg[e] = item, s, sr, a, -1
            e += 1
        for c in range(n_c):
            em[e], es[e], esrc[e], ea[e], eg[e] = (
                cand_m[r, c],
                np.float64(cand_s[r, c]),
                cand_src[r, c],
                cand_a[r, c],
                0,
            )
            e += 1
        head = e
        # the head's item words gathered in one loop of independent loads: the catalog is far
        # bigger than the caches, and here the misses overlap instead of one per entry
        for i in range(head):
            item = em[i]
            if 0 <= item < n_items:
                ew0[i] = item_info[item, pk.ITEM_WORD]
                ew1[i] = item_info[item, pk.BOOST_WORD]

        # customer state: items not to show, categories bought in the past
        for u in range(n_seen):  # the previous row's keys only (not the whole table)
            seen[seen_slots[u]] = -1
        n_seen = 0
        banned[:] = -1
        for i in range(rec_ptr[r], rec_ptr[r + 1]):
            item = rec_idx[i]
            if 0 <= item < n_items:
                days = rec_days[i]
                if np.isnan(days):
                    days = 0.0
                win = window[cat[item]]
                if win > 0 and days <= win:
                    _hs_add(banned, item)
        for i in range(ex_ptr[r], ex_ptr[r + 1]):
            if ex_idx[i] >= 0:
                _hs_add(banned, ex_idx[i])
        for i in range(past_ptr[r], past_ptr[r + 1]):
            past_seen[past_code[i]] = True
        rank = tier_rank[r]
        n_active = 0
        row_mask = np.int64(0)
        for b in range(n_b):
            if boost_on[r, b]:
                active[n_active] = b
                n_active += 1
                if b < pk.BOOST_BITS:
                    row_mask |= np.int64(1) << np.int64(b)

        # 2.-5. entries in column order: eligibility (marks the item seen) and boosts; after
        # the head (pins, candidates) its picks; then fallback entries one by one as needed.
        # Early stop: at checkpoints (2k, 4k, 8k, ... candidates read) the picks of what was
        # read so far are final when no candidate still unread can reach the k-th pick's
        # boosted score: its raw score is at most the unread columns' largest (tail_max), its
        # boosts multiply by at most ``most``, and an equal score loses the tie by column
        most = 1.0
        for a in range(n_active):
            most *= max(1.0, b_mult[active[a]])
        check = n_pin + 2 * kk if kk > 0 and n_pin + 2 * kk < head else head
        if check < head:
            t = -np.inf
            for c in range(n_c - 1, -1, -1):
                s = np.float64(cand_s[r, c])
                if cand_m[r, c] >= 0 and (s > t or s != s):
                    t = np.inf if s != s else s
                tail_max[c] = t
        n_sel = 0
        for i in range(width + 1):
            if i == head:  # 5. pins, then candidates by boosted score
                n_sel = _pick_head(
                    head, n_pin, kk, elig, boosted, cand_cols, cand_keys, ew0, cat_count,
                    max_per_cat, sel,
                )  # fmt: skip
            elif i == check:
                # cheap test first: k entries read must reach the bound before the picks can
                reach = _bound(tail_max[i - n_pin], most)
                ahead = 0
                for j in range(i):
                    if elig[j] and (j < n_pin or boosted[j] >= reach):
                        ahead += 1
                if ahead >= kk:
                    n_sel = _pick_head(
                        i, n_pin, kk, elig, boosted, cand_cols, cand_keys, ew0, cat_count,
                        max_per_cat, sel,
                    )  # fmt: skip
                    last = sel[kk - 1] if n_sel >= kk else -1
                    if last >= 0 and (last < n_pin or boosted[last] >= reach):
                        break  # the unread candidates cannot be picked, nor fallbacks needed
                    n_sel = 0
                    cat_count[:] = 0
                check = min(head, n_pin + 2 * (check - n_pin))
            if i == width or (i >= head and n_sel >= kk):
                break
            if i >= head:  # a fallback entry, read only now
                c = i - head
                if c < w1:
                    em[i], es[i], esrc[i], eg[i] = (
                        pad1[pad1_row[r], c],
                        1.0 / (2.0 + c),
                        pad1_src,
                        pad1_group,
                    )
                else:
                    em[i], es[i], esrc[i], eg[i] = (
                        pad2[pad2_row[r], c - w1],
                        1.0 / (2.0 + c - w1),
                        pad2_src,
                        pad2_group,
                    )
                ea[i] = -1
                item = em[i]
                if 0 <= item < n_items:
                    ew0[i] = item_info[item, pk.ITEM_WORD]
                    ew1[i] = item_info[item, pk.BOOST_WORD]
            item = em[i]
            ok = 0 <= item < len(cat) and (chain_sources[esrc[i] + 1] or eg[i] < 0)
            word = np.int64(0)
            if ok:
                slot = _hs_insert(seen, item)  # only the first valid entry of an item
                ok = slot >= 0
                if ok:
                    seen_slots[n_seen] = slot
                    n_seen += 1
                # the item's allowed flag, minimum tier and category: one word, one memory access
                word = ew0[i]
                item_tier = (word >> pk.MIN_TIER_SHIFT) & pk.MIN_TIER_MASK
                ok = ok and (word & pk.ALLOWED_BIT) != 0 and (not enforce_tier or item_tier <= rank)
                ok = ok and not _hs_has(banned, item)
            mult = 1.0
            # only this customer's boosts, and only for items some of them could apply to
            if ok and n_active > 0 and (wide or (ew1[i] & row_mask) != 0):
                bits = ew1[i]
                for a in range(n_active):
                    b = active[a]
                    h = ((bits >> b) & 1) != 0 if b < pk.BOOST_BITS else b_static[item, b]
                    h = h and b_sources[b, esrc[i] + 1]
                    if h and b_past[b] >= 0:
                        item_cat = (word >> pk.CATEGORY_SHIFT) & pk.CATEGORY_MASK
                        h = past_seen[item_cat] == (b_past[b] == 1)
                    if h and not np.isnan(b_pmin[b]):
                        ratio = price[item] / spend[r]
                        h = ratio >= b_pmin[b] and (np.isnan(b_pmax[b]) or ratio <= b_pmax[b])
                    hit[i, b] = h
                    if h:
                        mult *= b_mult[b]
            else:
                for a in range(n_active):
                    hit[i, active[a]] = False
            boosted[i] = es[i] * mult if es[i] >= 0 else es[i] / mult
            elig[i] = ok
            if i >= head and elig[i]:
                n_sel = _take(i, ew0, cat_count, max_per_cat, sel, n_sel)
        cat_count[:] = 0
        for i in range(past_ptr[r], past_ptr[r + 1]):
            past_seen[past_code[i]] = False
        count[r] = n_sel

        # 6. pins to their slots, the rest in order
        for p in range(n_sel):
            final[p] = sel[p]
        any_placed = False
        if n_pin > 0 and kk > 0:
            occupied[:] = False
            placed[:] = False
            for j in range(n_pin):
                slot = pin_slot[j]
                if slot >= kk:
                    continue
                pos = -1
                for p in range(n_sel):
                    if sel[p] == j:
                        pos = p
                        break
                if pos >= 0 and slot < n_sel and not occupied[slot]:
                    occupied[slot] = True
                    placed[pos] = True
                    target[pos] = slot
                    any_placed = True
        if any_placed:
            free = 0
            for p in range(n_sel):
                if placed[p]:
                    continue
                while occupied[free]:
                    free += 1
                target[p] = free
                free += 1
            for p in range(n_sel):
                final[target[p]] = sel[p]

        # outputs and reasons: [pin] [exclusive] [boosts...] [source]
        for p in range(n_sel):
            i = final[p]
            item = em[i]
            out_m[r, p] = item
            out_s[r, p] = np.float32(boosted[i])
            out_src[r, p] = esrc[i]
            out_a[r, p] = ea[i]
            out_g[r, p] = eg[i]
            if eg[i] < 0:
                out_r[r, p, 0] = pin_reason[i]
            p_rank = min(int(min_rank[item]), n_tiers)
            if enforce_tier and p_rank > 0:
                out_r[r, p, 1] = exclusive_base + p_rank * n_tiers + rank
            for a in range(n_active):
                b = active[a]
                if b_rbase[b] >= 0 and hit[i, b]:
                    out_r[r, p, 2 + b] = (
                        b_rbase[b] + rank * b_tstride[b] + np.int64(cat[item]) * b_cstride[b]
                    )
            if esrc[i] >= 0:
                out_r[r, p, n_r - 1] = source_reason[min(esrc[i], 3)]
    return out_m, out_s, out_src, out_a, out_r, count, out_g


# the compiled function, typed for callers (numba's Dispatcher hides the signature)
apply_kernel: Callable[..., tuple[np.ndarray, ...]] = _apply_kernel


def set_size_for(n: int) -> int:
    """Hash set capacity for ``n`` keys (at most half full)."""
    return _table_size(n)
