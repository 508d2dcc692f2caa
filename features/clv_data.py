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
from features.clv_covariates import fit_pareto_nbd_covariate
from features.clv_pareto import ParetoNBD, fit_pareto_nbd
from features.clv_predict import expected_purchases

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
    """customer_id, x, t_x, T (weeks), monetary (mean repeat-day spend, null when x = 0),
    first (the first purchase day) and first_spend (its spend)."""
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
        "first",
        "first_spend",
        x=(pl.col("n") - 1).cast(pl.Float64),
        t_x=(pl.col("last") - pl.col("first")).dt.total_days().cast(pl.Float64) / 7.0,
        T=(pl.lit(calibration_end) - pl.col("first")).dt.total_days().cast(pl.Float64) / 7.0,
        monetary=pl.when(pl.col("n") > 1)
        .then((pl.col("total") - pl.col("first_spend")) / (pl.col("n") - 1))
        .otherwise(None),
    )


MODELS = ("bgnbd", "pareto_nbd", "auto")
COVARIATES = ("cohort", "first_order_value")


def covariate_levels(
    summ: pl.DataFrame, name: str, people: pl.DataFrame | None = None
) -> list[str]:
    """Each customer's level: ``cohort`` = the month of the first purchase (YYYY-MM);
    ``first_order_value`` = the quintile (q1 lowest .. q5) of the first purchase day's spend;
    any other name is a column of ``people`` (customer_id + the column, e.g. an acquisition
    channel; customers without a value are level "unknown")."""
    if people is not None and name in people.columns and name not in COVARIATES:
        joined = summ.select("customer_id").join(
            people.select(pl.col("customer_id").cast(pl.String), pl.col(name).cast(pl.String)),
            on="customer_id",
            how="left",
        )
        return joined[name].fill_null("unknown").to_list()
    if name == "cohort":
        return summ["first"].dt.strftime("%Y-%m").to_list()
    if name == "first_order_value":
        q = summ["first_spend"].rank("ordinal") * 5 / (summ.height + 1)
        return [f"q{int(v) + 1}" for v in q.to_list()]
    raise ValueError(
        f"covariate must be one of {', '.join(COVARIATES)} or a column of the customers file, "
        f"got {name!r}"
    )


def weekly_holdout(
    daily: pl.LazyFrame, summ: pl.DataFrame, calibration_end: date, holdout_end: date
) -> tuple[np.ndarray, np.ndarray]:
    """Holdout week ends (in weeks after the calibration end, the last one partial) and the
    calibration customers' cumulative repeat transactions at each."""
    days = (
        daily.filter((pl.col("day") > calibration_end) & (pl.col("day") <= holdout_end))
        .join(summ.lazy().select("customer_id"), on="customer_id", how="semi")
        .select((pl.col("day") - pl.lit(calibration_end)).dt.total_days().alias("d"))
        .collect()["d"]
        .to_numpy()
    )
    total = (holdout_end - calibration_end).days
    ends = np.minimum(np.arange(7, total + 7, 7), total)
    cumulative = np.searchsorted(np.sort(days), ends, side="right").astype(np.float64)
    return ends / 7.0, cumulative


def fit_from_events(
    events: pl.DataFrame | pl.LazyFrame,
    calibration_end: date,
    holdout_end: date | None = None,
    model: str = "auto",
    covariate: str | None = None,
    intervals: float | None = None,
    draws: int = 100,
    people: pl.DataFrame | None = None,
) -> dict[str, Any]:
    """Fit BG/NBD, Pareto/NBD and Gamma-Gamma on the calibration period; score the holdout if
    given (total and weekly cumulative tracking error of both purchase models). ``model``
    names the purchase model the result recommends (``chosen``): ``auto`` takes the smaller
    holdout tracking error, or without a holdout the larger calibration log-likelihood (both
    models have four parameters). ``covariate`` adds Pareto/NBD with that covariate on
    purchase and dropout rates and its likelihood-ratio test (``covariate_levels``).
    ``intervals`` (e.g. 90) adds bootstrap intervals of every parameter (``draws`` refits on
    resampled customers, features/clv_bootstrap.py)."""
    if model not in MODELS:
        raise ValueError(f"model must be one of {', '.join(MODELS)}, got {model!r}")
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
    pareto = fit_pareto_nbd(x, t_x, T)
    m = summ["monetary"].to_numpy()
    rep = (x >= 1) & np.isfinite(m) & (m > 0)
    gg = clv.fit_gamma_gamma(x[rep], m[rep])
    out: dict[str, Any] = {
        "customers": summ.height,
        "repeat_customers": int(rep.sum()),
        "bgnbd": bg.as_dict(),
        "pareto_nbd": pareto.as_dict(),
        "gamma_gamma": gg.as_dict(),
    }
    if covariate is not None:
        levels = covariate_levels(summ, covariate, people)
        with_cov = fit_pareto_nbd_covariate(x, t_x, T, levels, without=pareto)
        out["pareto_nbd_covariate"] = {"covariate": covariate, **with_cov.as_dict()}
    if intervals is not None:
        from features.clv_bootstrap import bootstrap, param_intervals

        boot = bootstrap(x, t_x, T, m, draws)
        out["intervals"] = {"level": intervals, "draws": draws, **param_intervals(boot, intervals)}
    chosen = model
    if holdout_end is not None:
        if holdout_end <= calibration_end:
            raise ValueError("--holdout-end must be after --calibration-end")
        weeks, actual = weekly_holdout(daily, summ, calibration_end, holdout_end)
        fitted: dict[str, clv.BGNBD | ParetoNBD] = {"bgnbd": bg, "pareto_nbd": pareto}
        tracking = {
            name: np.array([expected_purchases(p, float(w), x, t_x, T).sum() for w in weeks])
            for name, p in fitted.items()
        }
        mae = {name: float(np.abs(p - actual).mean()) for name, p in tracking.items()}
        out["holdout"] = {
            "weeks": float(weeks[-1]),
            "actual_repeat_transactions": int(actual[-1]),
            "predicted_repeat_transactions": float(tracking["bgnbd"][-1]),
            "predicted_repeat_transactions_pareto_nbd": float(tracking["pareto_nbd"][-1]),
            "weekly_tracking_mae": {k: round(v, 3) for k, v in mae.items()},
        }
        if model == "auto":
            chosen = min(mae, key=lambda k: mae[k])
    elif model == "auto":
        chosen = "bgnbd" if bg.log_likelihood >= pareto.log_likelihood else "pareto_nbd"
    out["chosen"] = chosen
    return out
