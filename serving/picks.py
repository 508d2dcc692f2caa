"""Personalised email picks for many customers: the API's candidate and rules code, in batches.

Per batch of customers: one FAISS search for all known customers' vectors, the same per-customer
candidate blend as ``GET /v1/customers/{id}/recommendations`` (serving.candidates), then the
rules engine vectorised over the whole batch (serving.rules.engine.apply_rules_batch). Only
customers with marketing consent are ever written. The output is written to a temp file beside
``out`` and renamed when complete, so a failed run never leaves a partial file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

from features.online import CustomerOnline
from features.schemas import DEFAULT_TIERS
from serving.blend_kernel import blend_kernel, source_hits, take_rows
from serving.candidates import (
    CandidateSet,
    Source,
    SourceHits,
    blend,
    copurchase_hits,
    fold_in,
    overfetch,
)
from serving.index import faiss_threads
from serving.model import LoadedModel
from serving.rules.apply import fallback_lists, rank_with_rules
from serving.rules.engine import (
    BatchPicks,
    CandidateBatch,
    CustomerBatch,
    CustomerContext,
    ItemTable,
    apply_rules_batch,
    compiled_for,
    customers_from_contexts,
)
from serving.rules.loader import LoadedRules
from serving.service import context_for

Format = Literal["parquet", "csv", "jsonl"]
__all__ = ["export_picks", "fallback_lists", "rank_with_rules"]

OUTPUT_COLUMNS = ("customer_id", "rank", "item_id", "score", "reasons", "tier", "segment")
RECENT_K = 20  # recent purchases read per customer, as the API does


# ------------------------------------------------------------------------------ candidates
def candidates_for(
    model: LoadedModel,
    customer_id: str,
    ctx: CustomerContext,
    k: int,
    als: tuple[np.ndarray, np.ndarray] | None,
) -> tuple[CandidateSet, np.ndarray]:
    """The API's candidate plan for one customer (serving.service.recommend without a category
    or context item), given its ALS hits from a batch search. Returns (candidates, exclude)."""
    trained = model.training_items(customer_id)
    n_blocked = len(trained) + len(ctx.recent_item_idx)
    n_items = len(model.item_pos)
    want = overfetch(k, n_blocked, n_items)
    hits: list[SourceHits] = []
    if als is not None:
        idx, score = als
        keep = idx[:want] >= 0
        hits.append(SourceHits(Source.ALS, idx[:want][keep], score[:want][keep]))
    anchors = ctx.recent_item_idx if len(ctx.recent_item_idx) else trained[:10]
    if len(anchors):
        hits.append(copurchase_hits(model.data.copurchase, anchors))
    pop = model.popular_for(ctx.tier, None)
    n_pop = min(len(pop.item_idx), max(50, 2 * k + n_blocked))
    src = Source.POPULAR_TIER if ctx.tier in model.popular_tier else Source.POPULAR
    hits.append(SourceHits(src, pop.item_idx[:n_pop], pop.score[:n_pop]))
    return blend(hits, dict(model.manifest.blend)), trained


def _user_vectors(
    model: LoadedModel,
    ids: Sequence[str],
    ctxs: Sequence[CustomerContext],
    pos: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for the batch (own factors, or folded in from recent purchases) and a mask;
    ``pos``: the customers' rows in the model (-1 = unknown) when already looked up."""
    f = model.data.item_factors.shape[1]
    vecs = np.zeros((len(ids), f), np.float32)
    has = np.zeros(len(ids), bool)
    if pos is None:
        pos = np.array([model.customer_pos.get(c, -1) for c in ids], np.int64)
    known = pos >= 0
    if known.any():
        vecs[known] = np.asarray(model.data.user_factors)[pos[known]]
        has[known] = True
    for i in np.flatnonzero(~known).tolist():
        if len(ctxs[i].recent_item_idx):
            vecs[i] = fold_in(
                model.data.item_factors,
                model.item_gram,
                ctxs[i].recent_item_idx,
                reg=model.reg,
                alpha=model.alpha,
            )
            has[i] = True
    return vecs, has


def batch_candidates(
    model: LoadedModel, ids: Sequence[str], ctxs: Sequence[CustomerContext], k: int
) -> tuple[list[CandidateSet], list[np.ndarray]]:
    """Candidates and exclusions for a batch: one FAISS search, then the per-customer blend."""
    vecs, has = _user_vectors(model, ids, ctxs)
    n_items = len(model.item_pos)
    wants = [
        overfetch(k, len(model.training_items(c)) + len(x.recent_item_idx), n_items)
        for c, x in zip(ids, ctxs, strict=True)
    ]
    rows = np.flatnonzero(has)
    found: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    if rows.size:
        depth = max(1, min(max(wants[i] for i in rows), n_items))
        scores, idx = model.index.search(np.ascontiguousarray(vecs[rows]), depth)
        for r, i in enumerate(rows.tolist()):
            found[i] = (idx[r].astype(np.int32), scores[r].astype(np.float32))
    sets, excl = [], []
    for i, (cid, ctx) in enumerate(zip(ids, ctxs, strict=True)):
        c, e = candidates_for(model, cid, ctx, k, found.get(i))
        sets.append(c)
        excl.append(e)
    return sets, excl


def _ranges(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ``arange(s, s + n)`` for every (s, n), vectorised."""
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.repeat(np.cumsum(lengths) - lengths, lengths)
    return np.repeat(starts, lengths) + (np.arange(total) - offsets)


@dataclass
class _Hits:
    """Flat hits of a batch: row, item, raw score, anchor, source, and part (the blend
    scales per (row, part): 0 ALS, 1 co-purchase, 2 popular)."""

    row: np.ndarray
    item: np.ndarray
    score: np.ndarray  # float32
    anchor: np.ndarray
    source: np.ndarray  # int8
    part: np.ndarray  # int64


def _faiss_flat(model: LoadedModel, vecs: np.ndarray, rows: np.ndarray, want: np.ndarray) -> _Hits:
    """ALS hits of ``rows`` from one FAISS search (customers without a precomputed row deep
    enough: folded-in ones, long exclusion lists)."""
    depth = max(1, min(int(want[rows].max()), int(model.index.ntotal)))
    scores, idx = model.index.search(np.ascontiguousarray(vecs[rows]), depth)
    keep = (np.arange(depth)[None, :] < want[rows][:, None]) & (idx >= 0)
    r = np.broadcast_to(rows[:, None], idx.shape)[keep].astype(np.int64)
    return _Hits(
        r,
        idx[keep].astype(np.int32),
        scores[keep].astype(np.float32),
        np.full(len(r), -1, np.int32),
        np.full(len(r), int(Source.ALS), np.int8),
        np.zeros(len(r), np.int64),
    )


def _blend_flat(hits: list[_Hits], weights: dict[str, float], n: int) -> CandidateBatch:
    """``serving.candidates.blend`` for every row at once: per (row, part) min-max scaling
    to [0.5, 1] times the source weight, summed per item; the source and anchor of an item
    are those of its largest contribution; rows best first (ties by item index)."""
    parts = [h for h in hits if len(h.row)]
    if not parts:
        return CandidateBatch.from_sets([CandidateSet.empty()] * n)
    w = np.array(
        [np.float32(float(weights.get(key, 0.0))) for key in ("als", "copurchase", "popular")],
        np.float32,
    )

    def flat(name: str, dtype: type) -> np.ndarray:
        if len(parts) == 1:  # the usual case: no FAISS rows, nothing to join
            return np.asarray(getattr(parts[0], name), dtype)
        return np.concatenate([getattr(h, name) for h in parts]).astype(dtype)

    item, score, source, anchor = blend_kernel(
        n,
        flat("row", np.int64),
        flat("part", np.int64),
        flat("item", np.int32),
        flat("score", np.float32),
        flat("anchor", np.int32),
        flat("source", np.int8),
        w,
    )
    return CandidateBatch(item_idx=item, score=score, source=source, anchor_idx=anchor)


def _popular_rows(
    model: LoadedModel, names: tuple[str, ...]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The popular list of each tier in ``names`` as the compiled pass takes them (items and
    scores padded to one width, lengths, sources); built once per model and tier set."""
    key = ("popular_rows", names)
    hit = model.cache.get(key)
    if hit is None:
        lists = [model.popular_for(t, None) for t in names]
        width = max(len(p.item_idx) for p in lists)
        items = np.full((len(lists), width), -1, np.int32)
        scores = np.zeros((len(lists), width), np.float32)
        for i, p in enumerate(lists):
            items[i, : len(p.item_idx)] = p.item_idx
            scores[i, : len(p.item_idx)] = p.score
        lens = np.array([len(p.item_idx) for p in lists], np.int64)
        src = [Source.POPULAR_TIER if t in model.popular_tier else Source.POPULAR for t in names]
        hit = model.cache[key] = (items, scores, lens, np.array(src, np.int8))
    return hit  # type: ignore[return-value]


def _fallback_rows(model: LoadedModel, names: tuple[str, ...]) -> np.ndarray:
    """The tiers' popular-in-tier fallback lists (-1 padded rows), once per model."""
    key = ("fallback_rows", names)
    hit = model.cache.get(key)
    if hit is None:
        lists = [fallback_lists(model, t)[0] for t in names]
        width = max((len(t) for t in lists), default=0)
        hit = np.full((len(names), width), -1, np.int32)
        for i, t in enumerate(lists):
            hit[i, : len(t)] = t
        model.cache[key] = hit
    return hit  # type: ignore[return-value]


def batch_candidates_flat(
    model: LoadedModel,
    ids: Sequence[str],
    ctxs: Sequence[CustomerContext],
    recent_ptr: np.ndarray,
    recent_idx: np.ndarray,
    k: int,
    extra_exclude: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[CandidateBatch, np.ndarray, np.ndarray]:
    """Vectorised ``candidates_for`` over a batch: (candidates, exclude indptr, exclude idx).

    ``recent_ptr``/``recent_idx`` are the customers' recent purchases (CSR, newest first);
    ``extra_exclude`` (CSR) are items a request asked to leave out (the API's ``exclude``):
    excluded after the training purchases, and counted when sizing the ALS over-fetch.
    """
    n = len(ids)
    ui = model.data.user_items
    pos = np.array([model.customer_pos.get(c, -1) for c in ids], np.int64)
    known = pos >= 0
    safe = np.where(known, pos, 0)
    # training purchases of each customer (none for unknown customers), one compiled pass
    tr_ptr2, tr_idx = take_rows(ui.indptr, ui.indices, pos)
    tr_len = np.diff(tr_ptr2)
    rec_len = np.diff(recent_ptr)
    n_blocked = tr_len + rec_len
    if extra_exclude is not None:
        n_blocked = n_blocked + np.diff(extra_exclude[0])
    n_items = len(model.item_pos)
    want = np.minimum(n_items, np.maximum(4 * k, k + n_blocked + 20))
    n_pop = np.maximum(50, 2 * k + n_blocked)
    vecs, has = _user_vectors(model, ids, ctxs, pos)
    table, table_scores = model.data.als_candidates, model.data.als_scores
    pre = np.zeros(n, bool)
    if table is not None:
        pre = has & known & (want <= table.shape[1])
    else:
        table = np.full((1, 0), -1, np.int32)
    if table_scores is None:  # scored against the vectors in the pass
        table_scores = np.zeros((1, 0), np.float32)
    # one compiled pass: precomputed ALS neighbours, co-purchase of the anchors (recent
    # purchases, else the first 10 training purchases), popular in the customer's tier
    tiers = [c.tier for c in ctxs]
    names = tuple(sorted(set(tiers)))
    pop_items, pop_scores, pop_len, pop_src = _popular_rows(model, names)
    code = {t: i for i, t in enumerate(names)}
    flat = source_hits(
        pre,
        safe,
        want.astype(np.int64),
        np.asarray(table),
        np.asarray(table_scores),
        np.asarray(model.data.item_factors),
        vecs,
        np.asarray(recent_ptr, np.int64),
        np.asarray(recent_idx, np.int32),
        tr_ptr2,
        tr_idx,
        *model.copurchase_arrays,
        np.array([code[t] for t in tiers], np.int64),
        pop_items,
        pop_scores,
        pop_len,
        pop_src,
        n_pop.astype(np.int64),
        10,
        20,
    )
    row, part, item, raw, anchor, source = flat
    hits = [_Hits(row, item, raw, anchor, source, part)]
    faiss_rows = np.flatnonzero(has & ~pre)
    if faiss_rows.size:  # folded-in customers and rows deeper than the table
        hits.append(_faiss_flat(model, vecs, faiss_rows, want))
    if extra_exclude is not None:
        tr_ptr2, tr_idx = _csr_concat(tr_ptr2, tr_idx, *extra_exclude)
    return _blend_flat(hits, dict(model.manifest.blend), n), tr_ptr2, tr_idx


def warm_model(model: LoadedModel) -> None:
    """Run the candidate pass once on a customer the model does not know, so its compiled
    kernels exist for this model's array types (loaded from numba's cache, or compiled)
    before the model serves a request, not during one."""
    ctx = context_for(model, None)
    none = np.zeros(2, np.int64)
    batch_candidates_flat(model, ["\x00warm-up"], [ctx], none, np.zeros(0, np.int32), 10)


def _csr_concat(
    a_ptr: np.ndarray, a_idx: np.ndarray, b_ptr: np.ndarray, b_idx: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row i of the result = row i of a, then row i of b (two CSR lists of equal length)."""
    a_len, b_len = np.diff(a_ptr), np.diff(b_ptr)
    ptr = np.zeros(len(a_len) + 1, np.int64)
    np.cumsum(a_len + b_len, out=ptr[1:])
    idx = np.empty(int(ptr[-1]), np.int32)
    idx[_ranges(ptr[:-1], a_len)] = a_idx[_ranges(a_ptr[:-1], a_len)]
    idx[_ranges(ptr[:-1] + a_len, b_len)] = b_idx[_ranges(b_ptr[:-1], b_len)]
    return ptr, idx


# ------------------------------------------------------------------------------ contexts
def contexts_from_frame(frame: pl.DataFrame, model: LoadedModel) -> list[CustomerContext]:
    """Contexts from customers.parquet rows (no real-time purchases: nothing recent)."""
    cols = frame.columns

    def col(name: str) -> list[Any]:
        return frame[name].to_list() if name in cols else [None] * frame.height

    empty_i, empty_f = np.empty(0, np.int32), np.empty(0, np.float32)
    out = []
    for tier, seg, churn, band, spend, past in zip(
        col("tier"),
        col("segment"),
        col("churn_risk"),
        col("clv_band"),
        col("typical_spend"),
        col("past_categories"),
        strict=True,
    ):
        t = tier or DEFAULT_TIERS[0]
        out.append(
            CustomerContext(
                tier=t,
                tier_rank=DEFAULT_TIERS.index(t) if t in DEFAULT_TIERS else 0,
                segment=seg,
                churn_risk=churn,
                clv_band=band,
                typical_spend=spend,
                recent_item_idx=empty_i,
                recent_days_ago=empty_f,
                past_categories=tuple(past or ()),
            )
        )
    return out


def contexts_from_online(
    rows: Sequence[CustomerOnline | None], model: LoadedModel, now: float | None = None
) -> list[CustomerContext]:
    """Contexts exactly as the API builds them from the online store."""
    return [context_for(model, r, now) for r in rows]


# ------------------------------------------------------------------------------ ranking
def _no_rules_batch(
    cb: CandidateBatch, ex_ptr: np.ndarray, ex_idx: np.ndarray, k: int, items: ItemTable
) -> BatchPicks:
    """Baseline without business rules: the first k candidates not already bought."""
    n, w = cb.item_idx.shape
    ex_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(ex_ptr))
    ex_keys = ex_rows * len(items) + ex_idx.astype(np.int64)
    keys = np.arange(n, dtype=np.int64)[:, None] * len(items) + np.maximum(cb.item_idx, 0)
    ok = (cb.item_idx >= 0) & ~np.isin(keys, ex_keys)
    kk = min(k, w)
    order = np.argsort(~ok, axis=1, kind="stable")[:, :kk]
    r = np.arange(n)[:, None]
    count = np.minimum(ok.sum(axis=1), kk)
    in_range = np.arange(kk)[None, :] < count[:, None]
    src = np.where(in_range, cb.source[r, order], -1).astype(np.int8)
    reason_ids = np.full((n, kk, 1), -1, np.int32)
    source_reason = np.array([1, 0, 2, 3], np.int32)  # ALS, COPURCHASE(anchor), TIER, POPULAR
    reason_ids[..., 0] = np.where(in_range, source_reason[np.clip(src, 0, 3)], -1)
    return BatchPicks(
        item_idx=np.where(in_range, cb.item_idx[r, order], -1).astype(np.int32),
        score=np.where(in_range, cb.score[r, order], 0).astype(np.float32),
        source=src,
        anchor_idx=np.where(in_range, cb.anchor_idx[r, order], -1).astype(np.int32),
        reason_ids=reason_ids,
        count=count.astype(np.int64),
        reason_table=(
            "bought together with {anchor}",
            "recommended for you",
            "popular in your tier",
            "popular",
        ),
        copurchase_template="bought together with {anchor}",
        rules_version="none",
        group=np.zeros((n, kk), np.int8),
    )


def rules_batch(
    model: LoadedModel,
    rules: LoadedRules,
    cands: CandidateBatch,
    ex_ptr: np.ndarray,
    ex_idx: np.ndarray,
    ctxs: list[CustomerContext],
    k: int,
) -> BatchPicks:
    compiled = compiled_for(rules, model.items)
    customers: CustomerBatch = customers_from_contexts(ctxs, compiled)
    customers.exclude_indptr, customers.exclude_idx = ex_ptr, ex_idx.astype(np.int32)
    tiers = tuple(sorted({c.tier for c in ctxs}))
    per_tier = _fallback_rows(model, tiers)
    code = {t: i for i, t in enumerate(tiers)}
    pop_tier = per_tier[np.array([code[c.tier] for c in ctxs], np.int64)]
    return apply_rules_batch(
        cands,
        customers,
        compiled,
        k,
        pop_tier,
        model.popular_overall.item_idx,
    )


def picks_frame(
    out: BatchPicks, ids: Sequence[str], ctxs: Sequence[CustomerContext], item_ids: np.ndarray
) -> pl.DataFrame:
    """Long table (one row per pick) with reasons decoded to strings, vectorised."""
    n, kk = out.item_idx.shape
    mask = (np.arange(kk)[None, :] < out.count[:, None]).ravel()
    row = np.repeat(np.arange(n), kk)[mask]
    rank = np.tile(np.arange(1, kk + 1), n)[mask]
    rid = out.reason_ids.reshape(n * kk, -1)[mask]
    anchor = out.anchor_idx.ravel()[mask]
    # reasons other than the copurchase one: few distinct combinations -> decode each once
    table = np.array([*out.reason_table, ""], dtype=object)
    combos, inv = _unique_rows(np.where(rid == 0, -1, rid))
    decoded = [[str(table[x]) for x in combo if x >= 0] for combo in combos]
    has_cp = (rid == 0).any(axis=1)
    head, _, tail = out.copurchase_template.partition("{anchor}")
    anchor_id = item_ids[np.maximum(anchor, 0)].astype(object)
    anchor_id[~has_cp] = None
    frame = pl.DataFrame(
        {
            "customer_id": np.asarray(ids, dtype=object)[row].tolist(),
            "rank": rank.astype(np.int32),
            "item_id": item_ids[out.item_idx.ravel()[mask]].tolist(),
            "score": out.score.ravel()[mask],
            "_combo": np.asarray(inv).ravel().astype(np.int64),
            "_anchor": anchor_id.tolist(),
            "tier": np.array([c.tier for c in ctxs], dtype=object)[row].tolist(),
            "segment": np.array([c.segment for c in ctxs], dtype=object)[row].tolist(),
        },
        schema_overrides={
            "customer_id": pl.String,
            "item_id": pl.String,
            "_anchor": pl.String,
            "tier": pl.String,
            "segment": pl.String,
        },
    )
    combo = pl.lit(pl.Series("_r", decoded, dtype=pl.List(pl.String))).gather(pl.col("_combo"))
    cp_text = pl.concat_list(pl.lit(head) + pl.col("_anchor") + pl.lit(tail))
    return frame.with_columns(
        reasons=pl.when(pl.col("_anchor").is_not_null())
        .then(pl.concat_list(combo, cp_text))
        .otherwise(combo)
    ).select(OUTPUT_COLUMNS)


_ROW_HASH = np.random.default_rng(20261123).integers(1, 2**63, 64, dtype=np.uint64) | np.uint64(1)


def _unique_rows(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(a, axis=0, return_inverse=True)`` for a 2-D int array with few distinct
    rows, via a 64-bit row hash (``np.unique`` on rows sorts a byte view: ~20x slower here).
    Exact: every row is compared with its group's representative, and a collision (never
    seen) falls back to ``np.unique``."""
    if a.shape[0] == 0 or a.shape[1] > len(_ROW_HASH):
        combos, inv = np.unique(a, axis=0, return_inverse=True)
        return combos, np.asarray(inv).ravel()
    with np.errstate(over="ignore"):
        h = (a.astype(np.int64).view(np.uint64) * _ROW_HASH[: a.shape[1]]).sum(
            axis=1, dtype=np.uint64
        )
    _, first, inv = np.unique(h, return_index=True, return_inverse=True)
    combos = a[first]
    if not np.array_equal(combos[inv], a):
        combos, inv = np.unique(a, axis=0, return_inverse=True)
    return combos, np.asarray(inv).ravel()


# ------------------------------------------------------------------------------ export
@dataclass
class ExportReport:
    customers_selected: int = 0
    written: int = 0
    rows: int = 0
    skipped_no_consent: int = 0
    skipped_no_eligible_picks: int = 0
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "customers_selected": self.customers_selected,
            "written": self.written,
            "rows": self.rows,
            "skipped_no_consent": self.skipped_no_consent,
            "skipped_no_eligible_picks": self.skipped_no_eligible_picks,
            "seconds": round(self.seconds, 3),
            **self.extra,
        }


def select_customers(
    customers: pl.DataFrame, tier: str | None, segment: str | None
) -> tuple[pl.DataFrame, int, int]:
    """Filter by tier/segment, then keep consenting customers only.

    Returns (consenting rows, selected count, skipped for no consent). A missing or null
    consent counts as no consent.
    """
    sel = customers
    if tier is not None:
        sel = sel.filter(pl.col("tier") == tier)
    if segment is not None:
        sel = sel.filter(pl.col("segment") == segment)
    if "marketing_consent" in sel.columns:
        ok = sel.filter(pl.col("marketing_consent").fill_null(False))
    else:
        ok = sel.clear()
    return ok, sel.height, sel.height - ok.height


class _Writer:
    """Streams batches to a temp file beside ``out``; ``commit`` renames it into place."""

    def __init__(self, out: Path, fmt: Format) -> None:
        self.out, self.fmt = out, fmt
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        self.tmp = Path(tmp)
        self._fh: Any = None
        self._pq: Any = None
        self._first = True

    def write(self, frame: pl.DataFrame) -> None:
        if self.fmt == "parquet":
            import pyarrow.parquet as pq

            table = frame.to_arrow()
            if self._pq is None:
                self._pq = pq.ParquetWriter(str(self.tmp), table.schema, compression="zstd")
            self._pq.write_table(table)
            return
        if self._fh is None:
            self._fh = self.tmp.open("wb")
        if self.fmt == "csv":
            flat = frame.with_columns(pl.col("reasons").list.join("; "))
            flat.write_csv(self._fh, include_header=self._first)
        else:
            frame.write_ndjson(self._fh)
        self._first = False

    def commit(self, empty_schema: pl.DataFrame) -> None:
        if self._pq is None and self._fh is None:
            self.write(empty_schema)
        if self._pq is not None:
            self._pq.close()
        if self._fh is not None:
            self._fh.close()
        os.replace(self.tmp, self.out)

    def abort(self) -> None:
        for h in (self._pq, self._fh):
            if h is not None:
                h.close()
        self.tmp.unlink(missing_ok=True)


def _empty_output() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "customer_id": pl.String,
            "rank": pl.Int32,
            "item_id": pl.String,
            "score": pl.Float32,
            "reasons": pl.List(pl.String),
            "tier": pl.String,
            "segment": pl.String,
        }
    )


def _batches(frame: pl.DataFrame, size: int) -> Iterator[pl.DataFrame]:
    for start in range(0, frame.height, size):
        yield frame.slice(start, size)


def export_picks(
    model: LoadedModel,
    customers: pl.DataFrame,
    out: Path,
    *,
    rules: LoadedRules | None,
    k: int = 8,
    fmt: Format = "parquet",
    tier: str | None = None,
    segment: str | None = None,
    read_online: Callable[[list[str]], list[CustomerOnline]] | None = None,
    batch_size: int = 2_048,
    progress: Callable[[int], None] | None = None,
    now: float | None = None,
    threads: int | None = None,
) -> ExportReport:
    """Write k picks per consenting customer; ``rules=None`` is the no-rules baseline.

    With ``read_online`` (the online store's batch read), contexts come from the online
    features exactly as the API builds them; otherwise from the ``customers`` table.
    """
    t0 = time.perf_counter()
    report = ExportReport()
    chosen, report.customers_selected, report.skipped_no_consent = select_customers(
        customers, tier, segment
    )
    writer = _Writer(Path(out), fmt)
    stages = {"candidates_s": 0.0, "ranking_s": 0.0, "output_s": 0.0}
    item_ids = np.asarray(model.items.item_ids).astype(str)
    try:
        for part in _batches(chosen, batch_size):
            ids = part["customer_id"].cast(pl.String).to_list()
            if read_online is not None:
                online = read_online(ids)
                ctxs = contexts_from_online(online, model, now)
                consent = np.array([r.marketing_consent for r in online], bool)
                if not consent.all():  # the online row is newer: respect a withdrawn consent
                    keep = np.flatnonzero(consent)
                    report.skipped_no_consent += len(ids) - len(keep)
                    ids = [ids[i] for i in keep]
                    ctxs = [ctxs[i] for i in keep]
            else:
                ctxs = contexts_from_frame(part, model)
            if not ids:
                continue
            rec_ptr = np.zeros(len(ctxs) + 1, np.int64)
            rec_ptr[1:] = np.cumsum([len(c.recent_item_idx) for c in ctxs])
            rec_idx = (
                np.concatenate([c.recent_item_idx for c in ctxs]).astype(np.int32)
                if rec_ptr[-1]
                else np.zeros(0, np.int32)
            )
            t1 = time.perf_counter()
            with faiss_threads(threads):
                cands, ex_ptr, ex_idx = batch_candidates_flat(model, ids, ctxs, rec_ptr, rec_idx, k)
            t2 = time.perf_counter()
            res = (
                rules_batch(model, rules, cands, ex_ptr, ex_idx, ctxs, k)
                if rules is not None
                else _no_rules_batch(cands, ex_ptr, ex_idx, k, model.items)
            )
            t3 = time.perf_counter()
            frame = picks_frame(res, ids, ctxs, item_ids)
            writer.write(frame)
            stages["candidates_s"] += t2 - t1
            stages["ranking_s"] += t3 - t2
            stages["output_s"] += time.perf_counter() - t3
            got = int((res.count > 0).sum())
            report.written += got
            report.skipped_no_eligible_picks += len(ids) - got
            report.rows += frame.height
            if progress is not None:
                progress(part.height)
        writer.commit(_empty_output())
    except BaseException:
        writer.abort()
        raise
    report.seconds = time.perf_counter() - t0
    report.extra = {
        **{key: round(v, 3) for key, v in stages.items()},
        "k": k,
        "format": fmt,
        "out": str(out),
        "rules_version": rules.version if rules is not None else None,
        "model_version": model.version,
    }
    return report
