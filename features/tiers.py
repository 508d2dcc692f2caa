"""Loyalty tier assignment from config/tiers.yaml (validated), vectorised with polars.

Rules (docs/loyalty.md "Tiers"):
- metric = rolling spend over ``window_days`` (basis spend) or that spend times the earn rate
  of the tier the customer held before (basis points; bronze rate for new customers);
- qualified tier = highest tier whose threshold <= metric;
- no previous tier, or qualified >= previous: tier = qualified (upgrades are immediate);
- below the previous tier: keep it during ``grace_days`` counted from ``tier_below_since``
  (the day the customer first fell below it); after the grace period ``one_tier`` drops one
  tier (never below the qualified one) and starts a new grace period if still below,
  ``reevaluate`` drops straight to the qualified tier;
- a manual floor (``tier_floor``) is applied last: tier = max(tier, floor).
The rule is monotone: with everything else equal, more spend never gives a lower tier.
"""

from __future__ import annotations

import itertools
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Literal

import polars as pl
import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator


class Tier(BaseModel):
    name: str = Field(min_length=1)
    threshold: float = Field(ge=0)
    earn_rate: float = Field(default=1.0, gt=0)


class TierRules(BaseModel):
    basis: Literal["spend", "points"] = "spend"
    window_days: int = Field(default=365, gt=0)
    grace_days: int = Field(default=90, ge=0)
    downgrade: Literal["one_tier", "reevaluate"] = "one_tier"
    tiers: list[Tier]

    @model_validator(mode="after")
    def _ordered(self) -> TierRules:
        if not self.tiers:
            raise ValueError("at least one tier is required")
        names = [t.name for t in self.tiers]
        if len(set(names)) != len(names):
            raise ValueError(f"tier names must be unique, got {names}")
        th = [t.threshold for t in self.tiers]
        if th[0] != 0:
            raise ValueError("the first (lowest) tier must have threshold 0")
        if any(b <= a for a, b in itertools.pairwise(th)):
            raise ValueError(f"tier thresholds must increase strictly, got {th}")
        return self

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.tiers]


DEFAULT_RULES = TierRules(
    tiers=[
        Tier(name="bronze", threshold=0, earn_rate=1.0),
        Tier(name="silver", threshold=250, earn_rate=1.25),
        Tier(name="gold", threshold=750, earn_rate=1.5),
        Tier(name="platinum", threshold=2000, earn_rate=2.0),
    ]
)


TIERS_FILE = "tiers.json"  # beside customers.parquet: the tier names the features were built with


def write_tier_names(out_dir: Path, rules: TierRules) -> None:
    """Record the tier scheme (names, lowest first) beside the features it produced."""
    names = [t.name for t in rules.tiers]
    (Path(out_dir) / TIERS_FILE).write_text(json.dumps({"tiers": names}) + "\n")


def tier_names_beside(customers_file: Path | None) -> tuple[str, ...]:
    """The tier names recorded beside a customers file by ``patron features build``; the
    built-in tier rules' (config/tiers.yaml) when there is no record."""
    if customers_file is not None:
        path = Path(customers_file).parent / TIERS_FILE
        if path.is_file():
            try:
                names = json.loads(path.read_text())["tiers"]
            except (ValueError, KeyError, TypeError) as exc:
                raise ValueError(f"{path}: not a tier record ({exc})") from None
            if not names or not all(isinstance(n, str) and n for n in names):
                raise ValueError(f"{path}: 'tiers' must be a non-empty list of names")
            return tuple(names)
    return tuple(t.name for t in DEFAULT_RULES.tiers)


def load_rules(path: Path | None) -> TierRules:
    """Read and validate a tiers YAML file; a clear ValueError says what is wrong."""
    if path is None:
        return DEFAULT_RULES
    if not path.is_file():
        raise ValueError(f"tier rules file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text())
        return TierRules.model_validate(raw)
    except (yaml.YAMLError, ValidationError) as exc:
        msg = str(exc).replace("\n", "; ")
        raise ValueError(f"invalid tier rules in {path}: {msg}") from None


def _rank_of(col: str, names: list[str]) -> pl.Expr:
    return pl.col(col).replace_strict(
        {n: i for i, n in enumerate(names)}, default=None, return_dtype=pl.Int32
    )


def assign_tiers(df: pl.LazyFrame, rules: TierRules, as_of: datetime) -> pl.LazyFrame:
    """Add tier, tier_below_since, next_tier, progress_to_next (spend still needed).

    Input columns: spend_12m (rolling spend over the window), optional previous_tier,
    previous_below_since (date) and tier_floor (null = none).
    """
    names = rules.names
    cols = df.collect_schema().names()
    top = len(names) - 1
    lf = df.with_columns(
        *(
            pl.lit(None, dtype=dt).alias(c)
            for c, dt in (
                ("previous_tier", pl.String),
                ("previous_below_since", pl.Date),
                ("tier_floor", pl.String),
            )
            if c not in cols
        )
    )
    prev = _rank_of("previous_tier", names)
    floor = _rank_of("tier_floor", names)
    rate = pl.lit(1.0)
    if rules.basis == "points":
        rates = {t.name: t.earn_rate for t in rules.tiers}
        rate = (
            pl.col("previous_tier")
            .replace_strict(rates, default=rules.tiers[0].earn_rate, return_dtype=pl.Float64)
            .fill_null(rules.tiers[0].earn_rate)
        )
    metric = pl.col("spend_12m").fill_null(0.0) * rate
    qualified = pl.lit(0, dtype=pl.Int32)
    for i, t in enumerate(rules.tiers[1:], 1):
        qualified = (
            pl.when(metric >= t.threshold).then(pl.lit(i, dtype=pl.Int32)).otherwise(qualified)
        )
    day = as_of.date()
    since = pl.col("previous_below_since").fill_null(pl.lit(day))
    in_grace = (pl.lit(day) - since).dt.total_days() < rules.grace_days
    if rules.downgrade == "one_tier":
        after_grace = pl.max_horizontal(pl.col("_q"), pl.col("_p") - 1)
    else:
        after_grace = pl.col("_q")
    lf = lf.with_columns(_q=qualified, _p=prev, _f=floor, _m=metric, _rate=rate).with_columns(
        _t=pl.when(pl.col("_p").is_null() | (pl.col("_q") >= pl.col("_p")))
        .then(pl.col("_q"))
        .when(in_grace)
        .then(pl.col("_p"))
        .otherwise(after_grace)
    )
    lf = lf.with_columns(
        tier_below_since=pl.when(pl.col("_q") >= pl.col("_t"))
        .then(pl.lit(None, dtype=pl.Date))
        .when(pl.col("_t") == pl.col("_p"))
        .then(since)  # still in grace (or grace continues from the same day)
        .otherwise(pl.lit(day)),  # dropped one tier and still below: a new grace period
        _t=pl.max_horizontal(pl.col("_t"), pl.col("_f").fill_null(0)),
    )
    thresholds = pl.Series([t.threshold for t in rules.tiers] + [None], dtype=pl.Float64)
    nxt = pl.col("_t") + 1
    lf = lf.with_columns(
        tier=pl.col("_t").replace_strict(dict(enumerate(names)), return_dtype=pl.String),
        tier_rank=pl.col("_t").cast(pl.Int8),
        next_tier=pl.when(pl.col("_t") < top)
        .then(nxt.replace_strict(dict(enumerate(names)), default=None, return_dtype=pl.String))
        .otherwise(None),
        progress_to_next=pl.when(pl.col("_t") < top)
        .then(
            pl.max_horizontal(
                nxt.replace_strict(
                    dict(enumerate(thresholds.to_list())), default=None, return_dtype=pl.Float64
                )
                - pl.col("_m"),
                pl.lit(0.0),
            )
            / pl.col("_rate")
        )
        .otherwise(None),
    )
    return lf.drop("_q", "_p", "_f", "_m", "_t", "_rate")


def window_start(as_of: datetime, rules: TierRules) -> datetime:
    return as_of - timedelta(days=rules.window_days)
