"""Predictive validity of the loyalty index (features/index_validity.py) and calibrated
weights: the lift arithmetic, the weight checks, recovery of a planted weighting, and the
CLI end to end on the CDNOW sample (report, weights file, ``features build`` using it)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from features import index_validity as iv
from features.loyalty import BEHAVIOURAL_WEIGHTS, check_weights
from patron.cli import app


def test_top_decile_lift() -> None:
    score = np.arange(100.0)
    only_top = np.where(score >= 90, 1.0, 0.0)
    assert iv.top_decile_lift(score, only_top) == pytest.approx(10.0)
    assert iv.top_decile_lift(score, np.ones(100)) == pytest.approx(1.0)
    assert np.isnan(iv.top_decile_lift(score, np.zeros(100)))


def test_check_weights() -> None:
    w = check_weights({"frequency": 2.0, "recency_days": 2.0})
    assert w["frequency"] == w["recency_days"] == 0.5 and sum(w.values()) == pytest.approx(1)
    with pytest.raises(ValueError, match="unknown index measures"):
        check_weights({"shoe_size": 1.0})
    with pytest.raises(ValueError, match=">= 0"):
        check_weights({"frequency": -1.0})
    with pytest.raises(ValueError, match="all be 0"):
        check_weights({"frequency": 0.0})


def test_calibration_recovers_a_planted_weighting() -> None:
    """Holdout spend follows frequency alone (plus noise): the weights move onto it, and on
    the other half the calibrated index predicts better than today's weights."""
    rng = np.random.default_rng(3)
    n = 4_000
    cols = {m: rng.random(n) * 100 for m in BEHAVIOURAL_WEIGHTS}
    table = pl.DataFrame(
        {
            "customer_id": [f"c{i}" for i in range(n)],
            **cols,
            "r_score": rng.integers(1, 6, n),
            "f_score": rng.integers(1, 6, n),
            "m_score": rng.integers(1, 6, n),
            "loyalty_index": rng.random(n) * 100,
            "clv": rng.random(n),
        }
    )
    outcomes = pl.DataFrame(
        {
            "customer_id": table["customer_id"],
            "holdout_purchases": rng.poisson(1, n).astype(np.uint32),
            "holdout_spend": cols["frequency"] + rng.normal(0, 10, n),
        }
    )
    fit, check = iv.halves(iv.with_outcomes(table, outcomes))
    assert 1_800 < fit.height < 2_200 and fit.height + check.height == n
    weights = iv.calibrate_weights(fit)
    assert weights["frequency"] > 0.8 and sum(weights.values()) == pytest.approx(1, abs=1e-3)
    default = {m: w for m, (w, _) in BEHAVIOURAL_WEIGHTS.items()}
    tuned = iv.report(check, weights)["loyalty_index"]["spearman_spend"]
    assert tuned > iv.report(check, default)["loyalty_index"]["spearman_spend"] + 0.2


def _run(*args: str) -> dict[str, object]:
    res = CliRunner().invoke(app, list(args))
    assert res.exit_code == 0, res.output
    return dict(json.loads(res.stdout.strip().splitlines()[-1]))


def test_calibrate_index_cli_and_build_with_its_weights(cdnow_sample: Path, tmp_path: Path) -> None:
    weights_file = tmp_path / "w.json"
    dates = ["--calibration-end", "1997-09-30", "--holdout-end", "1998-06-30"]
    out = _run(
        "features", "calibrate-index", "--events", str(cdnow_sample), *dates,
        "--out", str(weights_file),
    )  # fmt: skip
    assert out["customers"] == 2357
    overall = out["all_customers_default_weights"]
    assert isinstance(overall, dict)
    for score in ("loyalty_index", "rfm_score", "clv"):
        assert overall[score]["spearman_spend"] > 0.3  # each says something about next year
        assert overall[score]["top_decile_lift_spend"] > 2.0
    check = out["check_half"]
    assert isinstance(check, dict) and set(check) == {
        "customers",
        "default_weights",
        "calibrated_weights",
    }
    weights = json.loads(weights_file.read_text())["weights"]
    assert weights == out["calibrated_weights"] and min(weights.values()) >= 0

    base = ["features", "build", "--events", str(cdnow_sample), "--as-of", "1997-09-30"]
    _run(*base, "--out", str(tmp_path / "default"))
    _run(*base, "--out", str(tmp_path / "tuned"), "--index-weights", str(weights_file))
    a = pl.read_parquet(tmp_path / "default" / "customers.parquet").sort("customer_id")
    b = pl.read_parquet(tmp_path / "tuned" / "customers.parquet").sort("customer_id")
    assert a["loyalty_index"].to_list() != b["loyalty_index"].to_list()
    ranked = iv.with_outcomes(b, pl.DataFrame(schema=iv.holdout_outcomes_schema()))
    np.testing.assert_allclose(b["loyalty_index"], iv.index_with(ranked, weights), atol=0.051)

    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"weights": {"shoe_size": 1}}))
    res = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "x"), "--index-weights", str(bad)]
    )
    assert res.exit_code == 2 and "unknown index measures" in res.output
