"""``patron tune`` on any events: folds from the given events only, the served scoring
library as objective, Optuna within a budget, MLflow nested runs; ``train --tune``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from patron.cli import app
from tests.training.conftest import to_events
from training.config import TrainConfig
from training.search import search, validation_folds

runner = CliRunner()


@pytest.fixture(scope="module")
def ml_train(data_dir: Path) -> pl.DataFrame:
    """The ML-100K protocol-(a) training part as events (the test part is never used)."""
    from training.evaluate import ml100k_rows
    from training.splits import stratified_split

    train, _ = stratified_split(ml100k_rows(data_dir), ratio=0.75, filter_by="item", seed=42)
    return to_events(train)


def _pairs(frame: pl.DataFrame) -> set[tuple[str, str]]:
    return set(frame.select(pl.col("customer_id").cast(pl.String), "item_id").iter_rows())


def test_random_folds_hold_out_a_tenth_of_each_item(ml_train: pl.DataFrame) -> None:
    folds = validation_folds(ml_train, "random", folds=2, seed=7)
    assert len(folds) == 2
    a, b = folds
    assert a.fingerprint != b.fingerprint  # another seed, another split
    for fold in folds:
        held = fold.truth.nnz
        assert 0.07 * ml_train.height < held < 0.11 * ml_train.height
        # held-out pairs are not in the fold's fit part
        assert fold.truth.multiply(fold.inter.binary()).nnz == 0
    # every validation pair comes from the given events: the protocol's test part is unseen
    ids_c = a.inter.customer_ids.astype(str)
    ids_i = a.inter.item_ids.astype(str)
    t = a.truth.tocoo()
    assert {(ids_c[r], ids_i[c]) for r, c in zip(t.row, t.col, strict=True)} <= _pairs(ml_train)


def test_temporal_fold_holds_out_each_customers_latest(ml_train: pl.DataFrame) -> None:
    (fold,) = validation_folds(ml_train, "temporal")
    t = fold.truth.tocoo()
    ids_c = fold.inter.customer_ids.astype(str)
    ids_i = fold.inter.item_ids.astype(str)
    held = pl.DataFrame({"customer_id": ids_c[t.row], "item_id": ids_i[t.col]})
    ts = (
        ml_train.join(held, on=["customer_id", "item_id"])
        .group_by("customer_id")
        .agg(pl.col("ts").min().alias("held_from"))
    )
    fit_latest = (
        ml_train.join(held, on=["customer_id", "item_id"], how="anti")
        .group_by("customer_id")
        .agg(pl.col("ts").max().alias("fit_to"))
    )
    both = ts.join(fit_latest, on="customer_id")
    assert both.height > 500
    assert (both["held_from"] >= both["fit_to"]).mean() > 0.95  # type: ignore[operator]


def test_bad_input_is_a_clear_error(ml_train: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="random or temporal"):
        validation_folds(ml_train, "kfold")
    with pytest.raises(ValueError, match="no purchases"):
        validation_folds(ml_train.with_columns(pl.lit(None, pl.String).alias("item_id")), "random")


def test_search_starts_from_the_config_and_never_ends_below_it(ml_train: pl.DataFrame) -> None:
    folds = validation_folds(ml_train, "random", folds=2, seed=3)
    base = TrainConfig()
    logged: list[dict[str, object]] = []
    result = search(folds, base, budget_s=25, max_trials=12, seed=1, log_trial=logged.append)
    first = result.trials[0]
    assert first["params"]["als.factors"] == base.als.factors
    assert first["params"]["blend.als"] == base.blend["als"]
    assert logged == result.trials and len(result.trials) >= 3
    complete = [t["value"] for t in result.trials if t["state"] == "complete"]
    assert result.best_ndcg == pytest.approx(max(complete), abs=1e-5)  # type: ignore[type-var]
    assert max(complete) >= first["value"]  # type: ignore[type-var, operator]
    # the chosen config is the best trial's, with the ALS iterations early stopping found
    best = max((t for t in result.trials if t["state"] == "complete"), key=lambda t: t["value"])
    assert result.config.als.factors == best["params"]["als.factors"]
    assert result.config.als.iterations == best["als_iterations"]
    assert 5 <= result.config.als.iterations <= 30


@pytest.mark.mlflow
def test_cli_tune_logs_trials_and_train_tune_stores_the_choice(
    ml_train: pl.DataFrame, tmp_path: Path, mlflow_uri: str
) -> None:
    import mlflow

    events = tmp_path / "events.parquet"
    ml_train.write_parquet(events)
    out = tmp_path / "tune.json"
    res = runner.invoke(
        app,
        [
            "tune",
            "--events",
            str(events),
            "--protocol",
            "temporal",
            "--budget-minutes",
            "0.2",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout.strip().splitlines()[-1])
    saved = json.loads(out.read_text())
    assert body["protocol"] == "temporal" and saved["trials"] and saved["config"]["als"]
    client = mlflow.MlflowClient(mlflow_uri)
    parent = client.get_run(body["mlflow_run_id"])
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'"
    )
    assert len(children) == len(saved["trials"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "tune")}
    assert artifacts == {"tune/tune_summary.json", "tune/tune_search.png"}

    bundle = tmp_path / "bundle"
    res = runner.invoke(
        app,
        [
            "train",
            "--events",
            str(events),
            "--tune",
            "--budget-minutes",
            "0.2",
            "--no-faiss",
            "--out",
            str(bundle),
            "--eval-customers",
            "200",
        ],
    )
    assert res.exit_code == 0, res.output
    trained = json.loads(res.stdout.strip().splitlines()[-1])
    manifest = json.loads((bundle / "manifest.json").read_text())
    params = manifest["params"]
    assert params["tune.protocol"] == "random" and params["tune.trials"] >= 1
    run = client.get_run(trained["run_id"])
    assert run.data.params["tune.mlflow_run_id"] == params["tune.mlflow_run_id"]
    tuned = client.get_run(params["tune.mlflow_run_id"])
    best = json.loads(
        Path(
            mlflow.artifacts.download_artifacts(
                run_id=tuned.info.run_id,
                artifact_path="tune/tune_summary.json",
                dst_path=str(tmp_path),
            )
        ).read_text()
    )
    assert params["als.factors"] == best["config"]["als"]["factors"]
    assert params["blend.als"] == pytest.approx(best["config"]["blend"]["als"])


def test_train_tune_refuses_spark_and_bad_protocol(tmp_path: Path) -> None:
    for extra, says in (
        (["--engine", "spark"], "--tune runs on the local engine"),
        (["--tune-protocol", "kfold"], "--tune-protocol must be random or temporal"),
    ):
        res = runner.invoke(
            app, ["train", "--events", str(tmp_path / "e.parquet"), "--tune", *extra]
        )
        assert res.exit_code == 2 and says in res.stderr, res.output


def test_large_folds_score_a_seeded_sample_of_customers(ml_train: pl.DataFrame) -> None:
    full = validation_folds(ml_train, "random", folds=1, seed=5, max_users=10_000)[0]
    small = validation_folds(ml_train, "random", folds=1, seed=5, max_users=100)[0]
    again = validation_folds(ml_train, "random", folds=1, seed=5, max_users=100)[0]
    assert len(full.users) > 500 and len(small.users) == 100
    assert set(small.users) <= set(full.users)
    assert (small.users == again.users).all() and (small.users == np.sort(small.users)).all()
    assert small.inter.matrix.nnz == full.inter.matrix.nnz  # models still fit on everything


def test_temporal_search_tunes_the_half_life(ml_train: pl.DataFrame) -> None:
    from training.search import HALF_LIVES, _FoldCache

    folds = validation_folds(ml_train, "temporal")
    cache = _FoldCache(folds[0])
    base = TrainConfig()
    cache.use_half_life(30.0, base)
    decayed = cache.fold.inter.matrix
    cache.use_half_life(None, base)
    plain = cache.fold.inter.matrix
    assert decayed.nnz == plain.nnz and (decayed.data < plain.data).mean() > 0.5
    assert (cache.fold.truth != folds[0].truth).nnz == 0
    result = search(folds, base, budget_s=15, max_trials=8, seed=2, tune_half_life=True)
    assert all("half_life_days" in t["params"] for t in result.trials)
    best = max((t for t in result.trials if t["state"] == "complete"), key=lambda t: t["value"])
    assert best["params"]["half_life_days"] in HALF_LIVES
    assert result.config.half_life_days == (best["params"]["half_life_days"] or None)
