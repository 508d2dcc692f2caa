"""The ``--engine`` option: the Spark build through the CLI equals the local one; a missing
PySpark or a bad setting is one line and exit code 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from patron.cli import app
from tests.spark.test_features_spark import assert_tables_equal

runner = CliRunner()


def _events(data_dir: Path, tmp: Path) -> Path:
    from features.adapters.ml100k import read_ml100k

    events, catalog = read_ml100k(data_dir / "ml-100k")
    events.write_parquet(tmp / "events.parquet")
    catalog.write_parquet(tmp / "catalog.parquet")
    return tmp / "events.parquet"


@pytest.mark.spark
def test_features_build_engine_spark_equals_local(data_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    ev = _events(data_dir, tmp_path)
    outs = {}
    for engine in ("local", "spark"):
        out = tmp_path / engine
        args = ["features", "build", "--events", str(ev), "--out", str(out)]
        args += ["--catalog", str(tmp_path / "catalog.parquet"), "--engine", engine]
        args += ["--spark-master", "local[2]", "--spark-conf", "spark.sql.shuffle.partitions=3"]
        res = runner.invoke(app, args)
        assert res.exit_code == 0, res.output
        outs[engine] = json.loads(res.stdout.strip().splitlines()[-1])
        assert (out / "tiers.json").is_file()
    assert outs["spark"]["engine"] == "spark"
    assert outs["spark"]["as_of"] == outs["local"]["as_of"]
    for name in ("customers", "items"):
        assert_tables_equal(
            pl.read_parquet(tmp_path / "local" / f"{name}.parquet"),
            pl.read_parquet(tmp_path / "spark" / f"{name}.parquet"),
            name,
        )


@pytest.mark.parametrize("command", ["features", "train", "picks"])
def test_engine_spark_without_pyspark_says_how_to_install(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: str
) -> None:
    ev = str(_events(data_dir, tmp_path))
    out = str(tmp_path / "o")
    monkeypatch.setitem(sys.modules, "pyspark", None)  # import pyspark -> ImportError
    args = {
        "features": ["features", "build", "--events", ev, "--out", out],
        "train": ["train", "--events", ev, "--out", out],
        "picks": ["picks", "export", "--bundle", out, "--features", out, "--out", out],
    }[command]
    res = runner.invoke(app, [*args, "--engine", "spark"])
    assert res.exit_code == 2, res.output
    assert "pip install 'patron[spark]'" in res.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--engine", "dask"], "--engine must be one of local, spark"),
        (["--engine", "local", "--spark-conf", "novalue"], "--spark-conf expects KEY=VALUE"),
    ],
)
def test_bad_engine_options_exit_2(
    data_dir: Path, tmp_path: Path, extra: list[str], says: str
) -> None:
    ev = _events(data_dir, tmp_path)
    res = runner.invoke(
        app, ["features", "build", "--events", str(ev), "--out", str(tmp_path / "o"), *extra]
    )
    assert res.exit_code == 2 and says in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1


def test_spark_master_option_then_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from patron.settings import get_settings
    from patron.spark import master_or_default

    assert master_or_default(None) == "local[*]"
    monkeypatch.setenv("PATRON_SPARK_MASTER", "spark://127.0.0.1:7077")
    get_settings.cache_clear()
    assert master_or_default(None) == "spark://127.0.0.1:7077"
    assert master_or_default("local[2]") == "local[2]"


@pytest.mark.spark
def test_engine_spark_unreadable_events_exit_2(tmp_path: Path) -> None:
    pytest.importorskip("pyspark")
    bad = tmp_path / "events.csv"
    bad.write_text("customer_id,ts\nc1,2024-01-01\n")
    for args in (
        ["features", "build", "--events", str(bad), "--out", str(tmp_path / "f")],
        ["features", "build", "--events", str(tmp_path / "missing"), "--out", str(tmp_path / "f")],
    ):
        res = runner.invoke(app, [*args, "--engine", "spark", "--spark-master", "local[1]"])
        assert res.exit_code == 2, res.output
        assert "cannot read as Parquet" in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "f").exists()
