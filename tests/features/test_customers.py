"""Customer and item feature tables end to end, through the CLI."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from features.customers import COLUMNS
from features.schemas import EVENTS
from features.segments import SEGMENTS
from patron.cli import app
from tests.services import redis_client

START = datetime(2023, 1, 1, tzinfo=UTC)


def synthetic_events(n_customers: int = 400, seed: int = 3) -> pl.DataFrame:
    """Customers with Poisson purchase days over ~18 months; heavy and light buyers."""
    rng = np.random.default_rng(seed)
    rows_c, rows_t, rows_i, rows_q, rows_p = [], [], [], [], []
    for c in range(n_customers):
        first = rng.integers(0, 480)
        rate = rng.gamma(0.7, 1 / 15)  # purchases per day
        life = rng.exponential(200)
        n = 1 + rng.poisson(rate * min(life, 540 - first))
        days = np.sort(first + rng.integers(0, max(1, int(min(life, 540 - first))), n))
        days[0] = first
        for d in days:
            for _ in range(rng.integers(1, 3)):
                rows_c.append(f"u{c:04d}")
                rows_t.append(START + timedelta(days=int(d), hours=int(rng.integers(8, 20))))
                rows_i.append(f"i{rng.zipf(1.6) % 60:02d}")
                rows_q.append(float(rng.integers(1, 3)))
                rows_p.append(float(np.round(rng.gamma(3, 8), 2)))
    df = pl.DataFrame(
        {
            "customer_id": rows_c,
            "item_id": rows_i,
            "ts": rows_t,
            "quantity": rows_q,
            "unit_price": rows_p,
            "order_id": None,
            "channel": None,
        },
        schema=EVENTS,
    )
    # one return
    ret = df.head(1).with_columns(quantity=-1.0, ts=pl.col("ts") + timedelta(days=2))
    return pl.concat([df, ret])


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, object]]:
    d = tmp_path_factory.mktemp("feat")
    ev = synthetic_events()
    ev.write_parquet(d / "events.parquet")
    pl.DataFrame(
        {
            "item_id": [f"i{i:02d}" for i in range(60)],
            "category": [f"cat{i % 6}" for i in range(60)],
            "in_stock": [i % 7 != 0 for i in range(60)],
            "min_tier": [("gold" if i % 10 == 0 else None) for i in range(60)],
        }
    ).write_parquet(d / "catalog.parquet")
    pl.DataFrame(
        {
            "customer_id": ["u0000", "u0001", "u0002"],
            "marketing_consent": [True, False, None],
            "nps": [10.0, 0.0, None],
            "tier_floor": ["platinum", None, None],
        }
    ).write_parquet(d / "people.parquet")
    res = CliRunner().invoke(
        app,
        [
            "features",
            "build",
            "--events",
            str(d / "events.parquet"),
            "--catalog",
            str(d / "catalog.parquet"),
            "--customers",
            str(d / "people.parquet"),
            "--out",
            str(d / "out"),
        ],
    )
    assert res.exit_code == 0, res.output
    return d, json.loads(res.stdout.strip().splitlines()[-1])


def test_customer_table_columns_and_ranges(built: tuple[Path, dict[str, object]]) -> None:
    d, info = built
    df = pl.read_parquet(d / "out" / "customers.parquet")
    assert tuple(df.columns) == COLUMNS
    assert df.height == 400 == info["customers"]
    assert df["customer_id"].is_unique().all()
    for col in ("r_score", "f_score", "m_score"):
        assert df[col].min() == 1 and df[col].max() == 5
    assert df["loyalty_index"].is_between(0, 100).all()
    assert df["p_alive"].is_between(0, 1).all() and df["p_alive"].null_count() == 0
    assert (df["churn_risk"] + df["p_alive"] - 1).abs().max() < 1e-12
    assert (df["clv"] >= 0).all() and (df["expected_spend"] > 0).all()
    assert set(df["segment"].unique()) <= set(SEGMENTS)
    assert set(df["clv_band"].unique()) == {"low", "medium", "high", "top"}
    assert (
        df.filter(pl.col("clv_band") == "top")["clv"].min()
        >= df.filter(pl.col("clv_band") == "high")["clv"].max()
    )
    assert info["bgnbd"] and info["gamma_gamma"]  # type: ignore[truthy-bool]


def test_consent_nps_floor_carried_through(built: tuple[Path, dict[str, object]]) -> None:
    d, _ = built
    df = pl.read_parquet(d / "out" / "customers.parquet").sort("customer_id")
    assert df["marketing_consent"].head(3).to_list() == [True, False, False]
    assert df["marketing_consent"].sum() == 1  # absent = no consent
    assert df["tier"][0] == "platinum"  # manual floor
    assert df["nps"].head(2).to_list() == [10.0, 0.0]


def test_segment_rules_hold(built: tuple[Path, dict[str, object]]) -> None:
    d, _ = built
    df = pl.read_parquet(d / "out" / "customers.parquet")
    new = df.filter(pl.col("segment") == "new")
    assert (new["tenure_days"] < 90).all()
    risk = df.filter(pl.col("segment") == "at_risk")
    assert ((risk["churn_risk"] >= 0.5) | (risk["recency_days"] >= 180)).all()
    rest = df.filter(pl.col("segment").is_in(["regular", "high_value"]))
    assert (rest["churn_risk"] < 0.5).all() and (rest["tenure_days"] >= 90).all()
    # recent heavy buyers are more loyal than lapsed one-time buyers
    assert (
        df.filter(pl.col("segment") == "high_value")["loyalty_index"].mean()
        > df.filter(pl.col("segment") == "at_risk")["loyalty_index"].mean()
    )


def test_items_table(built: tuple[Path, dict[str, object]]) -> None:
    d, _ = built
    items = pl.read_parquet(d / "out" / "items.parquet")
    assert items.height == 60  # every catalog item, bought or not
    for col in (
        "popularity",
        "trending",
        "buyers",
        "in_stock",
        "min_tier",
        "category_repeat_rate",
        "category_repurchase_days",
    ):
        assert col in items.columns
    assert any(c.startswith("buyers_tier_") for c in items.columns)
    assert any(c.startswith("buyers_segment_") for c in items.columns)
    assert items["category_repeat_rate"].drop_nulls().is_between(0, 1).all()
    top = items.sort("buyers", descending=True)["item_id"][0]
    assert top == "i01"  # zipf: item 1 is the most bought


def test_as_of_and_previous(built: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    d, _ = built
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "features",
            "build",
            "--events",
            str(d / "events.parquet"),
            "--as-of",
            "2024-01-31",
            "--previous",
            str(d / "out" / "customers.parquet"),
            "--out",
            str(tmp_path),
        ],
    )
    assert res.exit_code == 0, res.output
    df = pl.read_parquet(tmp_path / "customers.parquet")
    assert df["last_purchase"].max() <= datetime(2024, 2, 1, tzinfo=UTC)
    bad = runner.invoke(
        app, ["features", "build", "--events", str(d / "nope.parquet"), "--out", str(tmp_path)]
    )
    assert bad.exit_code == 2 and "not found" in bad.output


def test_unknown_floor_is_rejected(built: tuple[Path, dict[str, object]], tmp_path: Path) -> None:
    d, _ = built
    pl.DataFrame({"customer_id": ["u0000"], "tier_floor": ["diamond"]}).write_parquet(
        tmp_path / "p.parquet"
    )
    res = CliRunner().invoke(
        app,
        [
            "features",
            "build",
            "--events",
            str(d / "events.parquet"),
            "--customers",
            str(tmp_path / "p.parquet"),
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert res.exit_code == 2 and "diamond" in res.output


def test_publish_cli(built: tuple[Path, dict[str, object]], redis_url: str) -> None:
    d, _ = built
    res = CliRunner().invoke(
        app, ["features", "publish", "--features", str(d / "out"), "--redis-url", redis_url]
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["customers"] == 400 and out["items"] == 60

    from features.online import OnlineStore

    store = OnlineStore(redis_client(redis_url), namespace="patron")
    row = pl.read_parquet(d / "out" / "customers.parquet").row(0, named=True)
    c = store.read_customer(row["customer_id"])
    assert c.known and c.tier == row["tier"] and c.segment == row["segment"]
    assert c.marketing_consent == row["marketing_consent"]
    assert c.loyalty_index == pytest.approx(row["loyalty_index"])
    assert c.churn_risk == pytest.approx(row["churn_risk"], abs=5e-4)
    flags = store.read_item_flags()
    assert flags.filter(pl.col("min_tier") == "gold").height == 6


def test_unknown_prices_fall_back_to_catalog() -> None:
    from features.customers import build_customers
    from features.tiers import DEFAULT_RULES

    ev = synthetic_events(60).with_columns(unit_price=pl.lit(None, dtype=pl.Float64))
    cat = pl.LazyFrame({"item_id": [f"i{i:02d}" for i in range(60)], "price": [2.0] * 60})
    as_of = ev["ts"].max()
    df, _ = build_customers(ev.lazy(), as_of, DEFAULT_RULES, cat)  # type: ignore[arg-type]
    units = ev.group_by("customer_id").agg(pl.col("quantity").sum())
    got = df.join(units, on="customer_id").select(pl.col("monetary_total") - 2 * pl.col("quantity"))
    assert got.to_series().abs().max() < 1e-9
    assert (df["typical_spend"] == 2.0).all()


def test_too_little_history_leaves_clv_null() -> None:
    from features.customers import build_customers
    from features.tiers import DEFAULT_RULES

    ev = synthetic_events(400).filter(pl.col("customer_id").is_in(["u0001", "u0002"]))
    df, info = build_customers(ev.lazy(), ev["ts"].max(), DEFAULT_RULES)  # type: ignore[arg-type]
    assert "clv_error" in info and "at least 20 customers" in str(info["clv_error"])
    assert df["clv"].null_count() == df.height == 2
    assert df["clv_band"].null_count() == 2 and df["churn_risk"].null_count() == 2
    assert df["tier"].null_count() == 0 and df["segment"].null_count() == 0
