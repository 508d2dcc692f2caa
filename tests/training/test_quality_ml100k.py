"""Protocol (a) end to end: train a bundle on the ML-100K train part, write picks with
``patron recommend``, score them with an independent implementation of the metric definitions
(plain Python, written separately from training/metrics.py), and check the quality bar."""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from patron.cli import app
from tests.training.conftest import to_events
from training.config import TrainConfig
from training.evaluate import evaluate_models, fit_models, prepare
from training.pipeline import train

QUALITY_BAR = 0.4751  # best published row (BiVAE, 0.475077)


def independent_scores(recs_csv: Path, test: pl.DataFrame, k: int = 10) -> dict[str, float]:
    """MAP, nDCG@k (1/ln(1+rank)), P@k, R@k averaged over users with test items."""
    truth: dict[str, set[str]] = defaultdict(set)
    for user, item in test.select("customer_id", "item_id").iter_rows():
        truth[str(user)].add(str(item))
    picks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    with recs_csv.open() as fh:
        for row in csv.DictReader(fh):
            picks[row["customer_id"]].append((int(row["rank"]), row["item_id"]))
    totals = {"map": 0.0, "ndcg": 0.0, "precision": 0.0, "recall": 0.0}
    for user, relevant in truth.items():
        ranked = [item for _, item in sorted(picks.get(user, []))][:k]
        hits, dcg, ap = 0, 0.0, 0.0
        for position, item in enumerate(ranked, start=1):
            if item in relevant:
                hits += 1
                dcg += 1.0 / math.log(1 + position)
                ap += hits / position
        idcg = sum(1.0 / math.log(1 + p) for p in range(1, min(len(relevant), k) + 1))
        totals["ndcg"] += dcg / idcg
        totals["map"] += ap / len(relevant)
        totals["precision"] += hits / k
        totals["recall"] += hits / len(relevant)
    return {name: value / len(truth) for name, value in totals.items()}


def test_recommend_picks_meet_quality_bar(
    ml100k_split: tuple[pl.DataFrame, pl.DataFrame], tmp_path: Path
) -> None:
    train_rows, test_rows = ml100k_split
    bundle = tmp_path / "bundle"
    train(to_events(train_rows), out_dir=bundle, evaluate=False, with_faiss=False)

    out = tmp_path / "recs.csv"
    result = CliRunner().invoke(
        app, ["recommend", "--bundle", str(bundle), "--k", "10", "--no-rules", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["customers"] == 943 and summary["rows"] == 9430

    # picks never contain a training item of that customer
    recs = pl.read_csv(out, schema_overrides={"customer_id": pl.String, "item_id": pl.String})
    seen = train_rows.select("customer_id", "item_id")
    assert recs.join(seen, on=["customer_id", "item_id"]).height == 0

    ours = independent_scores(out, test_rows)
    assert ours["ndcg"] >= QUALITY_BAR, ours

    # the in-process evaluation (training/metrics.py) gives the same numbers
    config = TrainConfig()
    data = prepare(train_rows, test_rows, config=config)
    report = evaluate_models(fit_models(data.inter, config), data)["served"]
    assert report["users"] == 943
    assert report["ndcg@10"] == pytest.approx(ours["ndcg"], abs=1e-9)
    assert report["map"] == pytest.approx(ours["map"], abs=1e-9)
    assert report["precision@10"] == pytest.approx(ours["precision"], abs=1e-9)
    assert report["recall@10"] == pytest.approx(ours["recall"], abs=1e-9)
