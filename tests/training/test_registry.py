"""Registry and promotion gate against real MLflow stores (SQLite; PostgreSQL-backed server)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from typer.testing import CliRunner

from patron.cli import app
from tests.services import free_port, missing, postgres_dsn, wait_port
from tests.training.conftest import block_events

pytestmark = pytest.mark.mlflow


def run(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.strip().splitlines()[-1])


def run_fails(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return result.output


@pytest.fixture
def events_file(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    block_events().write_parquet(path)
    return path


def test_train_register_promote_rollback(
    mlflow_uri: str, events_file: Path, tmp_path: Path
) -> None:
    import mlflow

    # v1: popularity only, the first model: champion without a comparison
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({"blend": {"als": 0.0, "copurchase": 0.0, "popular": 1.0}}))
    train = ("train", "--events", str(events_file), "--register", "--no-faiss")
    first = run(*train, "--config", str(weak))
    assert first["model_name"] == "patron-recommender" and first["model_version"] == "1"
    assert Path(first["bundle"], "manifest.json").is_file()
    promoted = run("models", "promote")
    assert promoted["promoted"] and promoted["champion"] == "1"  # first model: no champion yet

    # v2: the default blend, better on the same validation data: promoted, and it leaves
    # the challenger alias (one version never holds both)
    second = run(*train)
    assert second["metrics"]["val_ndcg@10"] > first["metrics"]["val_ndcg@10"] * 1.01
    assert second["metrics"]["val_ndcg@10"] > second["metrics"]["val_popular_ndcg@10"]
    assert run("models", "promote")["champion"] == "2"
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    assert client.get_model_version("patron-recommender", "2").aliases == ["champion"]

    # v3: the same model retrained (same data, same config): not better, refused; a gain
    # the gate cannot see is refused too
    third = run(*train)
    assert third["metrics"]["val_ndcg@10"] == second["metrics"]["val_ndcg@10"]
    assert "is not better than champion 2" in run_fails("models", "promote")
    assert "min_gain must be" in run_fails("models", "promote", "--min-gain", "-0.1")
    # ... --force needs a reason, which is recorded
    assert "--reason" in run_fails("models", "promote", "--force")
    forced = run("models", "promote", "--force", "--reason", "incident 42 drill")
    assert forced["champion"] == "3"
    assert client.get_model_version("patron-recommender", "3").tags["forced_reason"] == (
        "incident 42 drill"
    )

    back = run("models", "rollback")
    assert back["champion"] == "2" and back["rolled_back"] == "3"
    listing = run("models", "list")["versions"]
    assert [v["version"] for v in listing] == ["3", "2", "1"]
    assert [v["aliases"] for v in listing] == [[], ["champion"], []]

    model = mlflow.pyfunc.load_model("models:/patron-recommender@champion")
    picks = model.predict(pd.DataFrame({"customer_id": ["c0_0", "c1_3", "nobody"]}))
    assert set(picks["customer_id"]) == {"c0_0", "c1_3"}
    assert (picks.groupby("customer_id")["rank"].max() == 10).all()
    # c0_0 is in block 0: its top pick comes from block 0's items
    top = picks[(picks.customer_id == "c0_0") & (picks["rank"] == 1)]["item_id"].iloc[0]
    assert top.startswith("i0_")


@pytest.fixture
def mlflow_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A real ``mlflow server`` on loopback with a fresh PostgreSQL database."""
    dsn = postgres_dsn()
    if dsn is None:
        missing("PostgreSQL is not reachable (set PATRON_TEST_POSTGRES_URL)")
    import psycopg2

    assert dsn is not None
    db = f"patron_mlflow_{uuid.uuid4().hex[:10]}"
    admin = psycopg2.connect(dsn)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    base, _, _ = dsn.rpartition("/")
    # SQLAlchemy 2 maps plain postgresql:// to psycopg 3; the project ships psycopg2
    base = base.replace("postgresql://", "postgresql+psycopg2://", 1)
    exe = shutil.which("mlflow", path=os.path.dirname(sys.executable)) or "mlflow"
    port = free_port()
    proc = subprocess.Popen(
        [
            exe,
            "server",
            "--backend-store-uri",
            f"{base}/{db}",
            "--artifacts-destination",
            str(tmp_path / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "wb"),  # noqa: SIM115
    )
    try:
        if not wait_port(port, timeout=90):
            pytest.fail(
                f"mlflow server did not start: {(tmp_path / 'server.log').read_text()[-2000:]}"
            )
        uri = f"http://127.0.0.1:{port}"
        monkeypatch.setenv("PATRON_MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("PATRON_WORK_DIR", str(tmp_path / "work"))
        from patron.settings import get_settings

        get_settings.cache_clear()
        yield uri
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


@pytest.mark.slow  # server start-up runs MLflow's PostgreSQL migrations (tens of seconds)
def test_postgres_backed_server(mlflow_server: str, events_file: Path) -> None:
    import mlflow

    trained = run("train", "--events", str(events_file), "--register", "--no-faiss")
    assert trained["model_version"] == "1"
    assert run("models", "promote")["champion"] == "1"
    mlflow.set_tracking_uri(mlflow_server)
    model = mlflow.pyfunc.load_model("models:/patron-recommender@champion")
    picks = model.predict(pd.DataFrame({"customer_id": ["c2_1"]}))
    assert len(picks) == 10 and picks["item_id"].str.startswith("i2_").iloc[0]


def test_train_neighbours_option(mlflow_uri: str, events_file: Path, tmp_path: Path) -> None:
    """`--neighbours N` precomputes N per customer into the bundle; 0 writes none."""
    from patron.bundle import load_bundle

    run("train", "--events", str(events_file), "--neighbours", "16", "--out", str(tmp_path / "a"))
    a = load_bundle(tmp_path / "a")
    assert a.als_candidates is not None and a.als_candidates.shape == (len(a.customer_ids), 16)
    assert a.manifest.params["als_candidates.depth"] == 16
    run("train", "--events", str(events_file), "--neighbours", "0", "--out", str(tmp_path / "b"))
    b = load_bundle(tmp_path / "b")
    assert b.als_candidates is None and "als_candidates.npy" not in b.manifest.files
    assert "--neighbours" in run_fails("train", "--events", str(events_file), "--neighbours", "-1")


@pytest.mark.redis
def test_promote_require_online_needs_the_ab_verdict(
    mlflow_uri: str,
    events_file: Path,
    tmp_path: Path,
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import time

    from serving.attribution.ids import experiment_of, new_id
    from serving.attribution.store import AnswerRecord, AttributionStore, Outcome
    from tests.services import redis_client

    monkeypatch.setenv("PATRON_REDIS_URL", redis_url)
    monkeypatch.setenv("PATRON_REDIS_NAMESPACE", "gate")
    weak = tmp_path / "weak.json"
    weak.write_text(json.dumps({"blend": {"als": 0.0, "copurchase": 0.0, "popular": 1.0}}))
    train = ("train", "--events", str(events_file), "--register", "--no-faiss")
    run(*train, "--config", str(weak))
    run("models", "promote")
    run(*train)  # v2: better offline
    refused = run_fails("models", "promote", "--require-online")
    assert "online A/B 1~2: not yet decidable" in refused

    # the API's answers and their outcomes: the challenger converts 16%, the champion 10%
    store = AttributionStore(redis_client(redis_url), "gate")
    now, exp = time.time(), experiment_of("1", "2")
    outcomes = []
    for variant, version, converted in (("champion", "1", 100), ("challenger", "2", 160)):
        answers = [
            AnswerRecord(new_id(now), now, exp, variant, version, "r", f"c{i}", ["i1"])
            for i in range(1_000)
        ]
        store.write_answers_sync(answers)
        outcomes += [
            Outcome(a.rec_id, "purchase", f"c{i}", "i1", now + 5, 9.0)
            for i, a in enumerate(answers[:converted])
        ]
    store.record_outcomes_sync(outcomes)
    promoted = run("models", "promote", "--require-online")
    assert promoted["champion"] == "2"
    assert promoted["online"]["verdict"] == "challenger better"
    assert promoted["online"]["experiment"] == "1~2"
