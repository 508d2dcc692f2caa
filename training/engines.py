"""Where ``patron train`` reads its events and fits its models: the ``TrainEngine`` contract.

The pipeline (training/pipeline.py) is one: fingerprint, interactions, holdout, validation,
final models, bundle. An engine supplies the steps that touch the event log or fit a model:

- ``LocalEngine`` (default): polars over events in memory, implicit ALS, the co-purchase
  model in-process;
- ``SparkEngine`` (training/spark_engine.py, ``--engine spark``): Spark SQL over the event log,
  MLlib ALS and the co-purchase co-occurrence counts on the executors.

Both return the same types (``Interactions``, fitted ``ALSRecommender`` /
``CoPurchaseRecommender`` / ``PopularityRecommender`` and the ``served`` scoring library over
them), so everything after the fit (evaluation, bundle, MLflow) cannot tell them apart.
"""

from __future__ import annotations

import hashlib
import json
from typing import Protocol

import numpy as np
import polars as pl

from training.config import TrainConfig
from training.evaluate import fit_models
from training.interactions import Interactions, baskets_matrix, build_interactions
from training.recommender import Recommender
from training.splits import temporal_split

HOLDOUT_KEY = ["customer_id", "item_id", "ts"]


class TrainEngine(Protocol):
    name: str

    def fingerprint(self) -> str:
        """sha256 of a content summary of the events (logged; identifies the data)."""
        ...

    def interactions(
        self,
        config: TrainConfig,
        item_ids: np.ndarray | None = None,
        customer_ids: np.ndarray | None = None,
        without: pl.DataFrame | None = None,
    ) -> Interactions:
        """The confidence matrix of every event except the ``without`` rows (HOLDOUT_KEY)."""
        ...

    def holdout(self, eval_customers: int, test_fraction: float = 0.2) -> pl.DataFrame:
        """The held-out purchases (HOLDOUT_KEY columns) of a deterministic customer sample:
        the last ``test_fraction`` of each sampled customer's purchases."""
        ...

    def fit(
        self,
        inter: Interactions,
        config: TrainConfig,
        user_tiers: np.ndarray | None,
        tiers: tuple[str, ...],
        without: pl.DataFrame | None = None,
    ) -> dict[str, Recommender]:
        """ALS, co-purchase (from the baskets of the events except ``without``), popularity
        and ``served``, all on ``inter``'s index order."""
        ...


def check_events(events: pl.DataFrame) -> pl.DataFrame:
    """Boundary check: the EVENTS columns training needs, with usable types."""
    missing = [c for c in ("customer_id", "item_id") if c not in events.columns]
    if missing:
        raise ValueError(
            f"events lack {', '.join(missing)}; expected the EVENTS schema "
            "(features/schemas.py), e.g. the output of `patron data validate`"
        )
    if events.filter(pl.col("item_id").is_not_null()).height == 0:
        raise ValueError("events contain no item_id values; nothing to recommend from")
    out = events.with_columns(
        pl.col("customer_id").cast(pl.String), pl.col("item_id").cast(pl.String)
    )
    if "ts" not in out.columns:
        out = out.with_columns(pl.lit(0).alias("ts"))
    return out


def data_fingerprint(events: pl.DataFrame) -> str:
    """sha256 of a content summary (row count, id counts, time range, quantities, row hashes)."""
    cols = [c for c in ("customer_id", "item_id", "ts", "quantity") if c in events.columns]
    summary = {
        "rows": events.height,
        "customers": events["customer_id"].n_unique(),
        "items": events["item_id"].n_unique(),
        "ts_min": str(events["ts"].min()),
        "ts_max": str(events["ts"].max()),
        "quantity_sum": float(events["quantity"].sum()) if "quantity" in events.columns else None,
        "rows_hash": int(events.select(cols).hash_rows(seed=0).sum() or 0) % (1 << 64),
    }
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()


def holdout(
    events: pl.DataFrame, eval_customers: int, test_fraction: float = 0.2
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(every event except the held-out ones, held-out purchases of a customer sample)."""
    purchases = events.filter(pl.col("item_id").is_not_null())
    if "quantity" in purchases.columns:
        purchases = purchases.filter(pl.col("quantity").fill_null(1.0) > 0)
    sample = (
        purchases.select("customer_id")
        .unique()
        .with_columns(pl.col("customer_id").hash(seed=7).alias("_h"))
        .sort("_h", "customer_id")
        .head(eval_customers)
        .select("customer_id")
    )
    sampled = purchases.join(sample, on="customer_id")
    _, test = temporal_split(sampled, test_fraction=test_fraction)
    rest = events.join(
        test.select(HOLDOUT_KEY).unique(), on=HOLDOUT_KEY, how="anti", nulls_equal=True
    )
    return rest, test


class LocalEngine:
    """Events in memory (polars), models fitted in this process."""

    name = "local"

    def __init__(self, events: pl.DataFrame) -> None:
        self.events = check_events(events)
        self._rest: tuple[pl.DataFrame | None, pl.DataFrame] | None = None

    def rest(self, without: pl.DataFrame | None) -> pl.DataFrame:
        if without is None:
            return self.events
        if self._rest is None or self._rest[0] is not without:
            keys = without.select(HOLDOUT_KEY).unique()
            self._rest = (
                without,
                self.events.join(keys, on=HOLDOUT_KEY, how="anti", nulls_equal=True),
            )
        return self._rest[1]

    def fingerprint(self) -> str:
        return data_fingerprint(self.events)

    def interactions(
        self,
        config: TrainConfig,
        item_ids: np.ndarray | None = None,
        customer_ids: np.ndarray | None = None,
        without: pl.DataFrame | None = None,
    ) -> Interactions:
        return build_interactions(
            self.rest(without),
            item_ids=item_ids,
            customer_ids=customer_ids,
            half_life_days=config.half_life_days,
            log_scale=config.log_scale,
        )

    def holdout(self, eval_customers: int, test_fraction: float = 0.2) -> pl.DataFrame:
        return holdout(self.events, eval_customers, test_fraction)[1]

    def fit(
        self,
        inter: Interactions,
        config: TrainConfig,
        user_tiers: np.ndarray | None,
        tiers: tuple[str, ...],
        without: pl.DataFrame | None = None,
    ) -> dict[str, Recommender]:
        baskets = baskets_matrix(self.rest(without), inter.item_ids)
        return fit_models(inter, config, user_tiers, baskets=baskets, tiers=tiers)
