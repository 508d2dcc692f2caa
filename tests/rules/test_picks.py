"""Email picks export: consent, formats, atomic output, and equality with the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from features.online import OnlineStore, PurchaseEvent
from serving.attribution.ids import is_id
from serving.attribution.store import AttributionStore
from serving.cli_rules import picks_app
from serving.export import export_picks
from serving.export.frame import OUTPUT_COLUMNS
from serving.model import LoadedModel, load_model
from serving.rules.loader import LoadedRules, fallback_only, load_rules
from tests.services import redis_client
from tests.serving.helpers import customer_id, customers_frame, item_id, items_frame, make_bundle

NS = "picks-test"
TIERS = ["bronze", "silver", "gold", "platinum"]
SEGMENTS = ["regular", "at_risk", "new", "high_value"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bundle(tmp_path_factory.mktemp("picks") / "bundle", seed=0, version="7")


@pytest.fixture(scope="module")
def model(bundle: Path) -> LoadedModel:
    return load_model(bundle)


@pytest.fixture(scope="module")
def rules() -> LoadedRules:
    return load_rules()


def _customers(n: int = 40) -> pl.DataFrame:
    rows = [
        {
            "customer_id": customer_id(u),
            "tier": TIERS[u % 4],
            "segment": SEGMENTS[(u // 4) % 4],
            "churn_risk": 0.9 if (u // 4) % 4 == 1 else 0.1,
            "clv_band": "medium",
            "loyalty_index": 50.0,
            "marketing_consent": [True, True, False, None][u % 4 if u % 8 < 4 else 0],
            "next_tier": None,
            "progress_to_next": None,
            "typical_spend": 30.0,
        }
        for u in range(n)
    ]
    rows.append({**rows[0], "customer_id": "unknown-customer", "marketing_consent": True})
    return customers_frame(rows)


def test_export_respects_consent_and_writes_k_picks(
    model: LoadedModel, rules: LoadedRules, tmp_path: Path
) -> None:
    customers = _customers()
    out = tmp_path / "picks.parquet"
    rep = export_picks(model, customers, out, rules=rules, k=8, batch_size=7)
    got = pl.read_parquet(out)
    consenting = set(customers.filter(pl.col("marketing_consent").fill_null(False))["customer_id"])
    assert set(got["customer_id"]) == consenting
    assert rep.customers_selected == customers.height
    assert rep.skipped_no_consent == customers.height - len(consenting)
    assert rep.written == len(consenting) and rep.rows == got.height
    assert got.columns == list(OUTPUT_COLUMNS)
    assert OUTPUT_COLUMNS[:4] == ("customer_id", "recommendation_id", "rank", "item_id")
    per = got.group_by("customer_id").agg(pl.len(), pl.col("rank").sort())
    assert (per["len"] == 8).all()
    assert all(r == list(range(1, 9)) for r in per["rank"].to_list())
    assert got["reasons"].list.len().min() >= 1
    # rules hold in the export too: no item above the customer's tier
    gold_only = {item_id(j) for j in range(0, 240, 17)}  # min_tier gold in the test bundle
    low = got.filter(pl.col("tier").is_in(["bronze", "silver"]))
    assert not set(low["item_id"]) & gold_only
    assert not list(tmp_path.glob(".*tmp"))


def test_export_filters_formats_and_cli(bundle: Path, tmp_path: Path) -> None:
    feats = tmp_path / "features"
    feats.mkdir()
    _customers().write_parquet(feats / "customers.parquet")
    runner = CliRunner()
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"gold.{fmt}"
        res = runner.invoke(
            picks_app,
            [
                "export",
                "--k",
                "5",
                "--tier",
                "gold",
                "--format",
                fmt,
                "--out",
                str(out),
                "--bundle",
                str(bundle),
                "--features",
                str(feats),
            ],
        )
        assert res.exit_code == 0, res.output
        summary = json.loads(res.stdout.strip().splitlines()[-1])
        assert summary["customers_selected"] == 10
        frame = pl.read_csv(out) if fmt == "csv" else pl.read_ndjson(out)
        assert set(frame["tier"]) == {"gold"}
        assert frame.height == summary["rows"] == 5 * summary["written"]
    bad = runner.invoke(
        picks_app, ["export", "--out", str(tmp_path / "x"), "--bundle", str(bundle)]
    )
    assert bad.exit_code == 2


def test_no_rules_baseline_differs_but_keeps_consent(
    model: LoadedModel, rules: LoadedRules, tmp_path: Path
) -> None:
    customers = _customers()
    a = tmp_path / "rules.parquet"
    b = tmp_path / "norules.parquet"
    export_picks(model, customers, a, rules=rules, k=8)
    rep = export_picks(model, customers, b, rules=None, k=8)
    with_rules, without = pl.read_parquet(a), pl.read_parquet(b)
    assert set(without["customer_id"]) == set(with_rules["customer_id"])
    assert rep.extra["rules_version"] == fallback_only().version
    gold_only = {item_id(j) for j in range(0, 240, 17)}
    bronze = without.filter(pl.col("tier") == "bronze")
    assert set(bronze["item_id"]) & gold_only, "baseline shows exclusives: the rules matter"


# ------------------------------------------------------------------ export == API
@pytest.fixture
def online(redis_url: str) -> Iterator[OnlineStore]:
    client = redis_client(redis_url)
    store = OnlineStore(client, namespace=NS)
    store.publish(_customers(), items_frame(240))
    now = datetime.now(UTC)
    store.record_events(
        [
            PurchaseEvent(customer_id(0), item_id(3), now - timedelta(days=1)),
            PurchaseEvent(customer_id(1), item_id(10), now - timedelta(hours=2)),
        ]
    )
    yield store
    client.close()


def test_export_equals_api(
    bundle: Path,
    model: LoadedModel,
    rules: LoadedRules,
    online: OnlineStore,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import ServingSettings

    out = tmp_path / "picks.parquet"
    rep = export_picks(
        model,
        _customers(),
        out,
        rules=rules,
        k=8,
        read_online=lambda ids: online.read_customers(ids, 20),
        batch_size=5,
        record_answers=AttributionStore(online.r, NS).write_answers_sync,
    )
    exported = pl.read_parquet(out)
    assert rep.written >= 10
    # one recommendation id per customer, on all its rows, its record the rows' items
    per = exported.group_by("customer_id").agg(pl.col("recommendation_id").unique(), "item_id")
    assert per["recommendation_id"].list.len().max() == 1
    rec_ids = per["recommendation_id"].list.first().to_list()
    assert len(set(rec_ids)) == per.height and all(is_id(r) for r in rec_ids)
    first = per.row(0, named=True)
    stored = AttributionStore(online.r, NS).record_sync(first["recommendation_id"][0])
    ranked = exported.filter(pl.col("customer_id") == first["customer_id"]).sort("rank")
    assert stored is not None and stored["i"] == ranked["item_id"].to_list()
    assert stored["v"] == "champion" and stored["m"] == model.version
    settings = ServingSettings(
        bundle=bundle,
        redis_url=redis_url,
        redis_namespace=NS,
        admin_api_key="k" * 16,
        env="test",
    )  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as client:
        checked = 0
        for cid, part in exported.group_by("customer_id", maintain_order=True):
            res = client.get(f"/v1/customers/{cid[0]}/recommendations", params={"k": 8})
            assert res.status_code == 200, res.text
            api = res.json()
            assert [i["item_id"] for i in api["items"]] == part.sort("rank")["item_id"].to_list()
            assert [i["reasons"] for i in api["items"]] == part.sort("rank")["reasons"].to_list()
            assert np.allclose([i["score"] for i in api["items"]], part.sort("rank")["score"])
            checked += 1
        # a purchase of an emailed item, naming the email's id, counts for the email's answer
        bought = {
            "customer_id": first["customer_id"],
            "item_id": ranked["item_id"][0],
            "ts": datetime.now(UTC).isoformat(),
            "unit_price": 12.5,
            "recommendation_id": first["recommendation_id"][0],
        }
        res = client.post("/v1/events", json={"events": [bought]})
        assert res.status_code == 200, res.text
        assert res.json()["attributed"] == 1
    assert checked == rep.written
    # the customer who bought item 3 yesterday does not get it back
    c0 = exported.filter(pl.col("customer_id") == customer_id(0))
    assert item_id(3) not in c0["item_id"].to_list()


def test_unique_rows_matches_numpy() -> None:
    """The hashed row de-duplication used to decode reasons equals np.unique(axis=0)."""
    from serving.export.frame import _unique_rows

    rng = np.random.default_rng(9)
    a = rng.integers(-1, 7, (5_000, 9)).astype(np.int32)
    a[:, 4:] = -1  # few distinct rows, as reason ids are
    combos, inv = _unique_rows(a)
    assert np.array_equal(combos[inv], a)
    want = np.unique(a, axis=0)
    assert len(combos) == len(want)
    assert {tuple(r) for r in combos.tolist()} == {tuple(r) for r in want.tolist()}
    empty, inv0 = _unique_rows(np.zeros((0, 3), np.int32))
    assert empty.shape[0] == 0 and inv0.size == 0


def test_export_on_threads_writes_what_one_thread_writes(
    model: LoadedModel, rules: LoadedRules, tmp_path: Path
) -> None:
    customers = _customers()
    one, many = tmp_path / "one.parquet", tmp_path / "many.parquet"
    a = export_picks(model, customers, one, rules=rules, k=8, batch_size=3, threads=1)
    b = export_picks(model, customers, many, rules=rules, k=8, batch_size=3, threads=3)
    x, y = pl.read_parquet(one), pl.read_parquet(many)
    # same rows, same order; each answer its own recommendation id
    assert x.drop("recommendation_id").equals(y.drop("recommendation_id"))
    assert x["recommendation_id"].n_unique() == y["recommendation_id"].n_unique() == a.written
    assert (a.written, a.rows, a.skipped_no_consent) == (b.written, b.rows, b.skipped_no_consent)
    assert b.extra["threads"] == 3 and a.written > 0
