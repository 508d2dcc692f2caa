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
# # Loyalty analytics on CDNOW
#
# What the `features` package computes for a retailer's customers, shown on the CDNOW
# purchase history (Fader, Hardie & Lee 2005): RFM cells, loyalty tiers, the loyalty index,
# how well the BG/NBD model tracks repeat purchases (calibration weeks 1-39, holdout weeks
# 40-78), conditional expectations by calibration frequency, and CLV by segment.
#
# Everything below calls the project's own code (`features.adapters.cdnow`,
# `features.clv_data`, `features.clv`, `features.customers`, `features.tiers`); this
# notebook only groups and plots. Executed headless by `python notebooks/run.py`, which
# writes the plots (PNG) and tables (CSV) to `reports/loyalty_cdnow/`.

# %%
import os
from datetime import UTC, date, datetime
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import polars as pl
import polars.selectors as cs
from IPython.display import display

from features import clv, clv_data, tiers
from features.adapters.cdnow import read_cdnow
from features.customers import build_customers
from patron.settings import get_settings

REPORTS = Path(os.environ.get("PATRON_REPORTS_DIR", "reports/loyalty_cdnow"))
REPORTS.mkdir(parents=True, exist_ok=True)
DATA = get_settings().data_dir / "cdnow"
START = date(1997, 1, 1)  # day 0 of week 1
CAL_END = date(1997, 9, 30)  # end of week 39
HOLDOUT_END = date(1998, 6, 30)  # end of week 78
pl.Config.set_tbl_rows(30)
plt.rcParams.update({"figure.dpi": 100, "savefig.dpi": 100, "axes.grid": True, "grid.alpha": 0.3})


def save(fig: plt.Figure, name: str) -> None:
    """Write a figure as reports/loyalty_cdnow/<name>.png."""
    fig.tight_layout()
    fig.savefig(REPORTS / f"{name}.png")
    plt.close(fig)
    print(f"saved {REPORTS.name}/{name}.png")


def table(df: pl.DataFrame, name: str) -> pl.DataFrame:
    """Write a table as reports/loyalty_cdnow/<name>.csv and return it for display."""
    df = df.with_columns(cs.float().round_sig_figs(6))  # no float noise in committed CSVs
    df.write_csv(REPORTS / f"{name}.csv")
    return df


sample = read_cdnow(DATA / "CDNOW_sample.txt")
master_path = DATA / "CDNOW_master.txt"
master = read_cdnow(master_path) if master_path.is_file() else None
print(
    f"sample: {sample.height} rows, {sample['customer_id'].n_unique()} customers; "
    + (
        f"master: {master.height} rows, {master['customer_id'].n_unique()} customers"
        if master is not None
        else "master: not found"
    )
)

# %% [markdown]
# ## BG/NBD: calibration fit and tracking plot
#
# A transaction is a distinct purchase day (`features.clv_data.daily_transactions`); x counts
# repeat purchase days in the calibration period. The model line is the expected cumulative
# repeat transactions of the whole cohort, sum over customers of E[X(t - first purchase)]
# (`features.clv.expected_cohort_repeat_transactions`, FHL 2005 eq. 7); the actual line counts
# every purchase day after a customer's first.

# %%
PUBLISHED_BG = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259, "log_likelihood": -9582.43}


def fit(events: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, clv.BGNBD]:
    """Daily transactions, calibration summary with holdout counts, fitted BG/NBD."""
    daily = clv_data.daily_transactions(events).collect()
    summ = clv_data.calibration_summary(daily.lazy(), CAL_END).collect()
    holdout = (
        daily.filter((pl.col("day") > CAL_END) & (pl.col("day") <= HOLDOUT_END))
        .group_by("customer_id")
        .agg(holdout=pl.len())
    )
    summ = summ.join(holdout, on="customer_id", how="left").with_columns(
        pl.col("holdout").fill_null(0)
    )
    bg = clv.fit_bgnbd(summ["x"], summ["t_x"], summ["T"])
    return daily, summ, bg


daily, summ, bg = fit(sample)
params = table(
    pl.DataFrame(
        [
            {"source": "published (FHL 2005, sample)", **PUBLISHED_BG},
            {"source": "features.clv on CDNOW_sample", **bg.as_dict()},
        ]
    ),
    "bgnbd_params",
)
display(params)

# %%
WEEKS = np.arange(1, 79)
WEEK_END_T = (7 * WEEKS - 1) / 7.0  # last day of week w, in weeks since 1997-01-01


def tracking(daily: pl.DataFrame, bg: clv.BGNBD) -> pl.DataFrame:
    """Weekly actual vs expected repeat transactions (incremental and cumulative)."""
    days = daily.with_columns(
        d=(pl.col("day") - pl.lit(START)).dt.total_days(),
    ).with_columns(first=pl.col("d").min().over("customer_id"))
    repeat = days.filter(pl.col("d") > pl.col("first"))
    actual = (
        repeat.group_by(week=(pl.col("d") // 7 + 1).cast(pl.Int64))
        .agg(actual=pl.len())
        .join(pl.DataFrame({"week": WEEKS}), on="week", how="right")
        .sort("week")
        .with_columns(pl.col("actual").fill_null(0))
    )
    first = days.group_by("customer_id").agg(pl.col("first").first())["first"].to_numpy() / 7.0
    cum_model = clv.expected_cohort_repeat_transactions(bg, first, WEEK_END_T)
    return actual.with_columns(
        cum_actual=pl.col("actual").cum_sum(),
        cum_model=pl.Series(cum_model),
        model=pl.Series(np.diff(cum_model, prepend=0.0)),
    ).select("week", "actual", "model", "cum_actual", "cum_model")


track = table(tracking(daily, bg), "tracking_weekly")
print(track.filter(pl.col("week").is_in([13, 26, 39, 52, 65, 78])))

# %%
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
ax = axes[0]
ax.plot(track["week"], track["cum_actual"], color="black", label="actual")
ax.plot(track["week"], track["cum_model"], color="tab:red", ls="--", label="BG/NBD")
ax.set(
    title="CDNOW sample: cumulative repeat transactions",
    xlabel="week",
    ylabel="cumulative repeat transactions",
)
ax = axes[1]
ax.plot(track["week"], track["actual"], color="black", label="actual")
ax.plot(track["week"], track["model"], color="tab:red", ls="--", label="BG/NBD")
ax.set(title="weekly repeat transactions", xlabel="week", ylabel="repeat transactions")
for ax in axes:
    ax.axvline(39, color="grey", ls=":", lw=1.5)
    ax.text(39.5, ax.get_ylim()[1] * 0.95, "end of calibration\n(week 39)", va="top", fontsize=9)
    ax.legend(loc="lower right" if ax is axes[0] else "upper right")
save(fig, "tracking_cumulative")

# %%
hold = track.filter(pl.col("week") > 39)
print(
    f"holdout weeks 40-78: actual {int(hold['actual'].sum())} repeat transactions, "
    f"BG/NBD {float(hold['model'].sum()):.0f} "
    f"({100 * (float(hold['model'].sum()) / int(hold['actual'].sum()) - 1):+.1f}%)"
)

# %% [markdown]
# ## Conditional expectations by calibration frequency
#
# For customers grouped by their number of repeat purchases in weeks 1-39, the mean number of
# purchases they actually made in weeks 40-78 against the model's E[Y(39) | x, t_x, T]
# (`features.clv.expected_transactions`, FHL 2005 eq. 10).

# %%
cond = summ.with_columns(
    predicted=pl.Series(clv.expected_transactions(bg, 39.0, *(summ[c] for c in ("x", "t_x", "T")))),
    group=pl.col("x").clip(upper_bound=7).cast(pl.Int64),
)
cond_tab = table(
    cond.group_by("group")
    .agg(
        customers=pl.len(),
        actual=pl.col("holdout").mean(),
        predicted=pl.col("predicted").mean(),
    )
    .sort("group")
    .with_columns(
        x=pl.when(pl.col("group") == 7)
        .then(pl.lit("7+"))
        .otherwise(pl.col("group").cast(pl.String))
    )
    .select("x", "customers", "actual", "predicted"),
    "conditional_expectations",
)
display(cond_tab)

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.8))
xs = np.arange(cond_tab.height)
ax.plot(xs, cond_tab["actual"], "o-", color="black", label="actual (weeks 40-78)")
ax.plot(xs, cond_tab["predicted"], "s--", color="tab:red", label="BG/NBD E[Y(39) | x, t_x, T]")
ax.set_xticks(
    xs,
    [f"{x}\n(n={n})" for x, n in zip(cond_tab["x"], cond_tab["customers"], strict=True)],
)
ax.set(
    title="CDNOW sample: conditional expectations",
    xlabel="repeat transactions in calibration (weeks 1-39), customers per group",
    ylabel="mean transactions in holdout",
)
ax.legend()
save(fig, "conditional_expectations")

# %% [markdown]
# ### The same on the full CDNOW master file
#
# 23,570 customers, same periods; cheap because the fit runs on unique (x, t_x, T) rows.

# %%
if master is not None:
    m_daily, m_summ, m_bg = fit(master)
    m_track = table(tracking(m_daily, m_bg), "tracking_weekly_master")
    print("BG/NBD on master:", {k: round(v, 4) for k, v in m_bg.as_dict().items()})
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    ax.plot(m_track["week"], m_track["cum_actual"], color="black", label="actual")
    ax.plot(m_track["week"], m_track["cum_model"], color="tab:red", ls="--", label="BG/NBD")
    ax.axvline(39, color="grey", ls=":", lw=1.5, label="end of calibration (week 39)")
    ax.set(
        title="CDNOW master: cumulative repeat transactions",
        xlabel="week",
        ylabel="cumulative repeat transactions",
    )
    ax.legend(loc="lower right")
    save(fig, "tracking_cumulative_master")
else:
    print("CDNOW_master.txt not found: master tracking plot skipped")

# %% [markdown]
# ## The customer table: RFM, tiers, loyalty index, CLV, segments
#
# `features.customers.build_customers` on the master file (the sample when the master is
# absent) as of the last day of the data, with the tier rules in `config/tiers.yaml`
# (rolling 12-month spend). CLV is the discounted 52-week value from BG/NBD + Gamma-Gamma
# fitted on all history.

# %%
AS_OF = datetime(1998, 6, 30, tzinfo=UTC)
rules = tiers.load_rules(Path("config/tiers.yaml"))
events = master if master is not None else sample
customers, info = build_customers(events.lazy(), AS_OF, rules)
print(f"{customers.height} customers as of {AS_OF.date()}; CLV fit: {info.get('bgnbd')}")
customers.select(
    "customer_id",
    "frequency",
    "monetary_total",
    "rfm_cell",
    "tier",
    "loyalty_index",
    "clv",
    "segment",
).head(5)

# %% [markdown]
# ### RFM cells
# Quintile scores 1-5 (5 = most recent / most frequent / highest spend; `features.rfm`).

# %%
rfm_cells = table(
    customers.group_by("rfm_cell", "r_score", "f_score", "m_score")
    .agg(customers=pl.len(), mean_spend=pl.col("monetary_total").mean())
    .sort("rfm_cell"),
    "rfm_cells",
)
print(f"{rfm_cells.height} non-empty RFM cells of 125")
rfm_cells.sort("customers", descending=True).head(10)

# %%
grid = np.zeros((5, 5), dtype=int)
for r, f, n in customers.group_by("r_score", "f_score").agg(n=pl.len()).iter_rows():
    grid[int(r) - 1, int(f) - 1] = n
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
im = axes[0].imshow(grid, origin="lower", cmap="Blues")
for (i, j), n in np.ndenumerate(grid):
    axes[0].text(
        j,
        i,
        str(n),
        ha="center",
        va="center",
        fontsize=9,
        color="white" if n > grid.max() / 2 else "black",
    )
axes[0].set_xticks(range(5), [str(i) for i in range(1, 6)])
axes[0].set_yticks(range(5), [str(i) for i in range(1, 6)])
axes[0].set(title="customers by R and F score", xlabel="F score", ylabel="R score")
axes[0].grid(False)
fig.colorbar(im, ax=axes[0], shrink=0.8)
top = rfm_cells.sort("customers", descending=True).head(20)
axes[1].barh(top["rfm_cell"].to_list()[::-1], top["customers"].to_list()[::-1], color="tab:blue")
axes[1].set(title="20 largest RFM cells (label = R, F, M score)", xlabel="customers")
save(fig, "rfm_cells")

# %% [markdown]
# ### Tier distribution

# %%
names = [t.name for t in rules.tiers]
tier_tab = table(
    pl.DataFrame({"tier": names, "threshold": [t.threshold for t in rules.tiers]})
    .join(
        customers.group_by("tier").agg(
            customers=pl.len(),
            spend_12m_median=pl.col("spend_12m").median(),
            clv_mean=pl.col("clv").mean(),
        ),
        on="tier",
        how="left",
    )
    .with_columns(pl.col("customers").fill_null(0))
    .with_columns(share=pl.col("customers") / pl.col("customers").sum()),
    "tiers",
)
display(tier_tab)

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.5))
colors = ["#b08d57", "#a8a9ad", "#d4af37", "#6f7c85"][: len(names)]
bars = ax.bar(names, tier_tab["customers"], color=colors)
for b, s in zip(bars, tier_tab["share"], strict=True):
    ax.annotate(
        f"{int(b.get_height())} ({100 * s:.1f}%)",
        (b.get_x() + b.get_width() / 2, b.get_height()),
        ha="center",
        va="bottom",
        fontsize=9,
    )
ax.set(
    title=f"Loyalty tiers as of {AS_OF.date()} (rolling {rules.window_days}-day {rules.basis})",
    ylabel="customers (log scale)",
    yscale="log",
)
ax.set_xticks(
    range(len(names)),
    [f"{n}\n(>= {t:g})" for n, t in zip(names, tier_tab["threshold"], strict=True)],
)
save(fig, "tier_distribution")

# %% [markdown]
# ### Loyalty index
# 0-100, weighted percentiles of recency, frequency, spend, tenure, breadth and basket size
# (`features.loyalty`; NPS blended in where a retailer has survey answers — CDNOW has none).

# %%
fig, ax = plt.subplots(figsize=(7.5, 4.5))
bins = np.linspace(0, 100, 41)
bottom = np.zeros(len(bins) - 1)
for name, color in zip(names, colors, strict=True):
    vals = customers.filter(pl.col("tier") == name)["loyalty_index"].drop_nulls().to_numpy()
    h, _ = np.histogram(vals, bins=bins)
    ax.bar(bins[:-1], h, width=np.diff(bins), bottom=bottom, align="edge", color=color, label=name)
    bottom += h
ax.set(
    title="Loyalty index distribution by tier", xlabel="loyalty index (0-100)", ylabel="customers"
)
ax.legend(title="tier")
save(fig, "loyalty_index")
table(
    customers.group_by("tier")
    .agg(
        customers=pl.len(),
        p10=pl.col("loyalty_index").quantile(0.1),
        median=pl.col("loyalty_index").median(),
        p90=pl.col("loyalty_index").quantile(0.9),
    )
    .sort(pl.col("tier").replace_strict(names, list(range(len(names))))),
    "loyalty_index_by_tier",
)

# %% [markdown]
# ### CLV by segment
# Segments (`features.segments`): new, at-risk, high-value, regular; CLV = discounted
# expected 52-week value.

# %%
seg_tab = table(
    customers.group_by("segment")
    .agg(
        customers=pl.len(),
        clv_mean=pl.col("clv").mean(),
        clv_median=pl.col("clv").median(),
        clv_p90=pl.col("clv").quantile(0.9),
        clv_total=pl.col("clv").sum(),
        p_alive_mean=pl.col("p_alive").mean(),
    )
    .with_columns(clv_share=pl.col("clv_total") / pl.col("clv_total").sum())
    .sort("clv_mean", descending=True),
    "clv_by_segment",
)
display(seg_tab)

# %%
order = seg_tab["segment"].to_list()
data = [
    np.maximum(customers.filter(pl.col("segment") == s)["clv"].drop_nulls().to_numpy(), 0.01)
    for s in order
]
fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
axes[0].boxplot(data, showfliers=False)
axes[0].set_xticks(
    range(1, len(order) + 1), [f"{s}\n(n={len(d)})" for s, d in zip(order, data, strict=True)]
)
axes[0].set_yscale("log")
axes[0].set(title="CLV (52 weeks, discounted) by segment", ylabel="CLV ($, log scale)")
axes[1].bar(order, seg_tab["clv_share"] * 100, color="tab:green")
axes[1].set(title="share of total CLV by segment", ylabel="% of total CLV")
save(fig, "clv_by_segment")

# %%
print("outputs:", sorted(p.name for p in REPORTS.iterdir() if p.suffix in (".png", ".csv")))
