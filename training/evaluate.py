"""Offline evaluation: fit every model on a train part, rank top-k, score on the held-out part.

Models reported side by side: ``als``, ``copurchase``, ``popular`` and ``served`` (the scoring
library the API serves with, over those models; rules off).
Rules shared by both protocols:

- rank over items seen in training, excluding each customer's training items;
- evaluated customers are those with a training row and at least one held-out item they did
  not already buy in training (re-purchases cannot be recommended, so they are not counted);
- metrics are training/metrics.py (Microsoft Recommenders definitions), plus catalog coverage
  and, when customer tiers are known, nDCG@k per tier.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy import sparse

from training.als import ALSRecommender
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender
from training.interactions import Interactions, baskets_matrix, build_interactions
from training.metrics import catalog_coverage, hit_matrix, per_user_metrics, ranking_metrics
from training.popularity import PopularityRecommender, tiers_for
from training.recommender import Recommender
from training.served import ServedRecommender, ServedWithRules
from training.splits import stratified_split, temporal_split

log = logging.getLogger(__name__)

MODEL_ORDER = ("popular", "als", "copurchase", "served", "served_rules")


@dataclass
class EvalData:
    """A train part as interactions plus the held-out truth aligned to its rows and columns."""

    inter: Interactions
    truth: sparse.csr_matrix
    users: np.ndarray  # customers evaluated (row indices)
    user_tiers: np.ndarray | None
    fingerprint: str
    fit_rows: pl.DataFrame | None = None  # the train part's events, to rebuild ``inter``


def fingerprint_rows(rows: pl.DataFrame, cols: tuple[str, ...] = ("customer_id", "item_id")) -> str:
    """sha256 over the sorted (customer, item) pairs: identifies evaluation data."""
    keyed = rows.select([pl.col(c).cast(pl.String) for c in cols]).sort(list(cols))
    h = hashlib.sha256()
    h.update(str(keyed.height).encode())
    h.update(keyed.hash_rows(seed=0).to_numpy().tobytes())
    return h.hexdigest()


def prepare(
    train_rows: pl.DataFrame,
    test_rows: pl.DataFrame,
    *,
    config: TrainConfig | None = None,
    customers: pl.DataFrame | None = None,
    customer_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
    tiers: tuple[str, ...] | None = None,
) -> EvalData:
    """Interactions from ``train_rows``; truth = new (customer, item) pairs of ``test_rows``.

    ``customer_ids`` / ``item_ids`` fix the index order (e.g. to share it with a model trained
    on all events).
    """
    config = config or TrainConfig()
    inter = build_interactions(
        train_rows,
        customer_ids=customer_ids,
        item_ids=item_ids,
        half_life_days=config.half_life_days,
        log_scale=config.log_scale,
    )
    return eval_data(inter, test_rows, customers=customers, tiers=tiers)


def eval_data(
    inter: Interactions,
    test_rows: pl.DataFrame,
    *,
    customers: pl.DataFrame | None = None,
    tiers: tuple[str, ...] | None = None,
) -> EvalData:
    """The held-out truth of ``test_rows`` aligned to the train part's interactions."""
    held = (
        test_rows.select(pl.col("customer_id").cast(pl.String), pl.col("item_id").cast(pl.String))
        .unique()
        .join(inter.customer_index(), on="customer_id")
        .join(inter.item_index(), on="item_id")
    )
    truth = sparse.csr_matrix(
        (np.ones(held.height, np.float32), (held["u"].to_numpy(), held["i"].to_numpy())),
        shape=inter.shape,
    )
    truth = truth - truth.multiply(inter.binary())  # drop re-purchases
    truth.eliminate_zeros()
    users = np.flatnonzero(np.diff(truth.tocsr().indptr) > 0)
    return EvalData(
        inter=inter,
        truth=truth.tocsr(),
        users=users,
        user_tiers=tiers_for(inter.customer_ids, customers, *(() if tiers is None else (tiers,))),
        fingerprint=fingerprint_rows(test_rows),
    )


def fit_models(
    inter: Interactions,
    config: TrainConfig,
    user_tiers: np.ndarray | None = None,
    baskets: sparse.csr_matrix | None = None,
    show_progress: bool = False,
    tiers: tuple[str, ...] | None = None,
) -> dict[str, Recommender]:
    """Fit ALS, co-purchase and popularity once; ``served`` ranks by the scoring library over
    them (what the API serves, rules off)."""
    x = inter.matrix
    als = ALSRecommender(config.als, show_progress=show_progress).fit(x)
    cp = CoPurchaseRecommender(config.copurchase).fit(inter.binary(), baskets=baskets)
    pop = PopularityRecommender(user_tiers, *(() if tiers is None else (tiers,))).fit(
        inter.binary()
    )
    served = ServedRecommender(inter, als, cp, pop, config)
    return {"als": als, "copurchase": cp, "popular": pop, "served": served}  # type: ignore[dict-item]


def evaluate_models(
    models: dict[str, Recommender], data: EvalData, k: int = 10
) -> dict[str, dict[str, float]]:
    """Metrics per model on ``data`` (models must be fitted on ``data.inter``)."""
    x = data.inter.binary()
    truth_rows = data.truth[data.users]
    report: dict[str, dict[str, float]] = {}
    hits: dict[str, int] = {}
    for name in [m for m in MODEL_ORDER if m in models] + [
        m for m in models if m not in MODEL_ORDER
    ]:
        ids, _ = models[name].recommend(data.users, x, n=k, filter_already_bought=True)
        metrics = ranking_metrics(ids, truth_rows, k)
        metrics["coverage"] = catalog_coverage(ids, x.shape[1])
        if data.user_tiers is not None:
            per = per_user_metrics(ids, truth_rows, k)
            tiers = data.user_tiers[data.users]
            pop = models.get("popular")
            names = getattr(pop, "tiers", ())
            for t, tier in enumerate(names):
                mask = (tiers == t) & per["evaluated"]
                if mask.any():
                    metrics[f"ndcg@{k}.{tier}"] = float(per["ndcg"][mask].mean())
        report[name] = metrics
        hits[name] = int(hit_matrix(ids, truth_rows).sum())
    if "served_rules" in report and hits.get("served"):
        # what the business rules cost in held-out hits (tier gating, stock, diversity, ...)
        report["served_rules"]["hits_removed_share"] = 1.0 - hits["served_rules"] / hits["served"]
    return report


def ml100k_rows(data_dir: Path) -> pl.DataFrame:
    """ML-100K ratings in file order (the split depends on it): customer_id, item_id, rating, ts."""
    from features.adapters.ml100k import read_ml100k_ratings

    rows = read_ml100k_ratings(Path(data_dir) / "ml-100k")
    return rows.rename({"user_id": "customer_id", "timestamp": "ts"})


def ml100k_validation_folds(
    data_dir: Path,
    seed: int = 42,
    val_seeds: tuple[int, ...] = (43, 44, 45),
    val_ratio: float = 0.9,
) -> list[tuple[pl.DataFrame, pl.DataFrame]]:
    """Protocol-(a) train part split again the same way, once per validation seed.

    Only 10% of the train part is held out per fold so the fit part stays close to the size of
    the final training data (the best regularisation strength depends on it).
    """
    train, _ = stratified_split(ml100k_rows(data_dir), ratio=0.75, filter_by="item", seed=seed)
    return [stratified_split(train, ratio=val_ratio, filter_by="item", seed=s) for s in val_seeds]


def with_rules(models: dict[str, Recommender], rules_file: Path | None) -> dict[str, Recommender]:
    """Add ``served_rules``: the served model through the business rules (the default
    config/rules.yaml when ``rules_file`` is None), as the API answers."""
    served = models["served"]
    assert isinstance(served, ServedRecommender)
    return {**models, "served_rules": ServedWithRules(served, rules_file)}  # type: ignore[dict-item]


def protocol_ml100k(
    data_dir: Path,
    config: TrainConfig,
    seeds: tuple[int, ...] = (42,),
    k: int = 10,
    rules_file: Path | None = None,
) -> dict[str, Any]:
    """Protocol (a): Microsoft Recommenders ML-100K split, one report per split seed."""
    rows = ml100k_rows(data_dir)
    per_seed: dict[str, dict[str, dict[str, float]]] = {}
    for seed in seeds:
        train, test = stratified_split(rows, ratio=0.75, filter_by="item", seed=seed)
        data = prepare(train, test, config=config)
        models = with_rules(fit_models(data.inter, config), rules_file)
        per_seed[str(seed)] = evaluate_models(models, data, k)
        per_seed[str(seed)]["_split"] = {"train": train.height, "test": test.height}
        log.info(
            "seed %s: served ndcg@%d %.4f", seed, k, per_seed[str(seed)]["served"][f"ndcg@{k}"]
        )
    return {"protocol": "ml100k", "k": k, "seeds": per_seed, "spread": spread(per_seed)}


def spread(per_seed: dict[str, dict[str, dict[str, float]]]) -> dict[str, dict[str, Any]]:
    """Mean, std, min and max of every metric of every model over the seeds."""
    out: dict[str, dict[str, Any]] = {}
    seeds = list(per_seed)
    for model in per_seed[seeds[0]]:
        if model.startswith("_"):
            continue
        for metric in per_seed[seeds[0]][model]:
            vals = np.array([per_seed[s][model][metric] for s in seeds], dtype=np.float64)
            out.setdefault(model, {})[metric] = {
                "mean": float(vals.mean()),
                "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                "min": float(vals.min()),
                "max": float(vals.max()),
            }
    return out


def protocol_temporal(
    events: pl.DataFrame,
    config: TrainConfig,
    customers: pl.DataFrame | None = None,
    test_fraction: float = 0.2,
    k: int = 10,
    rules_file: Path | None = None,
) -> dict[str, Any]:
    """Protocol (b): each customer's last ``test_fraction`` of purchases is held out."""
    purchases = events.filter(pl.col("item_id").is_not_null())
    if "quantity" in purchases.columns:
        purchases = purchases.filter(pl.col("quantity").fill_null(1.0) > 0)
    train, test = temporal_split(purchases, test_fraction=test_fraction)
    data = prepare(train, test, config=config, customers=customers)
    baskets = baskets_matrix(train, data.inter.item_ids)
    models = with_rules(
        fit_models(data.inter, config, data.user_tiers, baskets=baskets), rules_file
    )
    report = evaluate_models(models, data, k)
    pop = report["popular"][f"ndcg@{k}"]
    return {
        "protocol": "temporal",
        "k": k,
        "test_fraction": test_fraction,
        "split": {"train": train.height, "test": test.height, "customers": len(data.users)},
        "models": report,
        "served_vs_popular_ndcg": report["served"][f"ndcg@{k}"] / pop if pop > 0 else None,
    }
