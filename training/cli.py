"""``patron train``, ``evaluate``, ``tune``, ``recommend`` and ``models`` commands."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer

from patron.cliutil import UserError, command, emit
from patron.spark import conf_option, engine_option, master_option

models_app = typer.Typer(no_args_is_help=True)


def _settings() -> Any:
    from patron.settings import get_settings

    return get_settings()


def _config(path: Path | None) -> Any:
    from training.config import TrainConfig

    return TrainConfig.from_file(path)


@command
def train(
    events: str = typer.Option(
        ...,
        "--events",
        help="Validated events (EVENTS schema, Parquet); with --engine spark a path or any "
        "Hadoop URI.",
    ),
    catalog: Path | None = typer.Option(None, "--catalog", help="Catalog Parquet (CATALOG)."),
    customer_features: Path | None = typer.Option(
        None, "--customer-features", help="Customer features with customer_id, tier."
    ),
    config: Path | None = typer.Option(None, "--config", help="JSON from `patron tune`."),
    register: bool = typer.Option(False, "--register", help="Register in the MLflow registry."),
    out: Path | None = typer.Option(None, "--out", help="Bundle directory to write."),
    eval_customers: int = typer.Option(10_000, help="Customers sampled for validation."),
    no_eval: bool = typer.Option(False, "--no-eval", help="Skip validation (gate will refuse)."),
    faiss_index: bool = typer.Option(True, "--faiss/--no-faiss", help="Prebuild FAISS index."),
    neighbours: int = typer.Option(
        64,
        "--neighbours",
        min=0,
        max=1_000,
        help="Precompute each customer's N nearest items by the index for the API and the "
        "email export (0 = none: they search FAISS per customer).",
    ),
    engine: str = engine_option(),
    spark_master: str | None = master_option(),
    spark_conf: list[str] = conf_option(),
    tune: bool = typer.Option(
        False, "--tune", help="Tune on validation folds of these events first (patron tune)."
    ),
    tune_protocol: str = typer.Option("random", "--tune-protocol", help="random or temporal."),
    budget_minutes: float = typer.Option(
        10.0, "--budget-minutes", min=0.05, help="With --tune: the search's time."
    ),
) -> None:
    """Train ALS + co-purchase + popularity, write the bundle, log to MLflow."""
    from patron.spark import check_engine, parse_conf
    from training.pipeline import read_table
    from training.pipeline import train as run_train
    from training.registry import log_training_run

    check_engine(engine)
    conf = parse_conf(spark_conf)
    if tune and engine != "local":
        raise UserError("--tune runs on the local engine; tune first, then --config with spark")
    if tune and tune_protocol not in ("random", "temporal"):
        raise UserError(f"--tune-protocol must be random or temporal, got {tune_protocol!r}")
    s = _settings()
    cat = read_table(catalog, "catalog") if catalog else None
    cust = read_table(customer_features, "customer features") if customer_features else None
    from features.tiers import tier_names_beside

    try:  # the tier scheme the features were built with travels in the bundle
        tiers = tier_names_beside(customer_features)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%f")
    out_dir = out or (s.work_dir / "bundles" / stamp)
    train_config = _config(config)
    tuned: dict[str, Any] = {}
    local_events = read_table(Path(events), "events") if engine == "local" else None
    if tune:
        from training.tune_job import folds_for, run_tune

        searched, summary = run_tune(
            folds_for(tune_protocol, local_events, s.data_dir, 3, 42, train_config),
            train_config,
            budget_minutes=budget_minutes,
            max_trials=10_000,
            seed=42,
            tracking=(s.tracking_uri(), s.experiment),
            run_name="tune-before-train",
            tune_half_life=tune_protocol == "temporal",
        )
        train_config = searched.config
        tuned = {
            "tune.protocol": tune_protocol,
            "tune.trials": summary["trials"],
            "tune.best_val_ndcg_at_10": summary["best_val_ndcg"],
            "tune.seconds": summary["seconds"],
            "tune.mlflow_run_id": summary.get("mlflow_run_id"),
        }

    def run(source: Any) -> Any:
        return run_train(
            source,
            out_dir=out_dir,
            config=train_config,
            catalog=cat,
            customers=cust,
            tiers=tiers,
            model_name=s.model_name,
            eval_customers=eval_customers,
            evaluate=not no_eval,
            with_faiss=faiss_index,
            candidate_depth=neighbours,
            extra_params=tuned,
        )

    if engine == "spark":
        from patron.spark import spark_session
        from training.spark_engine import SparkEngine

        with spark_session(spark_master, conf, "patron train") as spark:
            source = SparkEngine(spark, events)
            try:
                result = run(source)
            finally:
                source.close()
    else:
        result = run(local_events)
    logged = log_training_run(
        tracking_uri=s.tracking_uri(),
        experiment=s.experiment,
        model_name=s.model_name,
        bundle_dir=result.bundle,
        params=result.params,
        metrics=result.metrics,
        tags=result.tags,
        register=register,
        artifact_location=None if s.mlflow_tracking_uri else s.artifact_root(),
    )
    emit(
        {
            **logged,
            "bundle": str(result.bundle),
            "metrics": result.metrics,
            "timings": result.timings,
        }
    )


@command
def evaluate(
    protocol: str = typer.Option("ml100k", help="ml100k (protocol a) or temporal (protocol b)."),
    events: Path | None = typer.Option(
        None, "--events", help="Events for temporal (default ML-100K)."
    ),
    customer_features: Path | None = typer.Option(None, "--customer-features"),
    config: Path | None = typer.Option(None, "--config", help="JSON from `patron tune`."),
    seeds: str = typer.Option(
        "42", help="Comma-separated split seeds for ml100k, e.g. 42,1,2,3,4,5."
    ),
    k: int = typer.Option(10, help="List length."),
    out: Path | None = typer.Option(None, "--out", help="Also write the report JSON here."),
    rules: Path | None = typer.Option(
        None, "--rules", help="Rules for the served_rules row (default config/rules.yaml)."
    ),
) -> None:
    """Report every model and the popularity baseline side by side; ``served`` is what the API
    serves with rules off, ``served_rules`` with the business rules (and the share of held-out
    hits they remove)."""
    from training.evaluate import protocol_ml100k, protocol_temporal
    from training.pipeline import read_table

    cfg = _config(config)
    from serving.rules.loader import load_rules
    from serving.rules.models import RuleError

    try:
        load_rules(rules)  # a bad rules file is bad input, before any fitting
    except (RuleError, OSError) as exc:
        raise UserError(str(exc)) from None
    if protocol == "ml100k":
        try:
            seed_list = tuple(int(x) for x in seeds.split(",") if x.strip())
        except ValueError:
            raise UserError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
        report = protocol_ml100k(_settings().data_dir, cfg, seeds=seed_list, k=k, rules_file=rules)
    elif protocol == "temporal":
        ev = read_table(events, "events") if events else _ml100k_events()
        cust = read_table(customer_features, "customer features") if customer_features else None
        report = protocol_temporal(ev, cfg, customers=cust, k=k, rules_file=rules)
    else:
        raise UserError(f"unknown --protocol {protocol!r}; use ml100k or temporal")
    report["config"] = cfg.to_dict()
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
    emit(report)


def _ml100k_events() -> Any:
    from features.adapters.ml100k import read_ml100k

    events, _ = read_ml100k(_settings().data_dir / "ml-100k")
    return events


@command
def tune(
    protocol: str | None = typer.Option(
        None,
        help="random (stratified by item) or temporal (last 20% of each customer) folds of "
        "--events; ml100k: the shipped ML-100K training part (default without --events).",
    ),
    events: Path | None = typer.Option(None, "--events", help="Events to tune on (EVENTS)."),
    budget_minutes: float = typer.Option(10.0, "--budget-minutes", min=0.05, help="Search time."),
    trials: int = typer.Option(200, "--trials", min=1, help="At most this many trials."),
    folds: int = typer.Option(3, "--folds", min=1, max=10, help="random: validation folds."),
    seed: int = typer.Option(42, "--seed", help="Fold and sampler seed."),
    config: Path | None = typer.Option(None, "--config", help="Start point (JSON)."),
    out: Path = typer.Option(Path("tune.json"), "--out", help="Chosen config + every trial."),
    mlflow_log: bool = typer.Option(True, "--mlflow/--no-mlflow", help="Log trials to MLflow."),
) -> None:
    """Search hyperparameters on validation folds of the training data only (the served
    scoring library as objective); writes the chosen config for `train --config`."""
    from training.search import PROTOCOLS
    from training.tune_job import folds_for, run_tune

    s = _settings()
    chosen = protocol or ("random" if events else "ml100k")
    if chosen not in PROTOCOLS:
        raise UserError(f"unknown --protocol {chosen!r}; use {', '.join(PROTOCOLS)}")
    ev = None
    if events is not None:
        from training.pipeline import read_table

        ev = read_table(events, "events")
    elif chosen != "ml100k":
        ev = _ml100k_events()
    base = _config(config)
    result, summary = run_tune(
        folds_for(chosen, ev, s.data_dir, folds, seed, base),
        base,
        budget_minutes=budget_minutes,
        max_trials=trials,
        seed=seed,
        tracking=(s.tracking_uri(), s.experiment) if mlflow_log else None,
        run_name=f"tune-{chosen}",
        tune_half_life=chosen == "temporal",
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"config": result.config.to_dict(), **summary, "trials": result.trials}, indent=2
        )
    )
    emit({**summary, "protocol": chosen, "out": str(out)})


@command
def recommend(
    bundle: Path = typer.Option(..., "--bundle", help="Bundle directory."),
    k: int = typer.Option(10, "--k", help="Picks per customer."),
    no_rules: bool = typer.Option(False, "--no-rules", help="Model picks without business rules."),
    out: Path = typer.Option(..., "--out", help="CSV: customer_id,rank,item_id,score."),
) -> None:
    """Top-k picks for every customer in the bundle, excluding items bought in training."""
    import numpy as np
    import polars as pl

    from patron.bundle import BundleError, load_bundle
    from patron.scoring import load_scoring
    from patron.scoring import recommend as score_top_k

    if not no_rules:
        raise UserError(
            "rule-aware picks are `patron picks export`; pass --no-rules for model picks"
        )
    if k <= 0:
        raise UserError(f"--k must be positive, got {k}")
    try:
        b = load_bundle(bundle)
    except BundleError as exc:
        raise UserError(str(exc)) from None
    users = np.arange(len(b.customer_ids))
    ids, scores = score_top_k(load_scoring(b, bundle), users, k)
    ok = ids >= 0
    rows, ranks = np.nonzero(ok)
    frame = pl.DataFrame(
        {
            "customer_id": b.customer_ids.astype(str)[rows],
            "rank": (ranks + 1).astype(np.int32),
            "item_id": b.item_ids.astype(str)[ids[ok]],
            "score": scores[ok].astype(np.float64),
        }
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    frame.write_csv(out)
    emit({"out": str(out), "customers": len(users), "rows": frame.height, "k": k})


@models_app.command("list")
@command
def models_list() -> None:
    """Registered versions with aliases and validation nDCG@10."""
    from training.registry import list_versions

    s = _settings()
    emit({"model_name": s.model_name, "versions": list_versions(s.tracking_uri(), s.model_name)})


@models_app.command("promote")
@command
def models_promote(
    version: str | None = typer.Option(None, "--version", help="Version (default: challenger)."),
    min_gain: float = typer.Option(
        0.0,
        "--min-gain",
        help="Relative nDCG@10 gain over the champion required (0: strictly better).",
    ),
    min_coverage: float = typer.Option(0.01, help="Catalog coverage floor (sanity check)."),
    force: bool = typer.Option(False, "--force", help="Skip the metric comparison."),
    reason: str | None = typer.Option(None, "--reason", help="Required with --force; logged."),
    require_online: bool = typer.Option(
        False,
        "--require-online",
        help="Also require the online A/B report (patron ab report) of champion against this "
        "version to say 'challenger better' at PATRON_AB_CONFIDENCE.",
    ),
) -> None:
    """Move the champion alias if the gate passes."""
    from training.registry import GateError, promote

    s = _settings()
    online_check = None
    if require_online:
        from serving.cli_ab import online_verdict

        online_check = online_verdict
    try:
        result = promote(
            s.tracking_uri(),
            s.model_name,
            version=version,
            min_gain=min_gain,
            min_coverage=min_coverage,
            force=force,
            reason=reason,
            workdir=s.work_dir / "registry",
            online_check=online_check,
        )
    except GateError as exc:
        raise UserError(str(exc)) from None
    emit(result)


@models_app.command("rollback")
@command
def models_rollback() -> None:
    """Point champion back to the previous champion."""
    from training.registry import GateError, rollback

    s = _settings()
    try:
        emit(rollback(s.tracking_uri(), s.model_name))
    except GateError as exc:
        raise UserError(str(exc)) from None
