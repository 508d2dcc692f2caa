"""``patron train --engine spark`` (real Spark, local mode): the co-purchase tables equal the
local ones, and a Spark-trained bundle served by a real API scores within 3% of the local
engine on the ML-100K protocol."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from patron.cli import app
from serving.rules.loader import FALLBACK_ONLY
from tests.training.conftest import to_events
from training.config import TrainConfig
from training.copurchase import CoPurchaseRecommender
from training.evaluate import evaluate_models, fit_models, ml100k_rows, prepare
from training.splits import stratified_split

pytestmark = pytest.mark.spark


@pytest.fixture(scope="module")
def ml100k(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    train, test = stratified_split(ml100k_rows(data_dir), ratio=0.75, filter_by="item", seed=42)
    path = tmp_path_factory.mktemp("ml100k") / "train.parquet"
    to_events(train).write_parquet(path)
    return {"train": train, "test": test, "events": path}


@pytest.mark.parametrize("method", ["ease", "cosine"])
def test_copurchase_table_equals_local(spark: Any, ml100k: dict[str, Any], method: str) -> None:
    from training.spark_engine import SparkEngine

    config = TrainConfig.from_dict({"copurchase": {"method": method, "top_n": 50}})
    data = prepare(ml100k["train"], ml100k["test"], config=config)
    local = CoPurchaseRecommender(config.copurchase).fit(data.inter.binary()).table.tocsr()
    engine = SparkEngine(spark, str(ml100k["events"]))
    try:
        remote = engine.fit_copurchase(data.inter, config, None)
    finally:
        engine.close()
    assert remote.method_used == method and remote.source_used == "customers"
    got = remote.table.tocsr()
    assert got.shape == local.shape and got.nnz == local.nnz > 0
    # the same best-N scores per item; at a tie on the N-th score either neighbour may stay
    for i in range(local.shape[0]):
        np.testing.assert_allclose(np.sort(got[i].data), np.sort(local[i].data), rtol=1e-6)
    common_local = local.multiply(got > 0)
    common_got = got.multiply(local > 0)
    assert abs(common_local - common_got).max() <= 1e-6
    assert common_local.nnz >= 0.8 * local.nnz


@pytest.mark.slow
@pytest.mark.redis
def test_spark_bundle_served_within_3pct_of_local(
    spark: Any, ml100k: dict[str, Any], tmp_path: Path, redis_url: str
) -> None:
    from tests.training.test_quality_ml100k import independent_scores
    from tests.training.test_served_ml100k import _served, _write
    from training.pipeline import train
    from training.spark_engine import SparkEngine

    config = TrainConfig()
    data = prepare(ml100k["train"], ml100k["test"], config=config)
    local = evaluate_models(fit_models(data.inter, config), data)["served"]["ndcg@10"]

    bundle = tmp_path / "bundle"
    engine = SparkEngine(spark, str(ml100k["events"]))
    try:
        result = train(engine, out_dir=bundle, evaluate=False)
    finally:
        engine.close()
    assert result.tags["engine"] == "spark"
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["params"]["copurchase.method_used"] == "ease"

    rules = tmp_path / "fallback.yaml"
    rules.write_text(yaml.safe_dump(FALLBACK_ONLY))
    users = sorted(ml100k["train"]["customer_id"].cast(pl.String).unique().to_list(), key=int)
    api = {
        u: [it["item_id"] for it in body["items"]]  # type: ignore[attr-defined]
        for u, body in zip(users, _served(bundle, rules, redis_url, users), strict=True)
    }
    test = ml100k["test"].with_columns(pl.col("item_id").cast(pl.String))
    served = independent_scores(_write(tmp_path / "api.csv", api), test)["ndcg"]
    print(f"\nML-100K served nDCG@10: spark engine via API {served:.4f}, local engine {local:.4f}")
    assert abs(served - local) <= 0.03 * local


@pytest.mark.mlflow
def test_cli_train_engine_spark_validates_and_registers(
    spark: Any, ml100k: dict[str, Any], tmp_path: Path, mlflow_uri: str
) -> None:
    out = tmp_path / "bundle"
    args = ["train", "--events", str(ml100k["events"]), "--engine", "spark", "--register"]
    args += ["--out", str(out), "--eval-customers", "300", "--no-faiss"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    body = json.loads(res.stdout.strip().splitlines()[-1])
    metrics = body["metrics"]
    # 300 of 943 customers lose their last 20%: more than 5% of the events, so the models
    # are refitted on everything after validation, as on the local engine
    assert metrics["val_holdout_share"] > 0.05
    assert metrics["val_ndcg@10"] > 1.2 * metrics["val_popular_ndcg@10"] > 0
    assert body["model_version"] is not None
    import mlflow

    run = mlflow.MlflowClient(mlflow_uri).get_run(body["run_id"])
    assert run.data.tags["engine"] == "spark"
    assert run.data.tags["final_fit"] == "refit on all events"
