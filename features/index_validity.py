"""Does the loyalty index predict what customers do next? And weights chosen by that test.

The customer table is built as of a calibration end; each customer's holdout purchases
(distinct purchase days, as the CLV models count them) and spend up to the holdout end are the
outcome. Per score (the loyalty index, the RFM score r+f+m, CLV): the Spearman correlation with
holdout purchases and with holdout spend, and the top-decile lift (the share of holdout spend
the best-scored 10% of customers bring, over 10%).

``calibrate_weights`` picks the index's behavioural weights (non-negative, summing to 1) that
maximise the Spearman correlation with holdout spend on one half of the customers (a fixed
hash split); the report scores both weight sets on the other half, so the figure that says
whether calibration helped is not measured on the customers it was tuned on.
"""

from __future__ import annotations

import zlib
from datetime import date
from typing import Any

import numpy as np
import polars as pl
from scipy import optimize, stats

from features.clv_data import daily_transactions
from features.loyalty import BEHAVIOURAL_WEIGHTS, percentile

MEASURES = tuple(BEHAVIOURAL_WEIGHTS)


def holdout_outcomes_schema() -> dict[str, pl.DataType]:
    return {
        "customer_id": pl.String(),
        "holdout_purchases": pl.UInt32(),
        "holdout_spend": pl.Float64(),
    }


def holdout_outcomes(
    events: pl.DataFrame | pl.LazyFrame, calibration_end: date, holdout_end: date
) -> pl.DataFrame:
    """customer_id, holdout_purchases (distinct days) and holdout_spend in (cal, hold]."""
    if holdout_end <= calibration_end:
        raise ValueError("the holdout end must be after the calibration end")
    return (
        daily_transactions(events)
        .filter((pl.col("day") > calibration_end) & (pl.col("day") <= holdout_end))
        .group_by("customer_id")
        .agg(holdout_purchases=pl.len(), holdout_spend=pl.col("spend").sum())
        .collect()
    )


def with_outcomes(table: pl.DataFrame, outcomes: pl.DataFrame) -> pl.DataFrame:
    """The table's customers with their outcomes (0 for no holdout purchase), the RFM score
    and the measures' percentile ranks."""
    ranks = [percentile(c, hib).alias(f"_p_{c}") for c, (_, hib) in BEHAVIOURAL_WEIGHTS.items()]
    return (
        table.join(outcomes, on="customer_id", how="left")
        .with_columns(
            pl.col("holdout_purchases").fill_null(0),
            pl.col("holdout_spend").fill_null(0.0),
            rfm_score=(pl.col("r_score") + pl.col("f_score") + pl.col("m_score")).cast(pl.Float64),
        )
        .with_columns(ranks)
    )


def index_with(df: pl.DataFrame, weights: dict[str, float]) -> np.ndarray:
    """The behavioural index (0-100) under other weights, from ``with_outcomes``' ranks."""
    total = sum(weights.values())
    cols = [df[f"_p_{m}"].to_numpy() * (weights.get(m, 0.0) / total) for m in MEASURES]
    return np.asarray(np.sum(cols, axis=0) * 100.0)


def top_decile_lift(score: np.ndarray, outcome: np.ndarray) -> float:
    """Share of the outcome total the best-scored 10% bring, divided by 0.1."""
    total = float(outcome.sum())
    if total <= 0 or len(score) < 10:
        return float("nan")
    top = np.argsort(-score, kind="stable")[: max(1, len(score) // 10)]
    return float(outcome[top].sum() / total / 0.1)


def score_report(score: np.ndarray, df: pl.DataFrame) -> dict[str, float]:
    ok = np.isfinite(score)
    buys, spend = df["holdout_purchases"].to_numpy()[ok], df["holdout_spend"].to_numpy()[ok]
    s = score[ok]
    return {
        "customers": int(ok.sum()),
        "spearman_purchases": round(float(stats.spearmanr(s, buys).statistic), 4),
        "spearman_spend": round(float(stats.spearmanr(s, spend).statistic), 4),
        "top_decile_lift_spend": round(top_decile_lift(s, spend), 3),
    }


def report(df: pl.DataFrame, weights: dict[str, float] | None = None) -> dict[str, Any]:
    """Per score: Spearman with holdout purchases and spend, top-decile lift of spend."""
    index = index_with(df, weights) if weights is not None else df["loyalty_index"].to_numpy()
    scores = {
        "loyalty_index": index,
        "rfm_score": df["rfm_score"].to_numpy(),
        "clv": df["clv"].cast(pl.Float64).fill_null(float("nan")).to_numpy(),
    }
    return {name: score_report(np.asarray(v, np.float64), df) for name, v in scores.items()}


def halves(df: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A fixed split of the customers by a hash of their id: (fit half, check half)."""
    odd = np.array([zlib.crc32(c.encode()) % 2 == 1 for c in df["customer_id"].to_list()])
    return df.filter(pl.Series(odd)), df.filter(pl.Series(~odd))


def calibrate_weights(fit: pl.DataFrame) -> dict[str, float]:
    """Non-negative weights summing to 1 that maximise the index's Spearman correlation with
    holdout spend on ``fit`` (softmax parameters, Nelder-Mead from today's weights)."""
    spend = fit["holdout_spend"].to_numpy()
    ranks = np.stack([fit[f"_p_{m}"].to_numpy() for m in MEASURES])

    def weights_of(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max())
        return np.asarray(e / e.sum())

    def loss(z: np.ndarray) -> float:
        rho = stats.spearmanr(weights_of(z) @ ranks, spend).statistic
        return -float(rho) if np.isfinite(rho) else 1.0

    start = np.log(np.array([BEHAVIOURAL_WEIGHTS[m][0] for m in MEASURES]))
    res = optimize.minimize(loss, start, method="Nelder-Mead", options={"maxiter": 600})
    return {m: round(float(w), 4) for m, w in zip(MEASURES, weights_of(res.x), strict=True)}
