"""``patron picks export --engine spark`` (real Spark, local mode) writes the local export's
rows, respects consent, and replaces its output directory only when complete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from typer.testing import CliRunner

from patron.cli import app
from tests.training.conftest import to_events

pytestmark = [pytest.mark.spark, pytest.mark.slow]


@pytest.fixture(scope="module")
def shop(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from features.adapters.ml100k import read_ml100k
    from features.customers import build_customers
    from features.tiers import DEFAULT_RULES
    from training.pipeline import train

    tmp = tmp_path_factory.mktemp("shop")
    events, catalog = read_ml100k(data_dir / "ml-100k")
    ids = events["customer_id"].unique().sort()
    people = pl.DataFrame(
        {"customer_id": ids, "marketing_consent": [i % 5 != 0 for i in range(ids.len())]}
    )
    as_of = events["ts"].max()
    table, _ = build_customers(
        events.lazy(),
        as_of,
        DEFAULT_RULES,
        catalog.lazy(),
        people.lazy(),  # type: ignore[arg-type]
    )
    features = tmp / "features"
    features.mkdir()
    table.write_parquet(features / "customers.parquet")
    bundle = tmp / "bundle"
    train(
        to_events(events.select("customer_id", "item_id", "ts")),
        out_dir=bundle,
        catalog=catalog,
        customers=table,
        evaluate=False,
    )
    return {"features": features, "bundle": bundle}


def _export(shop: dict[str, Path], out: Path, *extra: str) -> dict[str, Any]:
    args = ["picks", "export", "--bundle", str(shop["bundle"]), "--features", str(shop["features"])]
    res = CliRunner().invoke(app, [*args, "--out", str(out), "--k", "8", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def _rows(path: Path) -> pl.DataFrame:
    frame = pl.read_parquet(path / "*.parquet" if path.is_dir() else path)
    return frame.sort("customer_id", "rank")


@pytest.mark.parametrize("rules", [[], ["--no-rules"]], ids=["default-rules", "no-rules"])
def test_spark_export_equals_local_export(
    spark: Any, shop: dict[str, Path], tmp_path: Path, rules: list[str]
) -> None:
    local = _export(shop, tmp_path / "local.parquet", *rules)
    remote = _export(shop, tmp_path / "spark", "--engine", "spark", *rules)
    assert (tmp_path / "spark" / "_SUCCESS").is_file()
    for key in ("customers_selected", "written", "rows", "skipped_no_consent", "rules_version"):
        assert remote[key] == local[key], key
    assert local["skipped_no_consent"] > 0 and local["rows"] > 0
    a, b = _rows(tmp_path / "local.parquet"), _rows(tmp_path / "spark")
    assert a.schema == b.schema
    # the same picks; every customer's answer has its own recommendation id
    assert a.drop("recommendation_id").equals(b.drop("recommendation_id"))
    per = b.group_by("customer_id").agg(pl.col("recommendation_id").n_unique())
    assert (per["recommendation_id"] == 1).all()
    assert b["recommendation_id"].n_unique() == per.height == remote["written"]


def test_spark_export_replaces_only_when_complete(
    spark: Any, shop: dict[str, Path], tmp_path: Path
) -> None:
    out = tmp_path / "picks"
    first = _export(shop, out, "--engine", "spark", "--tier", "bronze")
    before = _rows(out)
    assert first["written"] > 0 and set(before["tier"].unique()) == {"bronze"}
    # a failing run (a bundle the executors cannot load) leaves the previous export whole
    broken = dict(shop, bundle=tmp_path / "no-bundle")
    (tmp_path / "no-bundle").mkdir()
    args = ["picks", "export", "--bundle", str(broken["bundle"]), "--features"]
    res = CliRunner().invoke(
        app, [*args, str(shop["features"]), "--out", str(out), "--engine", "spark"]
    )
    assert res.exit_code != 0
    assert _rows(out).equals(before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("picks")) == ["picks"]
    _export(shop, out, "--engine", "spark")
    assert _rows(out).height > before.height
