"""The ``patron train`` job: events -> validation metrics -> final models -> bundle -> MLflow.

Validation metrics (what the promotion gate compares): a deterministic sample of up to
``eval_customers`` customers (smallest hash of customer_id) has its last 20% of purchases held
out; the models are fitted on every other event and scored on that holdout. The holdout's
fingerprint is logged so only versions evaluated on the same data are compared.

The shipped models: when the holdout is at most ``REUSE_MAX_SHARE`` (5%) of the purchases
(large data), the validated models are shipped as they are, after re-solving the sampled
customers' ALS factors with their full history (one exact ALS user step) and with the bundle's
purchase lists taken from all events, so training costs one ALS fit. On smaller data every
model is refitted on all events (cheap there).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from features.tiers import tier_names_beside
from training.als import ALSRecommender
from training.bundle_builder import build_bundle_data, write
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender
from training.engines import LocalEngine, TrainEngine
from training.evaluate import eval_data, evaluate_models
from training.popularity import PopularityRecommender, tiers_for

log = logging.getLogger(__name__)


def read_table(path: Path, what: str) -> pl.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file {path} not found")
    if path.suffix.lower() == ".csv":
        return pl.read_csv(path, infer_schema_length=10000)
    try:
        return pl.read_parquet(path)
    except Exception as exc:
        raise ValueError(f"{path}: cannot read {what} as Parquet ({exc})") from None


@dataclass
class TrainResult:
    bundle: Path
    metrics: dict[str, float]
    params: dict[str, Any]
    tags: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)


@contextmanager
def _stage(progress: Progress, timings: dict[str, float], name: str) -> Iterator[None]:
    task = progress.add_task(name, total=1)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 3)
    progress.update(task, completed=1)


REUSE_MAX_SHARE = 0.05


def train(
    events: pl.DataFrame | TrainEngine,
    *,
    out_dir: Path,
    config: TrainConfig | None = None,
    catalog: pl.DataFrame | None = None,
    customers: pl.DataFrame | None = None,
    tiers: tuple[str, ...] | None = None,
    model_name: str = "patron-recommender",
    eval_customers: int = 10_000,
    evaluate: bool = True,
    with_faiss: bool = True,
    k: int = 10,
    candidate_depth: int = 64,
    extra_params: dict[str, Any] | None = None,
) -> TrainResult:
    """Run the whole offline pipeline and write the bundle to ``out_dir``."""
    config = config or TrainConfig()
    tier_names = tiers or tier_names_beside(None)
    engine = events if not isinstance(events, pl.DataFrame) else LocalEngine(events)
    timings: dict[str, float] = {}
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    with progress:
        with _stage(progress, timings, "fingerprint"):
            fingerprint = engine.fingerprint()
        with _stage(progress, timings, "interactions"):
            item_order = None
            if catalog is not None and "item_id" in catalog.columns:
                item_order = catalog["item_id"].cast(pl.String).to_numpy()
            inter = engine.interactions(config, item_ids=item_order)
            user_tiers = tiers_for(inter.customer_ids, customers, tier_names)
        final: dict[str, Any] | None = None
        if evaluate:
            with _stage(progress, timings, "validation"):
                test = engine.holdout(eval_customers)
                rest = engine.interactions(
                    config, item_ids=inter.item_ids, customer_ids=inter.customer_ids, without=test
                )
                data = eval_data(rest, test, customers=customers, tiers=tier_names)
                if len(data.users) == 0:
                    raise ValueError(
                        "no customer has purchases left to hold out; the data are too small "
                        "to validate (use --no-eval)"
                    )
                share = test.height / max(inter.counts["events"], 1)
                reuse = share <= REUSE_MAX_SHARE
                models = engine.fit(data.inter, config, data.user_tiers, tier_names, without=test)
                report = evaluate_models(models, data, k)
                for name, vals in report.items():
                    prefix = "val" if name == "served" else f"val_{name}"
                    for m, v in vals.items():
                        metrics[f"{prefix}_{m}"] = v
                tags["eval_fingerprint"] = data.fingerprint
                metrics["val_holdout_share"] = share
            if reuse:
                with _stage(progress, timings, "refresh held-out customers"):
                    als = models["als"]
                    assert isinstance(als, ALSRecommender)
                    held_users = np.unique(data.users)
                    als.refresh_users(held_users, inter.matrix)
                    final = models
                tags["final_fit"] = "validated models, held-out customers refreshed"
            else:
                tags["final_fit"] = "refit on all events"
        if final is None:
            with _stage(progress, timings, "models"):
                final = engine.fit(inter, config, user_tiers, tier_names)
        als_m, cp_m, pop_m = final["als"], final["copurchase"], final["popular"]
        assert isinstance(als_m, ALSRecommender)
        assert isinstance(cp_m, CoPurchaseRecommender)
        assert isinstance(pop_m, PopularityRecommender)
        with _stage(progress, timings, "bundle"):
            bundle = build_bundle_data(
                inter,
                als_m,
                cp_m,
                pop_m,
                config,
                catalog=catalog,
                model_name=model_name,
                data_fingerprint=fingerprint,
                metrics=metrics,
                extra_params={"eval_customers": eval_customers, **(extra_params or {})},
            )
            write(bundle, out_dir, with_faiss=with_faiss, candidate_depth=candidate_depth)
    tags.update(
        {
            "data_fingerprint": fingerprint,
            "trained_at": datetime.now(UTC).isoformat(),
            "copurchase_source": cp_m.source_used,
            "engine": engine.name,
        }
    )
    params = {
        **config.flat(),
        "eval_customers": eval_customers,
        **inter.counts,
        **(extra_params or {}),
    }
    return TrainResult(bundle=out_dir, metrics=metrics, params=params, tags=tags, timings=timings)
