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
from serving.candidates import (
    CandidateSet,
    Source,
    SourceHits,
    blend,
    copurchase_hits,
    fold_in,
    overfetch,
)
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
    model: LoadedModel, ids: Sequence[str], ctxs: Sequence[CustomerContext]
) -> tuple[np.ndarray, np.ndarray]:
    """Vectors for the batch (own factors, or folded in from recent purchases) and a mask."""
    f = model.data.item_factors.shape[1]
    vecs = np.zeros((len(ids), f), np.float32)
    has = np.zeros(len(ids), bool)
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
    rows: Sequence[CustomerOnline], model: LoadedModel, now: float | None = None
) -> list[CustomerContext]:
    """Contexts exactly as the API builds them from the online store."""
    return [context_for(model, r, now) for r in rows]


# ------------------------------------------------------------------------------ ranking
def _no_rules_batch(
    sets: list[CandidateSet], excl: list[np.ndarray], k: int, items: ItemTable
) -> BatchPicks:
    """Baseline without business rules: the first k candidates not already bought."""
    cb = CandidateBatch.from_sets(sets)
    n, w = cb.item_idx.shape
    ex_rows = np.repeat(np.arange(n, dtype=np.int64), [len(e) for e in excl])
    ex_keys = ex_rows * len(items) + (np.concatenate(excl) if excl else np.zeros(0, np.int64))
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


def _rules_batch(
    model: LoadedModel,
    rules: LoadedRules,
    sets: list[CandidateSet],
    excl: list[np.ndarray],
    ctxs: list[CustomerContext],
    k: int,
) -> BatchPicks:
    compiled = compiled_for(rules, model.items)
    customers: CustomerBatch = customers_from_contexts(ctxs, compiled, list(excl))
    lists = [fallback_lists(model, c.tier) for c in ctxs]
    width = max((len(t) for t, _ in lists), default=0)
    pop_tier = np.full((len(ctxs), width), -1, np.int32)
    for i, (t, _) in enumerate(lists):
        pop_tier[i, : len(t)] = t
    return apply_rules_batch(
        CandidateBatch.from_sets(sets),
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
    combos, inv = np.unique(np.where(rid == 0, -1, rid), axis=0, return_inverse=True)
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
            sets, excl = batch_candidates(model, ids, ctxs, k)
            res = (
                _rules_batch(model, rules, sets, excl, ctxs, k)
                if rules is not None
                else _no_rules_batch(sets, excl, k, model.items)
            )
            frame = picks_frame(res, ids, ctxs, item_ids)
            writer.write(frame)
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
        "k": k,
        "format": fmt,
        "out": str(out),
        "rules_version": rules.version if rules is not None else None,
        "model_version": model.version,
    }
    return report
