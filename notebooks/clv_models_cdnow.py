# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Purchase models and the loyalty index on CDNOW: which predicts the holdout?
#
# The CDNOW master file (23,570 customers), calibration to 1997-09-30, holdout to 1998-06-30:
# BG/NBD against Pareto/NBD (parameters, weekly holdout tracking), Pareto/NBD with a covariate
# (the first order's value), and how well the loyalty index, the RFM score and CLV rank
# customers by what they bought next. Everything calls the project's code
# (`features.clv_data`, `features.clv_covariates`, `features.index_validity`); this notebook
# groups and plots. Executed by `python notebooks/run.py`; outputs in
# `reports/clv_models_cdnow/`.

# %%
import os
from datetime import date
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
from IPython.display import display

from features import clv, index_validity
from features.adapters.cdnow import read_cdnow
from features.clv_data import (
    calibration_summary,
    daily_transactions,
    fit_from_events,
    weekly_holdout,
)
from features.clv_pareto import ParetoNBD
from features.clv_pareto import expected_transactions as pareto_expected
from features.customers import build_customers
from features.tiers import load_rules
from patron.settings import get_settings

REPORTS = Path(os.environ.get("PATRON_REPORTS_DIR", "reports/clv_models_cdnow"))
REPORTS.mkdir(parents=True, exist_ok=True)
EVENTS = read_cdnow(get_settings().data_dir / "cdnow" / "CDNOW_master.txt")
CAL_END, HOLDOUT_END = date(1997, 9, 30), date(1998, 6, 30)
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})


def save(fig: plt.Figure, name: str) -> None:
    fig.tight_layout()
    fig.savefig(REPORTS / f"{name}.png")
    plt.close(fig)


def table(df: pl.DataFrame, name: str) -> pl.DataFrame:
    df.write_csv(REPORTS / f"{name}.csv")
    return df


# %% [markdown]
# ## Both purchase models, fitted on the calibration period

# %%
fit = fit_from_events(EVENTS, CAL_END, HOLDOUT_END, covariate="first_order_value")
params = table(
    pl.DataFrame(
        [
            {"model": name, **{k: round(v, 4) for k, v in fit[name].items()}}
            for name in ("bgnbd", "pareto_nbd")
        ],
        strict=False,
    ),
    "purchase_models",
)
display(params)
print(
    "weekly holdout tracking MAE:", fit["holdout"]["weekly_tracking_mae"], "chosen:", fit["chosen"]
)

# %% [markdown]
# ## Holdout tracking: cumulative repeat purchases, actual against each model

# %%
daily = daily_transactions(EVENTS).collect().lazy()
summ = calibration_summary(daily, CAL_END).collect()
x, t_x, T = (summ[c].to_numpy() for c in ("x", "t_x", "T"))
weeks, actual = weekly_holdout(daily, summ, CAL_END, HOLDOUT_END)
bg = clv.BGNBD(**fit["bgnbd"])
pn = ParetoNBD(**fit["pareto_nbd"])
tracking = table(
    pl.DataFrame(
        {
            "week_after_calibration": weeks,
            "actual": actual,
            "bgnbd": [float(clv.expected_transactions(bg, w, x, t_x, T).sum()) for w in weeks],
            "pareto_nbd": [float(pareto_expected(pn, w, x, t_x, T).sum()) for w in weeks],
        }
    ),
    "tracking_by_model",
)
fig, ax = plt.subplots(figsize=(8, 4.5))
ax.plot(weeks, actual, "k-", lw=2, label="actual")
ax.plot(weeks, tracking["bgnbd"], "--", label="BG/NBD")
ax.plot(weeks, tracking["pareto_nbd"], ":", lw=2, label="Pareto/NBD")
ax.set(
    xlabel="weeks after the calibration end",
    ylabel="cumulative repeat purchase days",
    title="CDNOW master: holdout tracking by purchase model",
)
ax.legend()
save(fig, "tracking_by_model")

# %% [markdown]
# ## A covariate: the first order's value (quintiles, q1 the reference)

# %%
cov = fit["pareto_nbd_covariate"]
covariates = table(
    pl.DataFrame(
        {
            "level": list(cov["gamma_purchase"]),
            "purchase_rate_x": [round(float(np.exp(v)), 3) for v in cov["gamma_purchase"].values()],
            "dropout_rate_x": [round(float(np.exp(v)), 3) for v in cov["gamma_dropout"].values()],
        }
    ),
    "covariate_first_order_value",
)
display(covariates)
lr, df_, pv = cov["lr_statistic"], cov["lr_df"], cov["lr_p_value"]
print(f"likelihood-ratio test: {lr:.1f} on {df_} df, p = {pv:.2g}")

# %% [markdown]
# ## Does the loyalty index rank customers by what they did next?

# %%
before = EVENTS.lazy().filter(pl.col("ts").dt.date() <= CAL_END)
as_of = EVENTS.filter(pl.col("ts").dt.date() <= CAL_END)["ts"].max()
customers, _ = build_customers(before, as_of, load_rules(None))
ranked = index_validity.with_outcomes(
    customers, index_validity.holdout_outcomes(EVENTS, CAL_END, HOLDOUT_END)
)
report = index_validity.report(ranked)
validity = table(pl.DataFrame([{"score": k, **v} for k, v in report.items()]), "index_validity")
display(validity)
deciles = (
    ranked.with_columns(
        decile=(pl.col("loyalty_index").rank("ordinal") * 10 / (pl.len() + 1)).floor() + 1
    )
    .group_by("decile")
    .agg(holdout_spend=pl.col("holdout_spend").mean(), customers=pl.len())
    .sort("decile")
)
table(deciles, "spend_by_index_decile")
fig, ax = plt.subplots(figsize=(7, 4))
ax.bar(deciles["decile"], deciles["holdout_spend"])
ax.set(
    xlabel="loyalty index decile at the calibration end (10 = highest)",
    ylabel="mean holdout spend ($)",
    title="CDNOW master: holdout spend by loyalty-index decile",
)
save(fig, "spend_by_index_decile")
