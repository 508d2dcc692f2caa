"""Dataset adapters: ML-100K (and CDNOW through the CLI) into the input contracts."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from features.adapters.ml100k import read_ml100k, read_ml100k_ratings
from features.schemas import CATALOG, EVENTS
from features.validation import validate
from patron.cli import app


@pytest.fixture(scope="module")
def ml100k(data_dir: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    return read_ml100k(data_dir / "ml-100k")


def test_ml100k_events_follow_contract_and_file_order(
    ml100k: tuple[pl.DataFrame, pl.DataFrame], data_dir: Path
) -> None:
    events, _ = ml100k
    assert dict(events.schema) == EVENTS
    assert events.height == 100_000
    assert events["customer_id"].n_unique() == 943
    assert events["item_id"].n_unique() == 1682
    assert (events["quantity"] == 1.0).all()
    # first data line of the file: 196 242 3 881250949
    first = events.row(0, named=True)
    assert (first["customer_id"], first["item_id"]) == ("196", "242")
    assert int(first["ts"].timestamp()) == 881250949
    ratings = read_ml100k_ratings(data_dir / "ml-100k")
    assert ratings.columns == ["user_id", "item_id", "rating", "timestamp"]
    assert ratings["item_id"].equals(events["item_id"])
    assert ratings["rating"].is_between(1, 5).all()


def test_ml100k_catalog_synthetic_fields(ml100k: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    events, catalog = ml100k
    assert dict(catalog.schema) == CATALOG
    assert catalog.height == 1682 and catalog["item_id"].is_unique().all()
    assert catalog.filter(pl.col("item_id") == "1")["category"].item() == "Animation"
    n = catalog.height
    assert 0.90 < catalog["in_stock"].mean() < 0.99  # type: ignore[operator]
    assert 0.02 * n < catalog["min_tier"].is_not_null().sum() < 0.09 * n
    assert set(catalog["min_tier"].drop_nulls()) <= {"silver", "gold", "platinum"}
    assert catalog.filter(pl.col("min_tier").is_not_null())["premium"].all()
    assert (catalog["price"] > 0).all()
    # unit_price of each event is its item's catalog price
    joined = events.join(catalog, on="item_id", how="left")
    assert (joined["unit_price"] == joined["price"]).all()


def test_ml100k_synthetic_catalog_is_seeded(data_dir: Path) -> None:
    a = read_ml100k(data_dir / "ml-100k", seed=7)[1]
    b = read_ml100k(data_dir / "ml-100k", seed=7)[1]
    c = read_ml100k(data_dir / "ml-100k", seed=8)[1]
    assert a.equals(b)
    assert not a["price"].equals(c["price"])


def test_ml100k_missing_dir_is_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"ml-100k\.item"):
        read_ml100k(tmp_path)


# ---- the import commands -----------------------------------------------------------------------

runner = CliRunner()


def _last_json(output: str) -> dict[str, object]:
    return json.loads([ln for ln in output.splitlines() if ln.strip()][-1])  # type: ignore[no-any-return]


def test_cli_import_ml100k_defaults_to_data_dir(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATRON_DATA_DIR", str(data_dir))
    out, cat = tmp_path / "ev.parquet", tmp_path / "cat.parquet"
    res = runner.invoke(
        app, ["data", "import", "ml-100k", "--out", str(out), "--catalog-out", str(cat)]
    )
    assert res.exit_code == 0, res.output
    summary = _last_json(res.stdout)
    assert summary["events"] == 100_000 and summary["customers"] == 943
    assert dict(pl.read_parquet(out).schema) == EVENTS
    assert dict(pl.read_parquet(cat).schema) == CATALOG


def test_cli_import_ml100k_bad_dir(tmp_path: Path) -> None:
    res = runner.invoke(
        app, ["data", "import", "ml-100k", str(tmp_path), "--out", str(tmp_path / "o.parquet")]
    )
    assert res.exit_code == 2
    assert "ml-100k.item" in res.output and "not found" in res.output


@pytest.mark.parametrize(
    ("name", "customers"), [("CDNOW_sample.txt", 2357), ("CDNOW_master.txt", 23570)]
)
def test_cli_import_cdnow_both_layouts(
    data_dir: Path, tmp_path: Path, name: str, customers: int
) -> None:
    pytest.importorskip(
        "features.adapters.cdnow",
        reason="features/adapters/cdnow.py (read_cdnow) is not merged into this branch yet",
    )
    src = data_dir / "cdnow" / name
    lines = sum(1 for ln in src.read_text().splitlines() if ln.strip() and ln.split()[0].isdigit())
    out = tmp_path / "cdnow.parquet"
    res = runner.invoke(app, ["data", "import", "cdnow", str(src), "--out", str(out)])
    assert res.exit_code == 0, res.output
    events = pl.read_parquet(out)
    assert dict(events.schema) == EVENTS
    assert events.height == lines == _last_json(res.stdout)["events"]
    assert events["customer_id"].n_unique() == customers
    assert events["item_id"].is_null().all()
    # validation treats it as transaction-only data: nothing is rejected for a missing item
    summary = validate(events, None).summary
    assert summary["transaction_only"] and "missing_item_id" not in summary["reasons"]
    assert summary["read"] == summary["accepted"] + summary["quarantined"]


def test_cli_import_cdnow_missing_file(tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        [
            "data",
            "import",
            "cdnow",
            str(tmp_path / "nope.txt"),
            "--out",
            str(tmp_path / "o.parquet"),
        ],
    )
    assert res.exit_code == 2
    assert "nope.txt" in res.output


def test_cdnow_identical_lines_are_separate_transactions(tmp_path: Path) -> None:
    from features.adapters.cdnow import read_cdnow
    from features.validation import validate

    f = tmp_path / "cdnow.txt"
    f.write_text("00001 19970101 1 11.77\n00001 19970101 1 11.77\n00002 19970102 2 20.00\n")
    events = read_cdnow(f)
    assert events["order_id"].n_unique() == 3
    result = validate(events, None)
    assert result.summary["accepted"] == 3 and result.summary["quarantined"] == 0
