"""The ``patron train`` job: events -> validation metrics -> final models -> bundle -> MLflow.

Validation metrics (what the promotion gate compares) come from refitting the same config on
a holdout carved from the given events: a deterministic sample of up to ``eval_customers``
customers (smallest hash of customer_id), each with their last 20% of purchases held out,
trained on the sampled customers' remaining purchases. On data of up to that many customers
this is the full temporal protocol; on millions of customers it keeps the extra fit small. The
holdout's fingerprint is logged so only versions evaluated on the same data are compared.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from training.bundle_builder import build_bundle_data, write
from training.config import TrainConfig
from training.evaluate import evaluate_models, fit_models, prepare
from training.interactions import baskets_matrix, build_interactions
from training.popularity import tiers_for
from training.splits import temporal_split

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
    """Deterministic customer sample, each customer's last purchases held out."""
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
    return temporal_split(purchases.join(sample, on="customer_id"), test_fraction=test_fraction)


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


def train(
    events: pl.DataFrame,
    *,
    out_dir: Path,
    config: TrainConfig | None = None,
    catalog: pl.DataFrame | None = None,
    customers: pl.DataFrame | None = None,
    model_name: str = "patron-recommender",
    eval_customers: int = 10_000,
    evaluate: bool = True,
    with_faiss: bool = True,
    k: int = 10,
) -> TrainResult:
    """Run the whole offline pipeline and write the bundle to ``out_dir``."""
    config = config or TrainConfig()
    events = check_events(events)
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
            fingerprint = data_fingerprint(events)
        if evaluate:
            with _stage(progress, timings, "validation"):
                tr, te = holdout(events, eval_customers)
                data = prepare(tr, te, config=config, customers=customers)
                if len(data.users) == 0:
                    raise ValueError(
                        "no customer has purchases left to hold out; the data are too small "
                        "to validate (use --no-eval)"
                    )
                models = fit_models(data.inter, config, data.user_tiers)
                report = evaluate_models(models, data, k)
                for name, vals in report.items():
                    prefix = "val" if name == "blend" else f"val_{name}"
                    for m, v in vals.items():
                        metrics[f"{prefix}_{m}"] = v
                tags["eval_fingerprint"] = data.fingerprint
        with _stage(progress, timings, "interactions"):
            item_order = None
            if catalog is not None and "item_id" in catalog.columns:
                item_order = catalog["item_id"].cast(pl.String).to_numpy()
            inter = build_interactions(
                events,
                item_ids=item_order,
                half_life_days=config.half_life_days,
                log_scale=config.log_scale,
            )
            baskets = baskets_matrix(events, inter.item_ids)
            user_tiers = tiers_for(inter.customer_ids, customers)
        with _stage(progress, timings, "models"):
            final = fit_models(inter, config, user_tiers, baskets=baskets, show_progress=False)
        with _stage(progress, timings, "bundle"):
            bundle = build_bundle_data(
                inter,
                final["als"],  # type: ignore[arg-type]
                final["copurchase"],  # type: ignore[arg-type]
                final["popular"],  # type: ignore[arg-type]
                config,
                catalog=catalog,
                model_name=model_name,
                data_fingerprint=fingerprint,
                metrics=metrics,
                extra_params={"eval_customers": eval_customers},
            )
            write(bundle, out_dir, with_faiss=with_faiss)
    tags.update(
        {
            "data_fingerprint": fingerprint,
            "trained_at": datetime.now(UTC).isoformat(),
            "copurchase_source": "orders" if baskets is not None else "customers",
        }
    )
    params = {**config.flat(), "eval_customers": eval_customers, **inter.counts}
    return TrainResult(bundle=out_dir, metrics=metrics, params=params, tags=tags, timings=timings)
