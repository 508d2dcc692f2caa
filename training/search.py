"""``patron tune``: hyperparameters chosen on validation folds carved from the training data,
scored by the scoring library the API serves with.

Folds (``validation_folds``), from the events given (the training part: the test part of
whatever protocol the retailer evaluates with is never seen):

- ``random``: stratified by item as the Microsoft protocol (each item's purchases ranked by a
  seeded random number, the top 90% fit, the rest validate), one fold per seed;
- ``temporal``: the last 20% of each customer's purchases (``temporal_split``), one fold;
- ``ml100k``: the shipped ML-100K protocol-(a) training part split again
  (``training.evaluate.ml100k_validation_folds``).

Search (Optuna, TPE sampler, seeded): ALS factors, regularisation, alpha and confidence
weighting; EASE lambda (catalogs up to ``dense_max_items``); blend weights of ALS and
popularity (item-item fixed at 1: only ratios matter). The first trial is the given config, so
the result is never worse than it on validation. Each trial is scored fold by fold and a median
pruner stops a trial whose running mean trails the median of earlier trials at the same fold
(successive halving over folds). ALS iterations stop early: every ``CHECK_EVERY`` iterations the
fold's ALS-alone nDCG is measured and the fit stops at the first check without a gain; the
chosen config keeps the iteration count where it peaked.

Objective: mean over folds of nDCG@k of ``ServedRecommender`` (``patron.scoring``: the API's
formula, rules off). ``budget_s`` bounds the search's wall time, also inside a trial (ALS
stops at its next iteration, later folds are pruned; the first trial always completes, its
fits stopped early, and a fit cut that way keeps the configured iteration count),
``max_trials`` its count. Each fold scores a seeded sample of at most ``MAX_USERS`` customers.

With the temporal protocol the confidence half-life (``half_life_days``: none, 30 .. 730 days)
is searched too: the folds keep their events and rebuild their interactions per half-life.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import polars as pl

from patron.scoring import recommend as score_top_k
from training.als import ALSParams, ALSRecommender
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender
from training.evaluate import EvalData, prepare
from training.metrics import ranking_metrics
from training.popularity import PopularityRecommender
from training.served import ServedRecommender
from training.splits import stratified_split, temporal_split

log = logging.getLogger(__name__)

PROTOCOLS = ("random", "temporal", "ml100k")
MAX_ITERATIONS = 30
CHECK_EVERY = 5
VALIDATION_SHARE = 0.1  # random folds: share of each item's purchases held out
MAX_USERS = 5_000  # customers scored per fold (a seeded sample on large data)

Trial = dict[str, Any]
TrialLogger = Callable[[Trial], None]


def validation_folds(
    events: pl.DataFrame,
    protocol: str,
    *,
    folds: int = 3,
    seed: int = 42,
    config: TrainConfig | None = None,
    max_users: int = MAX_USERS,
) -> list[EvalData]:
    """Validation folds from ``events`` (EVENTS columns; purchases only are used); each fold
    scores a seeded sample of at most ``max_users`` of its customers (every model is still
    fitted on the whole fit part)."""
    if protocol not in ("random", "temporal"):
        raise ValueError(
            f"protocol must be random or temporal for an events file, got {protocol!r}"
        )
    buys = events.filter(pl.col("item_id").is_not_null())
    if "quantity" in buys.columns:
        buys = buys.filter(pl.col("quantity").fill_null(1.0) > 0)
    if buys.height == 0:
        raise ValueError("the events hold no purchases with an item_id: nothing to tune on")
    if protocol == "temporal":
        parts = [temporal_split(buys)]
    else:
        parts = [
            stratified_split(buys, ratio=1 - VALIDATION_SHARE, filter_by="item", seed=seed + i)
            for i in range(max(folds, 1))
        ]
    out = [
        replace(sample_users(prepare(fit, val, config=config), max_users, seed), fit_rows=fit)
        for fit, val in parts
    ]
    if any(len(f.users) == 0 for f in out):
        raise ValueError(
            "a validation fold has no customer with a new held-out item; too little data"
        )
    return out


def sample_users(fold: EvalData, max_users: int, seed: int = 42) -> EvalData:
    """The fold with at most ``max_users`` of its evaluated customers (seeded, sorted)."""
    if len(fold.users) <= max_users:
        return fold
    rng = np.random.default_rng(seed)
    users = np.sort(rng.choice(fold.users, size=max_users, replace=False))
    return replace(fold, users=users)


@dataclass
class _FoldCache:
    """Fitted models of one fold, by their parameters (a trial reuses what it can)."""

    base: EvalData
    als: dict[tuple[Any, ...], tuple[ALSRecommender, int, bool]] = field(default_factory=dict)
    item: dict[tuple[Any, ...], CoPurchaseRecommender] = field(default_factory=dict)
    popular: PopularityRecommender | None = None
    decayed: dict[float | None, EvalData] = field(default_factory=dict)
    fold: EvalData = field(init=False)

    def __post_init__(self) -> None:
        self.fold = self.base

    def use_half_life(self, half_life: float | None, like: TrainConfig) -> None:
        """Switch to the fold whose confidence decays with ``half_life`` (days; None = no
        decay). The index order and the truth stay; the item-item model and popularity read
        the binary matrix, which decay does not change."""
        if half_life == like.half_life_days or self.base.fit_rows is None:
            self.fold = self.base
            return
        if half_life not in self.decayed:
            from training.interactions import build_interactions

            inter = build_interactions(
                self.base.fit_rows,
                customer_ids=self.base.inter.customer_ids,
                item_ids=self.base.inter.item_ids,
                half_life_days=half_life,
                log_scale=like.log_scale,
            )
            self.decayed[half_life] = replace(self.base, inter=inter)
        self.fold = self.decayed[half_life]

    def popularity(self) -> PopularityRecommender:
        if self.popular is None:
            self.popular = PopularityRecommender(self.fold.user_tiers).fit(self.fold.inter.binary())
        return self.popular

    def copurchase(self, config: TrainConfig) -> CoPurchaseRecommender:
        p = config.copurchase
        key = (p.method, p.ease_lambda, p.top_n)
        if key not in self.item:
            self.item[key] = CoPurchaseRecommender(p).fit(self.fold.inter.binary())
        return self.item[key]

    def fit_als(self, p: ALSParams, k: int, deadline: float) -> tuple[ALSRecommender, int, bool]:
        key = (p.factors, p.regularization, p.alpha, p.weighting, id(self.fold))
        if key not in self.als:
            self.als[key] = als_early_stopped(p, self.fold, k, deadline)
        return self.als[key]


class _Stop(Exception):
    pass


def als_early_stopped(
    p: ALSParams, fold: EvalData, k: int = 10, deadline: float = float("inf")
) -> tuple[ALSRecommender, int, bool]:
    """ALS fitted up to MAX_ITERATIONS, checked on the fold every CHECK_EVERY iterations;
    (the model at its best check, that iteration count, whether ``deadline``
    (``time.perf_counter``) cut the fit: it then stops at its next iteration)."""
    from implicit.cpu.als import AlternatingLeastSquares

    from training.als import confidence

    model = AlternatingLeastSquares(
        factors=p.factors,
        regularization=p.regularization,
        alpha=1.0,
        iterations=MAX_ITERATIONS,
        random_state=p.random_state,
        num_threads=p.num_threads,
    )
    x = fold.inter.binary()
    truth = fold.truth[fold.users]
    best: dict[str, Any] = {"ndcg": -1.0, "it": 0, "u": None, "v": None, "cut": False}

    def check(iteration: int, _elapsed: float, _loss: float) -> None:
        done = iteration + 1
        late = time.perf_counter() > deadline
        if done % CHECK_EVERY and not late:
            return
        probe = ALSRecommender(p)
        probe.user_factors, probe.item_factors = model.user_factors, model.item_factors
        ids, _ = probe.recommend(fold.users, x, n=k)
        ndcg = ranking_metrics(ids, truth, k)[f"ndcg@{k}"]
        if ndcg <= best["ndcg"]:
            raise _Stop
        best.update(ndcg=ndcg, it=done, u=model.user_factors.copy(), v=model.item_factors.copy())
        if late:
            best["cut"] = True
            raise _Stop

    with contextlib.suppress(_Stop):
        model.fit(confidence(fold.inter.matrix, p), show_progress=False, callback=check)
    out = ALSRecommender(replace(p, iterations=int(best["it"]) or MAX_ITERATIONS))
    if best["u"] is None:  # fewer iterations than one check: keep the last state
        best["u"], best["v"] = model.user_factors, model.item_factors
    out.user_factors = np.ascontiguousarray(best["u"], dtype=np.float32)
    out.item_factors = np.ascontiguousarray(best["v"], dtype=np.float32)
    return out, int(out.params.iterations), bool(best["cut"])


HALF_LIVES = (0.0, 30.0, 90.0, 180.0, 365.0, 730.0)  # days; 0 = no decay


def suggest(trial: Any, base: TrainConfig, n_items: int, half_life: bool = False) -> TrainConfig:
    """One point of the search space (see the module docstring); with ``half_life``, the
    confidence half-life too (the temporal protocol)."""
    als = replace(
        base.als,
        factors=trial.suggest_categorical("als.factors", [16, 32, 64, 128]),
        regularization=trial.suggest_float("als.regularization", 0.05, 50.0, log=True),
        alpha=trial.suggest_float("als.alpha", 0.5, 30.0, log=True),
        weighting=trial.suggest_categorical("als.weighting", ["log", "bm25"]),
    )
    cp = base.copurchase
    if CoPurchaseRecommender(cp).resolve_method(n_items) == "ease":
        cp = replace(
            cp, ease_lambda=trial.suggest_float("copurchase.ease_lambda", 50.0, 5000.0, log=True)
        )
    blend = {
        **base.blend,
        "als": trial.suggest_float("blend.als", 0.0, 2.0),
        "copurchase": 1.0,
        "popular": trial.suggest_float("blend.popular", 0.0, 0.5),
    }
    decay = base.half_life_days
    if half_life:
        days = trial.suggest_categorical("half_life_days", list(HALF_LIVES))
        decay = float(days) or None
    return replace(base, als=als, copurchase=cp, blend=blend, half_life_days=decay)


def _start_point(base: TrainConfig, n_items: int, half_life: bool) -> dict[str, Any]:
    point: dict[str, Any] = {
        "als.factors": base.als.factors if base.als.factors in (16, 32, 64, 128) else 64,
        "als.regularization": float(np.clip(base.als.regularization, 0.05, 50.0)),
        "als.alpha": float(np.clip(base.als.alpha, 0.5, 30.0)),
        "als.weighting": base.als.weighting if base.als.weighting in ("log", "bm25") else "log",
        "blend.als": float(np.clip(base.blend.get("als", 0.5), 0.0, 2.0)),
        "blend.popular": float(np.clip(base.blend.get("popular", 0.0), 0.0, 0.5)),
    }
    if CoPurchaseRecommender(base.copurchase).resolve_method(n_items) == "ease":
        point["copurchase.ease_lambda"] = float(np.clip(base.copurchase.ease_lambda, 50.0, 5000.0))
    if half_life:
        now = base.half_life_days or 0.0
        point["half_life_days"] = min(HALF_LIVES, key=lambda h: abs(h - now))
    return point


@dataclass
class SearchResult:
    config: TrainConfig
    best_ndcg: float
    trials: list[Trial]
    seconds: float

    def summary(self) -> dict[str, Any]:
        done = [t for t in self.trials if t["state"] == "complete"]
        return {
            "best_val_ndcg": round(self.best_ndcg, 5),
            "trials": len(self.trials),
            "completed": len(done),
            "pruned": sum(t["state"] == "pruned" for t in self.trials),
            "seconds": round(self.seconds, 1),
            "first_trial_val_ndcg": self.trials[0]["value"] if self.trials else None,
            "config": self.config.to_dict(),
        }


def search(
    folds: Sequence[EvalData],
    base: TrainConfig | None = None,
    *,
    budget_s: float = 600.0,
    max_trials: int = 200,
    k: int = 10,
    seed: int = 42,
    log_trial: TrialLogger | None = None,
    tune_half_life: bool = False,
) -> SearchResult:
    """The best config by mean served nDCG@k over ``folds``, within the budget;
    ``tune_half_life`` searches the confidence half-life too (folds from
    ``validation_folds``, which keep their events)."""
    import optuna

    if not folds:
        raise ValueError("tune needs at least one validation fold")
    base = base or TrainConfig()
    n_items = folds[0].inter.shape[1]
    caches = [_FoldCache(f) for f in folds]
    trials: list[Trial] = []
    t0 = time.perf_counter()
    deadline = t0 + max(budget_s, 1.0)

    def objective(trial: Any) -> float:
        config = suggest(trial, base, n_items, tune_half_life)
        scores: list[float] = []
        iterations: list[int] = []
        cut = False
        for step, cache in enumerate(caches):
            if trials and time.perf_counter() > deadline:  # the first trial always finishes
                _record(trial, "pruned", float(np.mean(scores or [0.0])), iterations or [0])
                raise optuna.TrialPruned
            cache.use_half_life(config.half_life_days, base)
            als, its, was_cut = cache.fit_als(config.als, k, deadline)
            cut = cut or was_cut
            served = ServedRecommender(
                cache.fold.inter, als, cache.copurchase(config), cache.popularity(), config
            )
            ids, _ = score_top_k(served.scoring, cache.fold.users, k)
            scores.append(ranking_metrics(ids, cache.fold.truth[cache.fold.users], k)[f"ndcg@{k}"])
            iterations.append(its)
            trial.report(float(np.mean(scores)), step)
            if trial.should_prune():
                _record(trial, "pruned", float(np.mean(scores)), iterations)
                raise optuna.TrialPruned
        value = float(np.mean(scores))
        _record(trial, "complete", value, iterations, cut)
        return value

    def _record(
        trial: Any, state: str, value: float, iterations: list[int], cut: bool = False
    ) -> None:
        entry = {
            "number": trial.number,
            "state": state,
            "value": round(value, 5),
            "params": dict(trial.params),
            "als_iterations": round(float(np.mean(iterations))),
            "cut_by_budget": cut,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        trials.append(entry)
        if log_trial is not None:
            log_trial(entry)
        log.info("trial %d %s: served nDCG@%d %.4f %s", trial.number, state, k, value, trial.params)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize",
        sampler=optuna.samplers.TPESampler(seed=seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=0),
    )
    study.enqueue_trial(_start_point(base, n_items, tune_half_life))
    study.optimize(objective, n_trials=max_trials, timeout=max(budget_s, 1.0))
    best = study.best_trial
    chosen = suggest(optuna.trial.FixedTrial(best.params), base, n_items, tune_half_life)
    entry = next(t for t in trials if t["number"] == best.number)
    # a fit the budget cut stopped before it peaked: keep the configured iteration count
    its = base.als.iterations if entry["cut_by_budget"] else entry["als_iterations"]
    chosen = replace(chosen, als=replace(chosen.als, iterations=its))
    return SearchResult(chosen, float(best.value or 0.0), trials, time.perf_counter() - t0)


__all__ = [
    "PROTOCOLS",
    "SearchResult",
    "search",
    "validation_folds",
]
