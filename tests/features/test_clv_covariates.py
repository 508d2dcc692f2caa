"""Pareto/NBD with a categorical covariate (features/clv_covariates.py): planted effects on
simulated customers are recovered and the likelihood-ratio test finds them; a covariate with
no effect is not found; the one-level and length errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from features.clv_covariates import fit_pareto_nbd_covariate


def simulate(n: int, r: float, alpha: np.ndarray, s: float, beta: np.ndarray, seed: int):  # type: ignore[no-untyped-def]
    """Pareto/NBD customers observed for 40 weeks (per-customer alpha and beta)."""
    rng = np.random.default_rng(seed)
    T_end = 40.0
    lam = rng.gamma(r, 1.0 / alpha, n)
    life = rng.exponential(1.0 / rng.gamma(s, 1.0 / beta, n))
    span = np.minimum(life, T_end)
    x = rng.poisson(lam * span).astype(np.float64)
    t_x = np.where(x > 0, span * rng.beta(np.maximum(x, 1), 1), 0.0)
    return x, t_x, np.full(n, T_end)


def test_planted_effects_are_recovered_and_significant() -> None:
    n = 40_000
    rng = np.random.default_rng(5)
    level = np.where(rng.random(n) < 0.5, "direct", "web")
    web = level == "web"
    # web: twice the purchase rate (alpha halved), half the dropout rate (beta doubled)
    alpha = np.where(web, 8.0 / 2.0, 8.0)
    beta = np.where(web, 12.0 * 2.0, 12.0)
    x, t_x, T = simulate(n, 0.8, alpha, 0.7, beta, seed=6)
    fit = fit_pareto_nbd_covariate(x, t_x, T, level.tolist())
    assert fit.reference == "direct" and fit.lr_df == 2
    assert fit.gamma_purchase["web"] == pytest.approx(np.log(2.0), abs=0.12)
    assert fit.gamma_dropout["web"] == pytest.approx(-np.log(2.0), abs=0.35)
    assert fit.alpha == pytest.approx(8.0, rel=0.15) and fit.r == pytest.approx(0.8, rel=0.15)
    assert fit.lr_p_value < 1e-10


def test_a_covariate_without_effect_is_not_found() -> None:
    n = 20_000
    rng = np.random.default_rng(8)
    level = rng.choice(["a", "b", "c"], n).tolist()
    x, t_x, T = simulate(n, 0.8, np.full(n, 8.0), 0.7, np.full(n, 12.0), seed=9)
    fit = fit_pareto_nbd_covariate(x, t_x, T, level)
    assert fit.lr_df == 4 and fit.lr_p_value > 0.01
    assert all(abs(v) < 0.15 for v in fit.gamma_purchase.values())


def test_bad_levels() -> None:
    with pytest.raises(ValueError, match="single level"):
        fit_pareto_nbd_covariate([1.0, 0.0], [1.0, 0.0], [2.0, 2.0], ["a", "a"])
    with pytest.raises(ValueError, match="one covariate level per customer"):
        fit_pareto_nbd_covariate([1.0, 0.0], [1.0, 0.0], [2.0, 2.0], ["a"])


def test_clv_fit_cli_covariates(cdnow_sample: Path) -> None:
    import json

    from typer.testing import CliRunner

    from patron.cli import app

    args = ["clv", "fit", "--events", str(cdnow_sample), "--calibration-end", "1997-09-30"]
    res = CliRunner().invoke(app, [*args, "--covariate", "first_order_value"])
    assert res.exit_code == 0, res.output
    cov = json.loads(res.stdout.strip().splitlines()[-1])["pareto_nbd_covariate"]
    assert cov["covariate"] == "first_order_value" and cov["reference"] == "q1"
    assert set(cov["gamma_purchase"]) == {"q2", "q3", "q4", "q5"} and cov["lr_df"] == 8
    # the first order's value says something about what follows; the 1997 Q1 cohort month not
    assert cov["lr_p_value"] < 1e-4
    res = CliRunner().invoke(app, [*args, "--covariate", "cohort"])
    cohort = json.loads(res.stdout.strip().splitlines()[-1])["pareto_nbd_covariate"]
    assert set(cohort["gamma_purchase"]) == {"1997-02", "1997-03"} and cohort["lr_p_value"] > 0.05
    bad = CliRunner().invoke(app, [*args, "--covariate", "shoe_size"])
    assert bad.exit_code == 2 and "--covariate must be one of" in bad.output


def test_a_covariate_from_the_customers_file(cdnow_sample: Path, tmp_path: Path) -> None:
    """--covariate names a column of --customers (e.g. an acquisition channel); customers the
    file does not list are level "unknown"."""
    import json

    import polars as pl
    from typer.testing import CliRunner

    from features.adapters.cdnow import read_cdnow
    from patron.cli import app

    ids = read_cdnow(cdnow_sample)["customer_id"].unique().sort().to_list()
    # an arbitrary channel (every third listed customer "web"): this checks the plumbing,
    # not an effect; customers past the first 2,000 are not in the file
    people = pl.DataFrame(
        {
            "customer_id": ids[:2000],
            "channel": ["web" if i % 3 == 0 else "store" for i in range(2000)],
        }
    )
    path = tmp_path / "customers.csv"
    people.write_csv(path)
    args = ["clv", "fit", "--events", str(cdnow_sample), "--calibration-end", "1997-09-30"]
    res = CliRunner().invoke(app, [*args, "--covariate", "channel", "--customers", str(path)])
    assert res.exit_code == 0, res.output
    cov = json.loads(res.stdout.strip().splitlines()[-1])["pareto_nbd_covariate"]
    assert cov["covariate"] == "channel" and cov["reference"] == "store"
    assert set(cov["gamma_purchase"]) == {"unknown", "web"} and cov["lr_df"] == 4
    bad = CliRunner().invoke(app, [*args, "--covariate", "shoe_size", "--customers", str(path)])
    assert bad.exit_code == 2 and "a column of --customers" in bad.output
    no_id = tmp_path / "no_id.csv"
    pl.DataFrame({"channel": ["web"]}).write_csv(no_id)
    bad = CliRunner().invoke(app, [*args, "--covariate", "channel", "--customers", str(no_id)])
    assert bad.exit_code == 2 and "customer_id" in bad.output
