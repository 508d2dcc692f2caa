"""Bad input to the training commands: one-line message, exit code 2, nothing written."""

from __future__ import annotations

from pathlib import Path

import polars as pl
from typer.testing import CliRunner

from patron.cli import app


def _fails(*args: str) -> str:
    result = CliRunner().invoke(app, list(args))
    assert result.exit_code == 2, result.output
    return result.output


def test_train_missing_events(tmp_path: Path) -> None:
    out = _fails("train", "--events", str(tmp_path / "nope.parquet"), "--out", str(tmp_path / "b"))
    assert "not found" in out
    assert not (tmp_path / "b").exists()


def test_train_wrong_columns(tmp_path: Path) -> None:
    path = tmp_path / "e.parquet"
    pl.DataFrame({"user": ["a"], "thing": ["x"]}).write_parquet(path)
    assert "customer_id" in _fails("train", "--events", str(path), "--out", str(tmp_path / "b"))
    assert not (tmp_path / "b").exists()


def test_recommend_rejects_tampered_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{not json")
    out = _fails(
        "recommend", "--bundle", str(bundle), "--no-rules", "--out", str(tmp_path / "r.csv")
    )
    assert "manifest" in out
    assert not (tmp_path / "r.csv").exists()


def test_evaluate_unknown_protocol() -> None:
    assert "ml100k or temporal" in _fails("evaluate", "--protocol", "bogus")
