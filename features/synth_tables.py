"""Synthetic catalog and customers tables (``features.synth``).

The catalog has Zipf item popularity, skewed category sizes, log-normal prices per category,
launch dates and tier/premium/promo flags; ``Catalog`` also carries the arrays the event
generator (``features.synth_events``) draws from. Customers get Gamma-distributed purchase
rates, signup dates and survey answers correlated with their activity.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import numpy as np
import polars as pl

from features.schemas import CATALOG, CUSTOMERS, DEFAULT_TIERS
from features.synth_config import CATEGORIES, DAY, US, SynthConfig


@dataclass(frozen=True)
class Catalog:
    """Arrays the event generator needs (index = item number)."""

    df: pl.DataFrame
    category: np.ndarray  # int per item
    price: np.ndarray
    launch_s: np.ndarray  # launch time, epoch seconds
    cum_weight: np.ndarray  # cumulative popularity over items sorted by category
    order: np.ndarray  # item numbers sorted by category
    cat_lo: np.ndarray  # first position of each category in ``order``
    cat_hi: np.ndarray  # one past the last position
    cat_weight: np.ndarray  # total popularity of each category
    cycle_days: np.ndarray  # per category, 0 = not consumable


def _ids(prefix: str, n: int) -> pl.Series:
    width = len(str(max(n - 1, 0)))
    return pl.select(
        (pl.lit(prefix) + pl.int_range(n, eager=False).cast(pl.String).str.zfill(width)).alias("id")
    ).to_series()


def epoch(dt: datetime) -> int:
    return int(dt.timestamp())


def ts_series(name: str, seconds: np.ndarray) -> pl.Series:
    return (
        pl.Series(name, seconds.astype(np.int64) * US, dtype=pl.Int64)
        .cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC")
    )


def make_catalog(cfg: SynthConfig, rng: np.random.Generator) -> Catalog:
    """Items with Zipf popularity, category sizes, log-normal prices and flags."""
    n = cfg.items
    cats = CATEGORIES[: min(len(CATEGORIES), n)]
    k = len(cats)
    # category sizes: skewed shares, at least one item each
    share = 1.0 / np.arange(1, k + 1) ** 0.7
    share = rng.permutation(share / share.sum())
    sizes = 1 + rng.multinomial(n - k, share)
    category = rng.permutation(np.repeat(np.arange(k), sizes))
    weight = 1.0 / rng.permutation(np.arange(1, n + 1)).astype(np.float64) ** cfg.zipf_a
    medians = np.array([c[2] for c in cats])
    z = rng.standard_normal(n)
    price = np.round(np.clip(medians[category] * np.exp(0.5 * z), 0.49, None), 2)
    start_s, end_s = epoch(cfg.start), epoch(cfg.end)
    span = end_s - start_s
    new = rng.random(n) < 0.1  # 10% launch during the window, the rest in the 3 years before
    launch_s = np.where(
        new,
        start_s + rng.random(n) * max(span - 14 * DAY, DAY),
        start_s - rng.random(n) * 3 * 365 * DAY,
    ).astype(np.int64)
    premium = z > 1.2816  # the top ~10% price within each category
    exclusive = rng.random(n) < 0.05
    tiers = np.array(DEFAULT_TIERS[1:])
    tier = tiers[rng.choice(len(tiers), size=n, p=[0.5, 0.3, 0.2])]
    order = np.argsort(category, kind="stable")
    cum = np.cumsum(weight[order])
    cat_hi = np.cumsum(sizes)
    cat_lo = cat_hi - sizes
    cat_weight = np.bincount(category, weights=weight, minlength=k)
    df = pl.DataFrame(
        {
            "item_id": _ids("I", n),
            "category": np.array([c[0] for c in cats])[category],
            "price": price,
            "in_stock": rng.random(n) < 0.95,
            "min_tier": pl.Series(np.where(exclusive, tier, ""), dtype=pl.String).replace("", None),
            "premium": premium | exclusive,
            "on_promo": rng.random(n) < 0.1,
            "launched_at": ts_series("launched_at", launch_s),
            "margin": np.round(rng.uniform(0.1, 0.5, n), 3),
        }
    ).cast(CATALOG)  # type: ignore[arg-type]
    cycles = np.array([c[1] or 0 for c in cats], dtype=np.float64)
    return Catalog(df, category, price, launch_s, cum, order, cat_lo, cat_hi, cat_weight, cycles)


def make_customers(cfg: SynthConfig, rng: np.random.Generator) -> tuple[pl.DataFrame, np.ndarray]:
    """Customers table and their purchase rates (activity weights)."""
    n = cfg.customers
    rate = rng.gamma(cfg.activity_shape, 1.0, n)
    start_s, end_s = epoch(cfg.start), epoch(cfg.end)
    span = end_s - start_s
    # signed up up to two years before the window, at the latest 30 days before its end
    signup = (start_s - 2 * 365 * DAY + rng.random(n) * (2 * 365 * DAY + 0.95 * span)).astype(
        np.int64
    )
    signup = np.minimum(signup, end_s - 30 * DAY)
    z = (np.log(rate + 1e-9) - np.log(rate + 1e-9).mean()) / (np.log(rate + 1e-9).std() + 1e-9)
    nps = np.clip(np.round(7.0 + 1.2 * z + rng.normal(0, 1.8, n)), 0, 10)
    csat = np.clip(np.round(3.8 + 0.4 * z + rng.normal(0, 0.8, n)), 1, 5)
    df = pl.DataFrame(
        {
            "customer_id": _ids("C", n),
            "marketing_consent": rng.random(n) < cfg.consent_share,
            "nps": np.where(rng.random(n) < cfg.nps_share, nps, np.nan),
            "csat": np.where(rng.random(n) < cfg.csat_share, csat, np.nan),
            "signup_at": ts_series("signup_at", signup),
            "tier_floor": pl.Series([None] * n, dtype=pl.String),
        }
    ).with_columns(pl.col("nps", "csat").fill_nan(None))
    return df.cast(CUSTOMERS), rate  # type: ignore[arg-type]
