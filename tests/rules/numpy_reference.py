"""The rules pass as vectorised numpy: an independent implementation kept as a test oracle.

This was the production engine before the numba kernel (serving/rules/kernel.py). It
computes the same thing a different way (whole-matrix masks, sorts and take-alongs instead of
one loop per row), so the property tests compare the kernel's picks, scores, groups and
reasons with it on arbitrary catalogs, customers and rule sets.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from patron.scoring import Source
from serving.rules.engine import (
    _LAST_GROUP,
    PIN_SOURCE,
    BatchPicks,
    CandidateBatch,
    CompiledRules,
    CustomerBatch,
    take_customers,
)
from tests.rules.numpy_reference_steps import (
    _first_in_row,
    _first_occurrence,
    _keep,
    _member,
    _pad_scores,
    _row_keys,
    _stable_order,
    _tk,
)


def apply_rules_batch(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None = None,
    popular: np.ndarray | None = None,
) -> BatchPicks:
    """Top-k picks with reasons for every row; see the module docstring for the steps.

    ``popular_tier`` is (n, P1) (each customer's tier list, -1 padded), ``popular`` is (P2,).
    Fallback lists are first cut to a short prefix; rows whose answer could depend on the cut
    (short of k, or a pick from after a cut list) are recomputed with the full lists, so the
    result is exactly that of the uncut computation, only faster.

    Before that, the candidates (and pins) alone: fallback entries sort after every eligible
    candidate and cannot change a candidate's eligibility, duplicate status or diversity
    rank, so a row that candidates fill to k is final without them.
    """
    has_pads = any(p is not None and p.size for p in (popular_tier, popular))
    if has_pads and cands.item_idx.shape[1] >= k:
        out = _apply_core(cands, customers, compiled, k, None, None)
        need = np.flatnonzero(out.count < k)
        if need.size == 0:
            return out
        return _recompute_rows(
            _with_fallback, out, need, cands, customers, compiled, k, popular_tier, popular
        )
    return _with_fallback(cands, customers, compiled, k, popular_tier, popular)


def _recompute_rows(
    step: Callable[..., BatchPicks],
    out: BatchPicks,
    rows: np.ndarray,
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    """Redo ``rows`` of ``out`` with ``step`` (a wider computation) and merge them in."""
    sub = step(
        CandidateBatch(
            item_idx=cands.item_idx[rows],
            score=cands.score[rows],
            source=cands.source[rows],
            anchor_idx=cands.anchor_idx[rows],
        ),
        take_customers(customers, rows),
        compiled,
        k,
        popular_tier[rows] if popular_tier is not None and popular_tier.ndim == 2 else popular_tier,
        popular,
    )
    out.merge_rows(rows, sub)
    return out


def _with_fallback(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    """``apply_rules_batch`` with the fallback lists: cut first, whole where needed."""
    limit = max(4 * k, 32)
    pads = {"popular_tier": popular_tier, "popular": popular}
    cut = {name: pad is not None and pad.shape[-1] > limit for name, pad in pads.items()}
    if not any(cut.values()):
        return _apply_core(cands, customers, compiled, k, popular_tier, popular)
    short_t = popular_tier[..., :limit] if popular_tier is not None else None
    short_p = popular[..., :limit] if popular is not None else None
    out = _apply_core(cands, customers, compiled, k, short_t, short_p)
    # first fallback group (1-based, in chain order) that was cut
    first_cut = next(
        (g for g, name in enumerate(compiled.pad_order, start=1) if cut[name]), _LAST_GROUP
    )
    if len(out.count) == 1:  # one request: Python scalars
        g = out.group[0][out.item_idx[0] >= 0]
        if int(out.count[0]) >= k and (g.size == 0 or int(g.max()) <= first_cut):
            return out
        redo = np.zeros(1, np.int64)
    else:
        max_group = np.where(out.item_idx >= 0, out.group, -1).max(axis=1, initial=-1)
        redo = np.nonzero((out.count < k) | (max_group > first_cut))[0]
    if redo.size == 0:
        return out
    return _recompute_rows(
        _apply_core, out, redo, cands, customers, compiled, k, popular_tier, popular
    )


def _apply_core(
    cands: CandidateBatch,
    customers: CustomerBatch,
    compiled: CompiledRules,
    k: int,
    popular_tier: np.ndarray | None,
    popular: np.ndarray | None,
) -> BatchPicks:
    n = len(customers)
    cr = compiled
    n_items = len(cr.cat)
    blocks_m = [np.asarray(cands.item_idx, np.int32)]
    blocks_s = [np.asarray(cands.score, np.float64)]
    blocks_src = [np.asarray(cands.source, np.int8)]
    blocks_a = [np.asarray(cands.anchor_idx, np.int32)]
    blocks_g = [np.zeros(cands.item_idx.shape, np.int8)]
    # fallback sources in chain order; base score decays with popularity rank
    for gi, name in enumerate(cr.pad_order, start=1):
        pad = popular_tier if name == "popular_tier" else popular
        if pad is None or pad.size == 0:
            continue
        pad = np.asarray(pad, np.int32)
        if pad.ndim == 2:
            pad2 = pad
        elif n == 1:
            pad2 = pad[None, :]
        else:
            pad2 = np.broadcast_to(pad, (n, pad.shape[-1]))
        w = pad2.shape[1]
        blocks_m.append(pad2)
        ps = _pad_scores(w)
        blocks_s.append(ps[None, :] if n == 1 else np.broadcast_to(ps, (n, w)))
        pad_src = Source.POPULAR_TIER if name == "popular_tier" else Source.POPULAR
        blocks_src.append(np.full((n, w), int(pad_src), np.int8))
        blocks_a.append(np.full((n, w), -1, np.int32))
        blocks_g.append(np.full((n, w), gi, np.int8))

    # pins go first (group -1); a pin also found among the candidates keeps its score/source
    pin_cols: list[int] = []
    if cr.pins:
        cand_m = blocks_m[0]
        pm = np.full((n, len(cr.pins)), -1, np.int32)
        ps = np.zeros((n, len(cr.pins)), np.float64)
        psrc = np.full((n, len(cr.pins)), PIN_SOURCE, np.int8)
        pa = np.full((n, len(cr.pins)), -1, np.int32)
        for j, pin in enumerate(cr.pins):
            if pin.item < 0 or pin.slot >= k:
                continue
            active = pin.when.mask(customers)
            pm[active, j] = pin.item
            if cand_m.size:
                eq = cand_m == pin.item
                has = eq.any(axis=1) & active
                col = eq.argmax(axis=1)
                r = np.nonzero(has)[0]
                ps[r, j] = blocks_s[0][r, col[r]]
                psrc[r, j] = blocks_src[0][r, col[r]]
                pa[r, j] = blocks_a[0][r, col[r]]
        blocks_m.insert(0, pm)
        blocks_s.insert(0, ps)
        blocks_src.insert(0, psrc)
        blocks_a.insert(0, pa)
        blocks_g.insert(0, np.full((n, len(cr.pins)), -1, np.int8))
        pin_cols = list(range(len(cr.pins)))

    m = np.concatenate(blocks_m, axis=1) if len(blocks_m) > 1 else blocks_m[0]
    score = np.concatenate(blocks_s, axis=1)
    src = np.concatenate(blocks_src, axis=1)
    anchor = np.concatenate(blocks_a, axis=1)
    group = np.concatenate(blocks_g, axis=1)
    width = m.shape[1]

    valid = (m >= 0) & (m < n_items)
    valid &= cr.chain_sources[src.astype(np.int64) + 1] | (group < 0)
    mi = np.where(valid, m, 0)
    # duplicates: keep the first (pins, then candidates, then fallback order)
    if n >= 64:  # batches: candidates are unique per row (blend), only the rest is checked
        n_head = len(pin_cols) + cands.item_idx.shape[1]
        eligible = valid & _first_in_row(mi, valid, len(pin_cols), n_head, n_items)
    else:
        keyed = np.where(valid, mi.astype(np.int64), -1 - np.arange(width, dtype=np.int64))
        eligible = valid & _first_occurrence(keyed)
    eligible &= cr.item_ok[mi]
    cust_rank = customers.tier_rank.astype(np.int16)
    item_rank = cr.min_rank[mi]
    if cr.enforce_tier:
        eligible &= item_rank <= cust_rank[:, None]
    item_cat = cr.cat[mi]

    # exclusions: recent purchases within the category's window, and the request's list
    excl_parts = []
    if customers.recent_item_idx.size:
        ri = customers.recent_item_idx.astype(np.int64)
        ok = (ri >= 0) & (ri < n_items)
        ri_c = np.where(ok, ri, 0)
        days = np.nan_to_num(customers.recent_days_ago, nan=0.0)
        win = cr.window[cr.cat[ri_c]]
        hit = ok & (win > 0) & (days <= win)
        keys = _row_keys(customers.recent_indptr, customers.recent_item_idx, n_items)
        excl_parts.append(keys[hit])
    if customers.exclude_idx.size:
        excl_parts.append(_row_keys(customers.exclude_indptr, customers.exclude_idx, n_items))
    if excl_parts:
        excl = np.concatenate(excl_parts)
        if excl.size:
            cand_keys = np.arange(n, dtype=np.int64)[:, None] * n_items + mi
            eligible &= ~_member(cand_keys, excl, n_items)

    # boosts
    mult = np.ones((n, width), np.float64)
    applied: list[np.ndarray | None] = []
    past_hit: np.ndarray | None = None
    static = cr.boost_static[mi] if cr.boosts else None  # (n, width, n_boosts)
    for bi, b in enumerate(cr.boosts):
        if n == 1:  # Python scalars: a dozen numpy calls fewer per boost
            cm = None
            if not b.when._one(customers):
                applied.append(None)
                continue
        else:
            cm = b.when.mask(customers)
            if not cm.any():
                applied.append(None)
                continue
        assert static is not None
        hit = static[..., bi] & eligible
        if cm is not None:
            hit &= cm[:, None]
        if b.sources is not None:
            hit &= b.sources[src.astype(np.int64) + 1]
        if b.past_categories is not None:
            if past_hit is None:
                pk = _row_keys(customers.past_cat_indptr, customers.past_cat_code, cr.n_cat)
                ck = np.arange(n, dtype=np.int64)[:, None] * cr.n_cat + item_cat
                if n * cr.n_cat <= 50_000_000:  # a (customer, category) table: one gather
                    seen = np.zeros(n * cr.n_cat + 1, bool)
                    seen[pk] = True
                    past_hit = seen[np.minimum(ck, n * cr.n_cat)]
                else:
                    past_hit = _member(ck, pk)
            hit &= past_hit == b.past_categories
        if b.price_min is not None:
            with np.errstate(invalid="ignore", divide="ignore"):
                ratio = cr.price[mi] / customers.typical_spend[:, None]
                inside = ratio >= b.price_min
                if b.price_max is not None:
                    inside &= ratio <= b.price_max
            hit &= inside
        np.multiply(mult, b.multiply, out=mult, where=hit)
        applied.append(hit)
    boosted = np.where(score >= 0, score * mult, score / mult)

    # order: group, then boosted score (desc) among candidates, then column; ineligible last.
    # Fallback lists keep their popularity order so a cut prefix orders exactly like the whole.
    g = np.where(eligible, group, _LAST_GROUP).astype(np.int16)
    order = np.lexsort((np.where(group == 0, -boosted, 0.0), g), axis=1)
    kk = min(k, width)
    # Only the first kk kept columns (in this order) are picked: look at a head of the
    # order first; rows that do not fill kk there (rare) look at the whole row.
    head = min(width, max(4 * kk, 32))
    keep = _keep(eligible, item_cat, order[:, :head], cr)
    short = np.flatnonzero(keep.sum(axis=1) < kk) if head < width else np.zeros(0, np.int64)
    if short.size == 0:
        sel = _tk(order[:, :head], _stable_order(~keep)[:, :kk])  # (n, kk) columns
        count = np.minimum(keep.sum(axis=1), kk)
    else:
        full = np.zeros((n, width), bool)
        full[:, :head] = keep
        full[short] = _keep(eligible[short], item_cat[short], order[short], cr)
        sel = _tk(order, _stable_order(~full)[:, :kk])
        count = np.minimum(full.sum(axis=1), kk)
    in_range = np.arange(kk)[None, :] < count[:, None]

    # pins to their slots; the rest fill the free slots in order
    rows = np.arange(n)
    final = sel
    if pin_cols and kk:
        occupied = np.zeros((n, kk), bool)
        placed = np.zeros((n, kk), bool)
        target = np.full((n, kk), -1, np.int64)
        for j in pin_cols:
            slot = cr.pins[j].slot
            if slot >= kk:
                continue
            at = (sel == j) & in_range
            has = at.any(axis=1)
            pos = at.argmax(axis=1)
            ok = has & (slot < count) & ~occupied[:, slot]
            r = rows[ok]
            occupied[r, slot] = True
            placed[r, pos[ok]] = True
            target[r, pos[ok]] = slot
        if placed.any():
            free = ~occupied & in_range
            free_slots = _stable_order(~free)
            ordinary = _stable_order(placed | ~in_range)
            n_ord = (~placed & in_range).sum(axis=1)
            jj = np.broadcast_to(np.arange(kk), (n, kk))
            use = jj < n_ord[:, None]
            rr = np.broadcast_to(rows[:, None], (n, kk))
            target[rr[use], ordinary[use]] = free_slots[use]
            final = np.full((n, kk), 0, sel.dtype)
            src_pos = np.broadcast_to(np.arange(kk), (n, kk))
            m_in = in_range
            final[rr[m_in], target[m_in]] = sel[rr[m_in], src_pos[m_in]]

    pick_m = _tk(m, final)
    pick_m = np.where(in_range, pick_m, -1).astype(np.int32)
    pick_s = _tk(boosted, final).astype(np.float32)
    pick_src = _tk(src, final)
    pick_a = _tk(anchor, final)
    pick_g = _tk(group, final)

    # reasons: [pin] [exclusive] [boosts...] [source]
    n_r = 3 + len(cr.boosts)
    rid = np.full((n, kk, n_r), -1, np.int32)
    pick_c = np.where(in_range, final, 0)
    if pin_cols:
        pin_ids = np.array([p.reason_id for p in cr.pins], np.int32)
        is_pin = (pick_g < 0) & in_range
        rid[..., 0] = np.where(is_pin, pin_ids[np.clip(pick_c, 0, len(cr.pins) - 1)], -1)
    pick_mi = np.where(in_range, pick_m, 0)
    p_rank = cr.min_rank[pick_mi].astype(np.int64)
    t = len(cr.tiers)
    excl_id = cr.exclusive_base + np.minimum(p_rank, t) * t + cust_rank[:, None]
    rid[..., 1] = np.where(in_range & (p_rank > 0) & cr.enforce_tier, excl_id, -1)
    for bi, (b, hit) in enumerate(zip(cr.boosts, applied, strict=True)):
        if hit is None or b.reason_base < 0:
            continue
        on = _tk(hit, final) & in_range
        ids = (
            b.reason_base
            + cust_rank[:, None].astype(np.int64) * b.reason_tier_stride
            + cr.cat[pick_mi].astype(np.int64) * b.reason_cat_stride
        )
        rid[..., 2 + bi] = np.where(on, ids, -1)
    src_ok = (pick_src >= 0) & in_range
    rid[..., -1] = np.where(src_ok, cr.source_reason[np.minimum(np.maximum(pick_src, 0), 3)], -1)

    return BatchPicks(
        item_idx=pick_m,
        score=np.where(in_range, pick_s, 0.0).astype(np.float32),
        source=np.where(in_range, pick_src, PIN_SOURCE).astype(np.int8),
        anchor_idx=np.where(in_range, pick_a, -1).astype(np.int32),
        reason_ids=rid,
        count=count.astype(np.int64),
        reason_table=cr.reason_table,
        copurchase_template=cr.copurchase_template,
        rules_version=cr.version,
        group=np.where(in_range, pick_g, _LAST_GROUP).astype(np.int8),
    )
