"""Customer contexts for the export and the long picks table (one row per pick, reasons as
strings), vectorised."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import polars as pl

from features.online import CustomerOnline
from serving.model import LoadedModel
from serving.recommend import context_for
from serving.rules.engine import BatchPicks, CustomerContext
from serving.rules.models import split_anchor_template

OUTPUT_COLUMNS = (
    "customer_id",
    "recommendation_id",
    "rank",
    "item_id",
    "score",
    "reasons",
    "tier",
    "segment",
)


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
        t = tier or model.tiers[0]
        out.append(
            CustomerContext(
                tier=t,
                tier_rank=model.tier_rank(t),
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


def picks_frame(
    out: BatchPicks,
    ids: Sequence[str],
    ctxs: Sequence[CustomerContext],
    item_ids: np.ndarray,
    rec_ids: Sequence[str],
) -> pl.DataFrame:
    """Long table (one row per pick) with reasons decoded to strings, vectorised; every row
    of a customer carries the customer's recommendation id."""
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
    split = split_anchor_template(out.copurchase_template)  # validated with the rules
    if split is None:
        raise ValueError(f"reason template {out.copurchase_template!r}: no single {{anchor}}")
    head, tail = split
    anchor_id = item_ids[np.maximum(anchor, 0)].astype(object)
    anchor_id[~has_cp] = None
    frame = pl.DataFrame(
        {
            "customer_id": np.asarray(ids, dtype=object)[row].tolist(),
            "recommendation_id": np.asarray(rec_ids, dtype=object)[row].tolist(),
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
            "recommendation_id": pl.String,
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
