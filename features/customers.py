"""Build the customer feature table (customers.parquet): behaviour, RFM, tier, loyalty index,
CLV (BG/NBD + Gamma-Gamma), churn risk, segment and marketing consent.

Everything is polars (lazy where it helps) except the CLV arithmetic, which runs on numpy
arrays over unique (x, t_x, T) rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from features import clv, clv_data, clv_pareto, loyalty, rfm, segments, tiers
from features.clv_predict import alive, expected_purchases

log = logging.getLogger("patron.features")

COLUMNS = (
    "customer_id",
    "recency_days",
    "frequency",
    "monetary_total",
    "monetary_avg",
    "items_per_order",
    "category_count",
    "top_category_share",
    "tenure_days",
    "spend_12m",
    "typical_spend",
    "returns",
    "r_score",
    "f_score",
    "m_score",
    "rfm_cell",
    "tier",
    "tier_rank",
    "tier_below_since",
    "next_tier",
    "progress_to_next",
    "loyalty_index",
    "expected_transactions",
    "p_alive",
    "churn_risk",
    "expected_spend",
    "clv",
    "clv_band",
    "segment",
    "marketing_consent",
    "nps",
    "first_purchase",
    "last_purchase",
)


# with ClvOptions.interval_level: each customer's bootstrap interval (features/clv_bootstrap.py)
INTERVAL_COLUMNS = (
    "expected_transactions_low",
    "expected_transactions_high",
    "clv_low",
    "clv_high",
)

MIN_CLV_CUSTOMERS = 20


CLV_MODELS = ("bgnbd", "pareto_nbd")


@dataclass(frozen=True)
class ClvOptions:
    horizon_weeks: int = 52
    annual_discount: float = 0.10
    model: str = "bgnbd"  # the purchase model behind expected_transactions, p_alive, clv
    interval_level: float | None = None  # e.g. 90: INTERVAL_COLUMNS from a bootstrap
    interval_draws: int = 100


def _check_tier_names(df: pl.DataFrame, col: str, names: list[str]) -> None:
    if col not in df.columns:
        return
    bad = df.filter(pl.col(col).is_not_null() & ~pl.col(col).is_in(names))[col].unique()
    if bad.len():
        raise ValueError(
            f"{col} holds unknown tier(s) {bad.head(5).to_list()}; known tiers: {names}"
        )


# unique (x, t_x, T) rows and how many customers share each: the purchase models' data
FitRows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def add_clv(
    df: pl.DataFrame,
    summary: pl.DataFrame,
    opts: ClvOptions,
    fit_rows: FitRows | None = None,
) -> tuple[pl.DataFrame, dict[str, object]]:
    """Fit the purchase model (``opts.model``: BG/NBD or Pareto/NBD) + Gamma-Gamma on the
    customers' ``summary`` (``clv_data.calibration_summary`` up to the as-of day) and score
    every customer. ``fit_rows`` (compressed elsewhere, e.g. by Spark) replaces the
    compression of the summary for the purchase-model fit."""
    if opts.model not in CLV_MODELS:
        raise ValueError(f"CLV model must be one of {', '.join(CLV_MODELS)}, got {opts.model!r}")
    joined = df.select("customer_id").join(summary, on="customer_id", how="left")
    x = joined["x"].fill_null(0).to_numpy()
    t_x = joined["t_x"].fill_null(0).to_numpy()
    T = joined["T"].fill_null(0).to_numpy()
    m = joined["monetary"].to_numpy().astype(np.float64)
    info: dict[str, object] = {}
    nan = np.full(df.height, np.nan)
    exp_tx = pa = spend = value = nan
    bounds: dict[str, np.ndarray] = {}
    try:
        if df.height < MIN_CLV_CUSTOMERS or int((x > 0).sum()) < 2:
            raise ValueError(
                f"need at least {MIN_CLV_CUSTOMERS} customers and 2 repeat buyers to fit "
                f"CLV models, got {df.height} and {int((x > 0).sum())}"
            )
        info["clv_model"] = opts.model
        fx, ft, fT, w = fit_rows if fit_rows is not None else (x, t_x, T, None)
        if opts.model == "pareto_nbd":
            bg: clv.BGNBD | clv_pareto.ParetoNBD = clv_pareto.fit_pareto_nbd(fx, ft, fT, weights=w)
        else:
            bg = clv.fit_bgnbd(fx, ft, fT, weights=w)
        info[opts.model] = bg.as_dict()
        exp_tx = expected_purchases(bg, float(opts.horizon_weeks), x, t_x, T)
        pa = alive(bg, x, t_x, T)
        gg = clv.fit_gamma_gamma(x, m)
        info["gamma_gamma"] = gg.as_dict()
        spend = clv.expected_spend(gg, x, m)
        value = clv.discounted_clv(bg, gg, x, t_x, T, m, opts.horizon_weeks, opts.annual_discount)
        if opts.interval_level is not None:
            bounds = _intervals(x, t_x, T, m, opts)
            info["clv_intervals"] = {"level": opts.interval_level, "draws": opts.interval_draws}
    except ValueError as exc:  # too little history: features without CLV, said loudly
        log.warning("CLV models not fitted: %s", exc)
        info["clv_error"] = str(exc)
    out = df.with_columns(
        expected_transactions=pl.Series(exp_tx).fill_nan(None),
        p_alive=pl.Series(pa).fill_nan(None),
        expected_spend=pl.Series(spend).fill_nan(None),
        clv=pl.Series(value).fill_nan(None),
    ).with_columns(churn_risk=1.0 - pl.col("p_alive"))
    if opts.interval_level is not None:
        out = out.with_columns(
            pl.Series(c, bounds.get(c, nan)).fill_nan(None) for c in INTERVAL_COLUMNS
        )
    return out, info


def _intervals(
    x: np.ndarray, t_x: np.ndarray, T: np.ndarray, m: np.ndarray, opts: ClvOptions
) -> dict[str, np.ndarray]:
    """Each customer's bootstrap interval of expected purchases and CLV."""
    from features import clv_bootstrap

    assert opts.interval_level is not None
    draws = clv_bootstrap.bootstrap(x, t_x, T, m, opts.interval_draws, models=(opts.model,))
    return clv_bootstrap.customer_intervals(
        draws,
        opts.model,
        x,
        t_x,
        T,
        m,
        opts.horizon_weeks,
        opts.annual_discount,
        opts.interval_level,
    )


def fill_prices(events: pl.LazyFrame, catalog: pl.LazyFrame | None) -> pl.LazyFrame:
    """Unknown unit prices fall back to the catalog price (e.g. ratings data as purchases)."""
    if catalog is None or "price" not in catalog.collect_schema().names():
        return events
    if events.select(pl.col("unit_price").null_count()).collect().item() == 0:
        return events  # nothing to fill: skip the join
    prices = catalog.select("item_id", pl.col("price").cast(pl.Float64).alias("_price"))
    return (
        events.join(prices, on="item_id", how="left")
        .with_columns(unit_price=pl.coalesce("unit_price", "_price"))
        .drop("_price")
    )


def build_customers(
    events: pl.LazyFrame,
    as_of: datetime,
    rules: tiers.TierRules,
    catalog: pl.LazyFrame | None = None,
    people: pl.LazyFrame | None = None,
    previous: pl.LazyFrame | None = None,
    clv_opts: ClvOptions = ClvOptions(),
    index_weights: dict[str, float] | None = None,
) -> tuple[pl.DataFrame, dict[str, object]]:
    """The customer table and a small report (counts, fitted CLV parameters);
    ``index_weights`` replaces the loyalty index's default behavioural weights."""
    behaviour, summary = event_summaries(events, as_of, rules, catalog)
    return customer_table(
        behaviour, summary.collect(), as_of, rules, people, previous, clv_opts, index_weights
    )


def event_summaries(
    events: pl.LazyFrame,
    as_of: datetime,
    rules: tiers.TierRules,
    catalog: pl.LazyFrame | None = None,
) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """The two per-customer reductions of the event log, the only steps that grow with the
    events: ``rfm.behaviour`` and the CLV summary (``clv_data.calibration_summary``).
    ``features/spark_features.py`` computes the same two tables on Spark."""
    events = fill_prices(events, catalog)
    behaviour = rfm.behaviour(events, as_of, catalog, rules.window_days)
    daily = clv_data.daily_transactions(events.filter(pl.col("ts") <= as_of))
    return behaviour, clv_data.calibration_summary(daily, as_of.date())


def customer_table(
    behaviour: pl.LazyFrame,
    summary: pl.DataFrame,
    as_of: datetime,
    rules: tiers.TierRules,
    people: pl.LazyFrame | None = None,
    previous: pl.LazyFrame | None = None,
    clv_opts: ClvOptions = ClvOptions(),
    index_weights: dict[str, float] | None = None,
    fit_rows: FitRows | None = None,
) -> tuple[pl.DataFrame, dict[str, object]]:
    """The customer table from the per-customer reductions (``event_summaries``): RFM
    scores, tiers, CLV, loyalty index, segments, consent (one row per customer)."""
    base = rfm.rfm_scores(behaviour)
    if people is not None:
        pcols = people.collect_schema().names()
        keep = [
            c for c in ("marketing_consent", "nps", "tier_floor", "previous_tier") if c in pcols
        ]
        base = base.join(people.select("customer_id", *keep), on="customer_id", how="left")
    if previous is not None:
        prev = previous.select(
            "customer_id",
            pl.col("tier").alias("previous_tier"),
            pl.col("tier_below_since").alias("previous_below_since"),
        )
        drop = [c for c in ("previous_tier",) if c in base.collect_schema().names()]
        base = base.drop(drop).join(prev, on="customer_id", how="left")
    df = base.collect().sort("customer_id")  # ordinal ranks below break ties by this order
    for col in ("tier_floor", "previous_tier"):
        _check_tier_names(df, col, rules.names)
    df = tiers.assign_tiers(df.lazy(), rules, as_of).collect()
    df, info = add_clv(df, summary, clv_opts, fit_rows)
    df = (
        loyalty.loyalty_index(df.lazy(), index_weights)
        .with_columns(clv_band=segments.clv_band())
        .with_columns(segment=segments.segment())
        .collect()
    )
    if "marketing_consent" not in df.columns:
        df = df.with_columns(marketing_consent=pl.lit(False))
    if "nps" not in df.columns:
        df = df.with_columns(nps=pl.lit(None, dtype=pl.Float64))
    df = df.with_columns(
        pl.col("marketing_consent").cast(pl.Boolean).fill_null(False),  # absent = no consent
        pl.col("nps").cast(pl.Float64),
    )
    df = df.select(*COLUMNS, *(c for c in INTERVAL_COLUMNS if c in df.columns))
    df = df.sort("customer_id")
    info.update(
        customers=df.height,
        tiers=dict(df.group_by("tier").len().iter_rows()),
        segments=dict(df.group_by("segment").len().iter_rows()),
    )
    return df, info
