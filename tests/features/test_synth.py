"""Synthetic generator: contracts, determinism, and the structure it promises."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from features.io import read_catalog
from features.schemas import CATALOG, CUSTOMERS, EVENTS
from features.synth import CATEGORIES, SynthConfig, generate
from features.validation import validate
from patron.cli import app

CFG = SynthConfig(customers=3_000, items=800, events=60_000, seed=11)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, ...]:
    out = tmp_path_factory.mktemp("synth")
    summary = generate(CFG, out)
    assert summary["events"] == CFG.events
    return tuple(pl.read_parquet(out / f"{f}.parquet") for f in ("events", "catalog", "customers"))  # type: ignore[return-value]


def test_schemas_and_sizes(synth: tuple[pl.DataFrame, ...]) -> None:
    events, catalog, customers = synth
    assert dict(events.schema) == EVENTS and events.height == CFG.events
    assert dict(catalog.schema) == CATALOG and catalog.height == CFG.items
    assert dict(customers.schema) == CUSTOMERS and customers.height == CFG.customers
    assert catalog["item_id"].is_unique().all() and customers["customer_id"].is_unique().all()
    # every customer buys at least once when events >= customers
    assert events["customer_id"].n_unique() == CFG.customers
    assert set(events["item_id"].unique()) <= set(catalog["item_id"])
    lo, hi = events["ts"].min(), events["ts"].max()
    assert lo >= CFG.start and hi < CFG.end  # type: ignore[operator]


def test_events_pass_validation(synth: tuple[pl.DataFrame, ...], tmp_path: Path) -> None:
    events, catalog, _ = synth
    result = validate(events, catalog, now=CFG.end)
    assert result.summary["quarantined"] == 0, result.summary["reasons"]
    assert result.summary["returns"] > 0  # some purchases are sent back


def test_same_seed_same_files(tmp_path: Path) -> None:
    small = SynthConfig(customers=500, items=100, events=5_000, seed=3)
    generate(small, tmp_path / "a")
    generate(small, tmp_path / "b")
    generate(SynthConfig(customers=500, items=100, events=5_000, seed=4), tmp_path / "c")
    for name in ("events", "catalog", "customers"):
        a = pl.read_parquet(tmp_path / "a" / f"{name}.parquet")
        assert a.equals(pl.read_parquet(tmp_path / "b" / f"{name}.parquet"))
    other = pl.read_parquet(tmp_path / "c" / "events.parquet")
    assert not other.equals(pl.read_parquet(tmp_path / "a" / "events.parquet"))


def test_item_popularity_is_power_law(synth: tuple[pl.DataFrame, ...]) -> None:
    events, _, _ = synth
    counts = np.sort(events.group_by("item_id").len()["len"].to_numpy())[::-1]
    top_share = counts[: len(counts) // 10].sum() / counts.sum()
    assert top_share > 0.4  # the top 10% of items take ~half the purchases (uniform: 10%)
    # log-log slope of rank vs count over the head is clearly negative, Zipf-like
    ranks = np.arange(1, 101)
    slope = np.polyfit(np.log(ranks), np.log(counts[:100]), 1)[0]
    assert -1.6 < slope < -0.4


def test_customer_activity_heterogeneous(synth: tuple[pl.DataFrame, ...]) -> None:
    per = synth[0].group_by("customer_id").len()["len"].to_numpy()
    assert per.std() / per.mean() > 0.8  # Poisson with one rate would give ~0.2 here


def test_category_affinity(synth: tuple[pl.DataFrame, ...]) -> None:
    events, catalog, _ = synth
    ev = events.join(catalog.select("item_id", "category"), on="item_id")
    top_share = (
        ev.group_by("customer_id", "category")
        .len()
        .group_by("customer_id")
        .agg((pl.col("len").max() / pl.col("len").sum()).alias("share"), pl.col("len").sum())
        .filter(pl.col("len") >= 20)["share"]
        .median()
    )
    assert top_share is not None and top_share > 0.35  # 20 categories; uniform would be ~0.1


def test_consumables_are_rebought_on_a_cycle(synth: tuple[pl.DataFrame, ...]) -> None:
    events, catalog, _ = synth
    consumable = [c[0] for c in CATEGORIES if c[1]]
    ev = events.filter(pl.col("quantity") > 0).join(catalog, on="item_id")
    repeat = (
        ev.group_by("customer_id", "item_id", "category")
        .len()
        .with_columns(pl.col("category").is_in(consumable).alias("consumable"))
        .group_by("consumable")
        .agg((pl.col("len") >= 3).mean().alias("repeat3"))
        .sort("consumable")
    )
    non, cons = repeat["repeat3"].to_list()
    assert cons > 2 * non  # same item bought 3+ times far more often for consumables
    gaps = (
        ev.filter(pl.col("category") == "grocery")
        .sort("customer_id", "item_id", "ts")
        .with_columns(
            pl.col("ts").diff().over("customer_id", "item_id").dt.total_days().alias("gap")
        )
        .filter(pl.col("gap").is_not_null() & (pl.col("gap") > 0))["gap"]
    )
    assert 5 <= gaps.median() <= 10  # type: ignore[operator]  # weekly grocery cycle


def test_orders_group_items_and_seasonality(synth: tuple[pl.DataFrame, ...]) -> None:
    events = synth[0].filter(pl.col("quantity") > 0)
    per_order = events.group_by("order_id").agg(
        pl.len(), pl.col("customer_id").n_unique().alias("custs"), pl.col("ts").n_unique()
    )
    assert (per_order["custs"] == 1).all() and (per_order["ts"] == 1).all()
    assert 1.2 < per_order["len"].mean() < 2.5  # type: ignore[operator]
    by_month = events.group_by(pl.col("ts").dt.month().alias("m")).len()
    m = dict(by_month.iter_rows())
    assert m[12] > 1.4 * m[6]  # holiday peak


def test_customers_consent_and_nps(synth: tuple[pl.DataFrame, ...]) -> None:
    customers = synth[2]
    assert 0.65 < customers["marketing_consent"].mean() < 0.75  # type: ignore[operator]
    nps = customers["nps"]
    assert 0.25 < nps.is_not_null().mean() < 0.35  # type: ignore[operator]
    assert nps.drop_nulls().is_between(0, 10).all()
    assert (customers["signup_at"] < CFG.end).all()


def test_cli_synth(tmp_path: Path) -> None:
    args = ["--customers", "200", "--items", "50", "--events", "1000", "--seed", "1"]
    res = CliRunner().invoke(app, ["data", "synth", *args, "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["events"] == 1000
    assert pl.read_parquet(tmp_path / "events.parquet").height == 1000
    assert read_catalog(tmp_path / "catalog.parquet").height == 50
    bad = CliRunner().invoke(app, ["data", "synth", "--customers", "0", "--out", str(tmp_path)])
    assert bad.exit_code == 2
