"""Dataset adapters: ML-100K (and CDNOW through the CLI) into the input contracts."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from features.adapters.ml100k import read_ml100k, read_ml100k_ratings
from features.schemas import CATALOG, EVENTS


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
