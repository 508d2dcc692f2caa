"""The tune job behind ``patron tune`` and ``patron train --tune``: validation folds -> the
search (training/search.py) -> an MLflow parent run (every trial nested under it, the summary
JSON and the search plot as its artifacts) -> the chosen config."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from training.config import TrainConfig
from training.search import SearchResult, Trial, TrialLogger, search, validation_folds

log = logging.getLogger(__name__)


def folds_for(
    protocol: str,
    events: pl.DataFrame | None,
    data_dir: Path,
    n_folds: int,
    seed: int,
    base: TrainConfig,
) -> list[Any]:
    """The validation folds of ``protocol`` (see training/search.py)."""
    from training.evaluate import ml100k_validation_folds, prepare

    if protocol == "ml100k":
        return [prepare(a, b, config=base) for a, b in ml100k_validation_folds(data_dir)]
    if events is None:
        raise ValueError(f"--protocol {protocol} needs --events")
    return validation_folds(events, protocol, folds=n_folds, seed=seed, config=base)


def run_tune(
    folds: list[Any],
    base: TrainConfig,
    *,
    budget_minutes: float,
    max_trials: int,
    seed: int,
    tracking: tuple[str, str] | None,
    run_name: str,
    tune_half_life: bool = False,
) -> tuple[SearchResult, dict[str, Any]]:
    """Search within the budget; with ``tracking`` (tracking URI, experiment) every trial is a
    nested MLflow run and the summary and plot are artifacts of their parent run."""
    logger = mlflow_trial_logger(tracking[1], tracking[0], run_name) if tracking else None
    try:
        result = search(
            folds,
            base,
            budget_s=budget_minutes * 60.0,
            max_trials=max_trials,
            seed=seed,
            log_trial=logger,
            tune_half_life=tune_half_life,
        )
        sys.stderr.write(summary_table(result) + "\n")
        summary = result.summary()
        if tracking:
            import mlflow

            with tempfile.TemporaryDirectory() as tmp:
                (Path(tmp) / "tune_summary.json").write_text(
                    json.dumps({**summary, "trials": result.trials}, indent=2)
                )
                plot = plot_search(result, Path(tmp) / "tune_search.png")
                mlflow.log_artifacts(tmp, artifact_path="tune")
                summary["plot"] = "tune/tune_search.png" if plot else None
            mlflow.log_metric("best_val_ndcg_at_10", result.best_ndcg)
            summary["mlflow_run_id"] = mlflow.active_run().info.run_id  # type: ignore[union-attr]
    finally:
        if tracking:
            import mlflow

            mlflow.end_run()
    return result, summary


def summary_table(result: SearchResult, top: int = 10) -> str:
    """The best completed trials, one line each (printed to stderr by the CLI)."""
    done = sorted((t for t in result.trials if t["state"] == "complete"), key=lambda t: -t["value"])
    lines = [f"{'trial':>5} {'nDCG@10':>8} {'its':>4}  params"]
    for t in done[:top]:
        params = ", ".join(
            f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in t["params"].items()
        )
        lines.append(f"{t['number']:>5} {t['value']:>8.4f} {t['als_iterations']:>4}  {params}")
    return "\n".join(lines)


def plot_search(result: SearchResult, path: Path) -> Path | None:
    """Every trial's validation nDCG over the search's time and the best so far (PNG); None
    without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed: no search plot")
        return None
    xs = [t["seconds"] for t in result.trials]
    ys = [t["value"] for t in result.trials]
    pruned = [t["state"] == "pruned" for t in result.trials]
    best = np.maximum.accumulate([v if not p else -np.inf for v, p in zip(ys, pruned, strict=True)])
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.scatter(
        [x for x, p in zip(xs, pruned, strict=True) if not p],
        [y for y, p in zip(ys, pruned, strict=True) if not p],
        s=14,
        label="trial",
    )
    ax.scatter(
        [x for x, p in zip(xs, pruned, strict=True) if p],
        [y for y, p in zip(ys, pruned, strict=True) if p],
        s=10,
        marker="x",
        label="pruned (mean of the folds run)",
    )
    ax.step(xs, best, where="post", color="C3", label="best so far")
    ax.set_xlabel("seconds into the search")
    ax.set_ylabel("validation nDCG@10 (served)")
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def mlflow_trial_logger(experiment: str, tracking_uri: str, parent_name: str) -> TrialLogger:
    """Log each trial as a nested MLflow run under one parent run named ``parent_name``
    (left active: the caller logs the summary and plot to it, then ends it)."""
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_experiment(experiment)
    parent_id = mlflow.start_run(run_name=parent_name).info.run_id

    def log_trial(trial: Trial) -> None:
        with mlflow.start_run(
            run_name=f"trial-{trial['number']}", nested=True, parent_run_id=parent_id
        ):
            mlflow.log_params({**trial["params"], "als.iterations": trial["als_iterations"]})
            mlflow.log_metric("val_ndcg_at_10", trial["value"])
            mlflow.set_tag("state", trial["state"])

    return log_trial
