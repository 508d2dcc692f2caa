from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from training.splits import stratified_split, temporal_split


def test_ml100k_protocol_counts(ml100k_split: tuple[pl.DataFrame, pl.DataFrame]) -> None:
    train, test = ml100k_split
    assert (train.height, test.height) == (75_066, 24_934)
    assert train.join(test, on=["customer_id", "item_id"]).height == 0
    assert test["customer_id"].n_unique() == 943


def test_stratified_split_per_group_round_half_even() -> None:
    # item a: 2 rows -> round(1.5) = 2 train; item b: 6 rows -> round(4.5) = 4 train
    rows = pl.DataFrame(
        {"customer_id": [str(u) for u in range(8)], "item_id": ["a"] * 2 + ["b"] * 6}
    )
    train, test = stratified_split(rows, ratio=0.75, seed=1)
    counts = dict(train.group_by("item_id").len().iter_rows())
    assert counts == {"a": 2, "b": 4}
    assert test.height == 2


def test_temporal_split_holds_out_latest() -> None:
    ts = [datetime(2024, 1, d, tzinfo=UTC) for d in range(1, 11)]
    rows = pl.DataFrame(
        {
            "customer_id": ["x"] * 10 + ["y"],
            "item_id": [str(i) for i in range(11)],
            "ts": [*ts, ts[0]],
        }
    )
    train, test = temporal_split(rows, test_fraction=0.2)
    assert sorted(test["item_id"].to_list()) == ["8", "9"]
    assert "10" in train["item_id"].to_list()  # single-purchase customer stays in train
    assert train["ts"].filter(train["customer_id"] == "x").max() < test["ts"].min()
