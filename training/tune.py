"""Hyperparameter search on validation splits carved out of the training part only.

Stages (small grids; every trial is returned and optionally logged to MLflow as a nested run):
1. co-purchase weighting (EASE lambda), 2. ALS (factors, regularisation, alpha, confidence
weighting), 3. blend weights of the scoring library the API serves with (patron/scoring), over the
chosen models. Each trial's
metrics are averaged over several validation folds (different split seeds) to damp noise. The
test part is never touched here; check the chosen config afterwards with ``patron evaluate``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from patron.scoring import recommend as score_top_k
from training.als import ALSParams, ALSRecommender
from training.config import TrainConfig
from training.copurchase import CoPurchaseParams, CoPurchaseRecommender
from training.evaluate import EvalData
from training.metrics import ranking_metrics
from training.popularity import PopularityRecommender
from training.served import ServedRecommender

log = logging.getLogger(__name__)

Trial = dict[str, Any]
TrialLogger = Callable[[Trial], None]

GRID: dict[str, list[Any]] = {
    "ease_lambda": [250.0, 400.0, 600.0, 900.0, 1300.0],
    "als_factors": [8, 16, 32, 64],
    "als_regularization": [1.0, 5.0],
    "als_alpha": [1.0, 3.0, 10.0],
    "als_weighting": ["log", "bm25"],
    "blend_als": [0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
    "blend_popular": [0.0, 0.02, 0.05, 0.1],
}


def _fit_cp(p: CoPurchaseParams, fold: EvalData) -> CoPurchaseRecommender:
    return CoPurchaseRecommender(p).fit(fold.inter.binary())


def _fit_als(p: ALSParams, fold: EvalData) -> ALSRecommender:
    return ALSRecommender(p).fit(fold.inter.matrix)


def _mean(ms: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.mean([m[key] for m in ms])) for key in ms[0]}


def tune(
    folds: Sequence[EvalData],
    base: TrainConfig | None = None,
    grid: dict[str, list[Any]] | None = None,
    k: int = 10,
    log_trial: TrialLogger | None = None,
) -> tuple[TrainConfig, list[Trial]]:
    """Best config by mean validation nDCG@k over ``folds``, and every trial."""
    if not folds:
        raise ValueError("tune needs at least one validation fold")
    base = base or TrainConfig()
    g = {**GRID, **(grid or {})}
    trials: list[Trial] = []
    metric = f"ndcg@{k}"

    def record(stage: str, params: dict[str, Any], metrics: dict[str, float]) -> float:
        trial = {"stage": stage, "params": params, "metrics": metrics}
        trials.append(trial)
        if log_trial is not None:
            log_trial(trial)
        log.info("%s %s -> %s %.4f", stage, params, metric, metrics[metric])
        return metrics[metric]

    def run_model(make: Callable[[EvalData], Any]) -> dict[str, float]:
        out = []
        for fold in folds:
            model = make(fold)
            ids, _ = model.recommend(fold.users, fold.inter.binary(), n=k)
            out.append(ranking_metrics(ids, fold.truth[fold.users], k))
        return _mean(out)

    # 1. co-purchase
    best_cp: tuple[float, CoPurchaseParams] = (-1.0, base.copurchase)
    for lam in g["ease_lambda"]:
        cp_params = replace(base.copurchase, ease_lambda=float(lam))
        m = run_model(partial(_fit_cp, cp_params))
        method = CoPurchaseRecommender(cp_params).resolve_method(folds[0].inter.shape[1])
        score = record("copurchase", {"method": method, "ease_lambda": lam}, m)
        if score > best_cp[0]:
            best_cp = (score, cp_params)
        if method != "ease":
            break  # lambda is irrelevant for the sparse weighting
    # 2. ALS
    best_als: tuple[float, ALSParams] = (-1.0, base.als)
    for f, reg, alpha, weighting in itertools.product(
        g["als_factors"], g["als_regularization"], g["als_alpha"], g["als_weighting"]
    ):
        p = replace(base.als, factors=int(f), regularization=float(reg), alpha=float(alpha))
        p.weighting = weighting
        m = run_model(partial(_fit_als, p))
        params = {"factors": f, "regularization": reg, "alpha": alpha, "weighting": weighting}
        score = record("als", params, m)
        if score > best_als[0]:
            best_als = (score, p)
    # 3. blend weights: the scoring library the API serves with, over the chosen models
    served = []
    for fold in folds:
        x = fold.inter.binary()
        als = ALSRecommender(best_als[1]).fit(fold.inter.matrix)
        cp = CoPurchaseRecommender(best_cp[1]).fit(x)
        pop = PopularityRecommender(fold.user_tiers).fit(x)
        config = replace(base, als=best_als[1], copurchase=best_cp[1])
        served.append(ServedRecommender(fold.inter, als, cp, pop, config).scoring)
    best_w: tuple[float, dict[str, float]] = (-1.0, dict(base.blend))
    for w_als, w_pop in itertools.product(g["blend_als"], g["blend_popular"]):
        weights = {"als": float(w_als), "copurchase": 1.0, "popular": float(w_pop)}
        ms = []
        for fold, model in zip(folds, served, strict=True):
            ids, _ = score_top_k(model.with_weights(weights), fold.users, k)
            ms.append(ranking_metrics(ids, fold.truth[fold.users], k))
        score = record("blend", weights, _mean(ms))
        if score > best_w[0]:
            best_w = (score, weights)
    chosen = TrainConfig(
        als=best_als[1],
        copurchase=best_cp[1],
        blend=best_w[1],
        half_life_days=base.half_life_days,
        log_scale=base.log_scale,
    )
    return chosen, trials


def mlflow_trial_logger(experiment: str, tracking_uri: str, parent_name: str) -> TrialLogger:
    """Log each trial as a nested MLflow run under one parent run named ``parent_name``."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    parent = mlflow.start_run(run_name=parent_name)
    parent_id = parent.info.run_id

    def log_trial(trial: Trial) -> None:
        with mlflow.start_run(run_name=trial["stage"], nested=True, parent_run_id=parent_id):
            mlflow.log_params({f"{trial['stage']}.{k}": v for k, v in trial["params"].items()})
            mlflow.log_metrics({k.replace("@", "_at_"): v for k, v in trial["metrics"].items()})

    return log_trial


def best_of(trials: list[Trial], stage: str, metric: str = "ndcg@10") -> Trial:
    """The best trial of a stage (for reports)."""
    stage_trials = [t for t in trials if t["stage"] == stage]
    return max(stage_trials, key=lambda t: float(t["metrics"][metric]))


__all__ = ["GRID", "best_of", "mlflow_trial_logger", "tune"]
