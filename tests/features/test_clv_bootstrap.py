"""Bootstrap intervals (features/clv_bootstrap.py): they hold the estimate, narrow with more
customers, cover the truth on simulated customers, and reach the feature table and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from benchmarks import features_scale
from features import clv_bootstrap as cb
from features.clv_fit import fit_bgnbd
from features.customers import COLUMNS, INTERVAL_COLUMNS
from patron.cli import app


def simulate_bgnbd(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """The benchmark's BG/NBD customers (r 0.6, alpha 5, a 0.8, b 2.5), with spend."""
    x, t_x, T = features_scale.simulate_bgnbd(n, seed)
    m = np.where(x > 0, np.random.default_rng(seed).gamma(6.0, 1 / 3.0, n) * 10, np.nan)
    return x, t_x, T, m


def test_intervals_hold_the_estimate_and_narrow_with_more_customers() -> None:
    widths = []
    for n in (1_500, 6_000):
        x, t_x, T, m = simulate_bgnbd(n, seed=n)
        draws = cb.bootstrap(x, t_x, T, m, draws=30, seed=1, models=("bgnbd",))
        box = cb.param_intervals(draws, 95)["bgnbd"]
        est = fit_bgnbd(x, t_x, T)
        for key in ("r", "alpha", "a", "b"):
            assert box[key][0] <= getattr(est, key) <= box[key][1], key
        widths.append(box["r"][1] - box["r"][0])
    assert widths[1] < 0.7 * widths[0]  # 4x the customers: about half as wide


def test_90_percent_intervals_cover_the_truth_about_90_percent_of_the_time() -> None:
    """Ten independent simulated shops: the 90% interval of r holds the true 0.6 in at least
    7 (if it held it 90% of the time, fewer than 7 would happen with probability 1.3%)."""
    hits = 0
    for rep in range(10):
        x, t_x, T, m = simulate_bgnbd(600, seed=100 + rep)
        lo, hi = cb.param_intervals(cb.bootstrap(x, t_x, T, m, draws=20, seed=rep), 90)["bgnbd"][
            "r"
        ]
        hits += lo <= features_scale.TRUE["r"] <= hi
    assert hits >= 7


def test_customer_intervals() -> None:
    x, t_x, T, m = simulate_bgnbd(1_500, seed=4)
    d = cb.bootstrap(x, t_x, T, m, draws=20, seed=2)
    got = cb.customer_intervals(d, "pareto_nbd", x, t_x, T, m, 52, 0.1, 90)
    assert set(got) == set(INTERVAL_COLUMNS)
    assert np.all(got["clv_low"] <= got["clv_high"]) and np.all(got["clv_high"] > 0)
    assert np.all(got["expected_transactions_low"] <= got["expected_transactions_high"])
    with pytest.raises(ValueError, match="at least 2 draws"):
        cb.bootstrap(x, t_x, T, m, draws=1)
    with pytest.raises(ValueError, match="no bgnbd fits"):
        only = cb.bootstrap(x, t_x, T, m, draws=2, models=("pareto_nbd",))
        cb.customer_intervals(only, "bgnbd", x, t_x, T, m, 52, 0.1, 90)


def test_feature_table_and_cli_carry_intervals(cdnow_sample: Path, tmp_path: Path) -> None:
    base = ["features", "build", "--events", str(cdnow_sample), "--as-of", "1997-09-30"]
    res = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "i"), "--clv-intervals", "90", "--clv-draws", "30"]
    )
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout.strip().splitlines()[-1])["clv_intervals"]["draws"] == 30
    df = pl.read_parquet(tmp_path / "i" / "customers.parquet")
    assert tuple(df.columns) == (*COLUMNS, *INTERVAL_COLUMNS)
    inside = df.filter(pl.col("clv_low") <= pl.col("clv")).filter(
        pl.col("clv") <= pl.col("clv_high")
    )
    assert inside.height >= 0.95 * df.height
    assert (df["clv_high"] - df["clv_low"]).min() > 0
    plain = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "p")])
    assert (
        plain.exit_code == 0
        and tuple(pl.read_parquet(tmp_path / "p" / "customers.parquet").columns) == COLUMNS
    )
    fit = CliRunner().invoke(
        app,
        ["clv", "fit", "--events", str(cdnow_sample), "--calibration-end", "1997-09-30",
         "--intervals", "90", "--draws", "20"],
    )  # fmt: skip
    assert fit.exit_code == 0, fit.output
    out = json.loads(fit.stdout.strip().splitlines()[-1])
    lo, hi = out["intervals"]["pareto_nbd"]["r"]
    assert lo <= out["pareto_nbd"]["r"] <= hi and out["intervals"]["level"] == 90
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--clv-intervals", "0"])
    assert bad.exit_code == 2
