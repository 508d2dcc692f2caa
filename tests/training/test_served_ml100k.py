"""What the API serves is what evaluation measures, on the ML-100K protocol (a).

One bundle, trained as ``patron train`` trains it (FAISS index, precomputed neighbours), asked
two ways: ``patron recommend --no-rules`` (the scoring library) and a real ``patron serve``
process over TCP for every test user, with a rules file that keeps only the fallback chain.
The answers must be the same items in the same order, and the served nDCG@10 must reach the
best published row (BiVAE) and match the in-process evaluation. The default rules are
measured too (the share of test hits they remove is printed, not asserted: it is a product
choice, not a quality bar).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
import redis
import yaml
from typer.testing import CliRunner

from patron.cli import app
from serving.rules.loader import DEFAULT_RULES_FILE, FALLBACK_ONLY
from tests.services import free_port
from tests.serving.helpers import customers_frame, items_frame, sync_store
from tests.serving.test_uvicorn import start_server, wait_ready
from tests.training.conftest import to_events
from tests.training.test_quality_ml100k import QUALITY_BAR, independent_scores
from training.config import TrainConfig
from training.evaluate import evaluate_models, fit_models, prepare
from training.pipeline import train

pytestmark = [pytest.mark.slow, pytest.mark.redis]


def _served(
    bundle: Path, rules: Path, redis_url: str, users: list[str]
) -> Iterator[dict[str, object]]:
    # a published feature version with no customers: every user is answered from the
    # bundle and their training history, as `patron recommend` does (without a published
    # version the API would answer degraded and not be ready)
    client = redis.Redis.from_url(redis_url)
    sync_store(client, "served-ml100k").publish(customers_frame([]), items_frame(0))
    client.close()
    port = free_port()
    proc = start_server(
        {
            "PATRON_BUNDLE": str(bundle),
            "PATRON_REDIS_URL": redis_url,
            "PATRON_REDIS_NAMESPACE": "served-ml100k",
            "PATRON_RULES_FILE": str(rules),
            "PATRON_ADMIN_API_KEY": "k" * 16,
            "PATRON_ENV": "test",
        },
        port,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, timeout=60)
        with httpx.Client(base_url=base, timeout=10) as client:
            for u in users:
                r = client.get(f"/v1/customers/{u}/recommendations", params={"k": 10})
                assert r.status_code == 200, r.text
                yield r.json()
    finally:
        proc.terminate()
        proc.wait(10)


def _write(path: Path, answers: dict[str, list[str]]) -> Path:
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["customer_id", "rank", "item_id"])
        for u, items in answers.items():
            w.writerows((u, r, i) for r, i in enumerate(items, start=1))
    return path


def _hits(answers: dict[str, list[str]], test: pl.DataFrame) -> int:
    truth = set(test.select(pl.col("customer_id").cast(pl.String), "item_id").iter_rows())
    return sum((u, i) in truth for u, items in answers.items() for i in items)


def test_api_serves_what_evaluation_measures(
    ml100k_split: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path, redis_url: str
) -> None:
    train_rows, test_rows = ml100k_split
    test_rows = test_rows.with_columns(pl.col("item_id").cast(pl.String))
    bundle = tmp_path / "bundle"
    train(to_events(train_rows), out_dir=bundle, evaluate=False)  # as `patron train` writes it

    recs = tmp_path / "recs.csv"
    result = CliRunner().invoke(
        app, ["recommend", "--bundle", str(bundle), "--k", "10", "--no-rules", "--out", str(recs)]
    )
    assert result.exit_code == 0, result.output
    library: dict[str, list[str]] = {}
    with recs.open() as fh:
        for row in csv.DictReader(fh):
            library.setdefault(row["customer_id"], []).append(row["item_id"])
    users = sorted(library, key=int)
    assert len(users) == 943

    fallback_rules = tmp_path / "fallback.yaml"
    fallback_rules.write_text(yaml.safe_dump(FALLBACK_ONLY))
    api: dict[str, list[str]] = {}
    for u, body in zip(users, _served(bundle, fallback_rules, redis_url, users), strict=True):
        assert body["variant"] == "champion" and body["customer_id"] == u
        api[u] = [it["item_id"] for it in body["items"]]  # type: ignore[attr-defined]
    mismatched = [u for u in users if api[u] != library[u]]
    assert not mismatched, f"{len(mismatched)} customers differ, e.g. {mismatched[:3]}"

    served = independent_scores(_write(tmp_path / "api.csv", api), test_rows)
    config = TrainConfig()
    data = prepare(train_rows, test_rows, config=config)
    evaluated = evaluate_models(fit_models(data.inter, config), data)["served"]["ndcg@10"]
    print(f"\nML-100K served nDCG@10: API {served['ndcg']:.4f}, patron evaluate {evaluated:.4f}")
    assert served["ndcg"] >= QUALITY_BAR
    assert abs(served["ndcg"] - evaluated) <= 0.003

    ruled = {
        u: [it["item_id"] for it in body["items"]]  # type: ignore[attr-defined]
        for u, body in zip(
            users, _served(bundle, DEFAULT_RULES_FILE, redis_url, users), strict=True
        )
    }
    with_rules = independent_scores(_write(tmp_path / "rules.csv", ruled), test_rows)
    removed = 1 - _hits(ruled, test_rows) / max(_hits(api, test_rows), 1)
    print(
        f"default rules: nDCG@10 {with_rules['ndcg']:.4f}, "
        f"{removed:.1%} of the fallback-only test hits removed"
    )
    (tmp_path / "summary.json").write_text(
        json.dumps({"served": served, "evaluated": evaluated, "default_rules": with_rules})
    )
