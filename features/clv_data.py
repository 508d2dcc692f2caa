"""Turn purchase events into the (x, t_x, T, mean repeat spend) summaries the CLV models use.

Conventions (those that reproduce Fader, Hardie & Lee 2005 on the CDNOW sample):
- a transaction is a distinct purchase day per customer (spend summed over the day; returns,
  i.e. negative quantities, reduce that day's spend);
- x = purchase days in the calibration period minus one (repeat purchases);
- t_x = days from the first to the last purchase day, T = days from the first purchase day
  to the calibration end date, both divided by 7 (weekly time unit);
- mean spend m = mean spend of the repeat purchase days (the first purchase excluded).
"""

from __future__ import annotations

from datetime import date
from typing import Any

import numpy as np
import polars as pl

from features import clv

SPEND = pl.col("quantity").fill_null(1.0) * pl.col("unit_price").fill_null(0.0)


def daily_transactions(events: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """One row per (customer_id, day) with a purchase, with the day's net spend.

    A day holding only returns is not a transaction (its refund is not counted here).
    """
    return (
        events.lazy()
        .with_columns(day=pl.col("ts").dt.date(), spend=SPEND)
        .group_by("customer_id", "day")
        .agg(pl.col("spend").sum(), bought=(pl.col("quantity").fill_null(1.0) > 0).any())
        .filter(pl.col("bought"))
        .drop("bought")
    )


def calibration_summary(daily: pl.LazyFrame, calibration_end: date) -> pl.LazyFrame:
    """customer_id, x, t_x, T (weeks), monetary (mean repeat-day spend, null when x = 0)."""
    cal = daily.filter(pl.col("day") <= calibration_end)
    per = cal.group_by("customer_id").agg(
        first=pl.col("day").min(),
        last=pl.col("day").max(),
        n=pl.len(),
        total=pl.col("spend").sum(),
        first_spend=pl.col("spend").sort_by("day").first(),
    )
    return per.select(
        "customer_id",
        x=(pl.col("n") - 1).cast(pl.Float64),
        t_x=(pl.col("last") - pl.col("first")).dt.total_days().cast(pl.Float64) / 7.0,
        T=(pl.lit(calibration_end) - pl.col("first")).dt.total_days().cast(pl.Float64) / 7.0,
        monetary=pl.when(pl.col("n") > 1)
        .then((pl.col("total") - pl.col("first_spend")) / (pl.col("n") - 1))
        .otherwise(None),
    )


def fit_from_events(
    events: pl.DataFrame | pl.LazyFrame,
    calibration_end: date,
    holdout_end: date | None = None,
) -> dict[str, Any]:
    """Fit BG/NBD and Gamma-Gamma on the calibration period; score the holdout if given."""
    daily = daily_transactions(events).collect().lazy()
    summ = calibration_summary(daily, calibration_end).collect()
    if summ.height == 0:
        raise ValueError(
            f"no purchases on or before the calibration end {calibration_end}; pick a later date"
        )
    x = summ["x"].to_numpy()
    t_x = summ["t_x"].to_numpy()
    T = summ["T"].to_numpy()
    bg = clv.fit_bgnbd(x, t_x, T)
    m = summ["monetary"].to_numpy()
    rep = (x >= 1) & np.isfinite(m) & (m > 0)
    gg = clv.fit_gamma_gamma(x[rep], m[rep])
    out: dict[str, Any] = {
        "customers": summ.height,
        "repeat_customers": int(rep.sum()),
        "bgnbd": bg.as_dict(),
        "gamma_gamma": gg.as_dict(),
    }
    if holdout_end is not None:
        if holdout_end <= calibration_end:
            raise ValueError("--holdout-end must be after --calibration-end")
        actual = (
            daily.filter((pl.col("day") > calibration_end) & (pl.col("day") <= holdout_end))
            .join(summ.lazy().select("customer_id"), on="customer_id", how="semi")
            .select(pl.len())
            .collect()
            .item()
        )
        weeks = (holdout_end - calibration_end).days / 7.0
        pred = clv.expected_transactions(bg, weeks, x, t_x, T)
        out["holdout"] = {
            "weeks": weeks,
            "actual_repeat_transactions": int(actual),
            "predicted_repeat_transactions": float(pred.sum()),
        }
    return out
