"""Pareto/NBD (features/clv_pareto.py): the published CDNOW fit, the log-space likelihood
against the formula written literally, large-T safety, predictions against simulation, the
CLI's ``--model``."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from scipy import special
from typer.testing import CliRunner

from features import clv_pareto as pn
from features.adapters.cdnow import read_cdnow
from features.clv_data import calibration_summary, daily_transactions, fit_from_events
from patron.cli import app

# Fader, Hardie & Lee (2005), the CDNOW sample, calibration weeks 1-39
PUBLISHED = {"r": 0.553, "alpha": 10.578, "s": 0.606, "beta": 11.669}
PUBLISHED_LL = -9595.0


def _summary(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    daily = daily_transactions(read_cdnow(path)).collect().lazy()
    summ = calibration_summary(daily, date(1997, 9, 30)).collect()
    return tuple(summ[c].to_numpy().astype(np.float64) for c in ("x", "t_x", "T"))  # type: ignore[return-value]


def test_reproduces_the_published_cdnow_fit(cdnow_sample: Path) -> None:
    x, t_x, T = _summary(cdnow_sample)
    fit = pn.fit_pareto_nbd(x, t_x, T)
    for k, v in PUBLISHED.items():
        assert getattr(fit, k) == pytest.approx(v, rel=0.005), k
    assert fit.log_likelihood == pytest.approx(PUBLISHED_LL, abs=0.1)
    at_paper = pn.log_likelihood_terms(list(PUBLISHED.values()), x, t_x, T).sum()
    assert at_paper == pytest.approx(PUBLISHED_LL, abs=0.1)
    assert fit.log_likelihood >= at_paper  # the optimum, not just near it


def _literal(params: tuple[float, float, float, float], x: float, t_x: float, T: float) -> float:
    """FHL's note, eq. (22) with A0 from (19)/(20), in plain floats (fine for small inputs)."""
    r, alpha, s, beta = params
    if alpha >= beta:
        m, b2 = alpha, s + 1
    else:
        m, b2 = beta, r + x
    rsx = r + s + x
    a0 = special.hyp2f1(rsx, b2, rsx + 1, abs(alpha - beta) / (m + t_x)) / (m + t_x) ** rsx
    a0 -= special.hyp2f1(rsx, b2, rsx + 1, abs(alpha - beta) / (m + T)) / (m + T) ** rsx
    head = special.gamma(r + x) * alpha**r * beta**s / special.gamma(r)
    return float(np.log(head * (1 / ((alpha + T) ** (r + x) * (beta + T) ** s) + s / rsx * a0)))


@pytest.mark.parametrize(
    "params", [(0.55, 10.6, 0.61, 11.7), (0.9, 4.0, 1.3, 20.0), (2.0, 3.0, 0.5, 3.0)]
)
def test_log_space_likelihood_is_the_formula(params: tuple[float, float, float, float]) -> None:
    rows = [(0, 0.0, 0.0), (0, 0.0, 30.0), (1, 2.0, 10.0), (3, 20.0, 38.0), (7, 35.5, 39.0)]
    x, t_x, T = (np.array(c, dtype=np.float64) for c in zip(*rows, strict=True))
    got = pn.log_likelihood_terms(params, x, t_x, T)
    want = [_literal(params, *row) for row in rows]
    np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_long_lives_and_heavy_buyers_stay_finite() -> None:
    x = np.array([0.0, 400.0, 2_000.0, 5.0])
    t_x = np.array([0.0, 4_990.0, 9_999.0, 1.0])
    T = np.array([10_000.0, 5_000.0, 10_000.0, 20_000.0])
    p = pn.ParetoNBD(0.55, 10.6, 0.61, 11.7, 0.0)
    ll = pn.log_likelihood_terms((p.r, p.alpha, p.s, p.beta), x, t_x, T)
    alive = pn.p_alive(p, x, t_x, T)
    assert np.all(np.isfinite(ll)) and np.all((alive >= 0) & (alive <= 1))
    assert alive[2] > 0.9 and alive[3] < 0.01  # bought yesterday vs silent for 380 years


def test_p_alive_and_expected_purchases_agree_with_simulated_customers() -> None:
    """Monte Carlo: lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta), lifetime ~ Exp(mu), Poisson
    purchases while alive. The fit recovers the parameters, and conditional on what the
    calibration shows, P(alive) and the next 26 weeks' purchases match the simulation."""
    rng = np.random.default_rng(11)
    r, alpha, s, beta = 0.8, 8.0, 0.7, 12.0
    n, T_end, ahead = 60_000, 40.0, 26.0
    lam = rng.gamma(r, 1.0 / alpha, n)
    life = rng.exponential(1.0 / rng.gamma(s, 1.0 / beta, n))
    x = rng.poisson(lam * np.minimum(life, T_end)).astype(np.float64)
    # given x purchases in (0, min(life, T)], they are uniform there; t_x is the latest
    span = np.minimum(life, T_end)
    t_x = np.where(x > 0, span * rng.beta(np.maximum(x, 1), 1), 0.0)
    T = np.full(n, T_end)
    fit = pn.fit_pareto_nbd(x, t_x, T)
    for got, want in zip((fit.r, fit.alpha, fit.s, fit.beta), (r, alpha, s, beta), strict=True):
        assert got == pytest.approx(want, rel=0.12)
    truth = pn.ParetoNBD(r, alpha, s, beta, 0.0)
    alive = life > T_end
    later = rng.poisson(lam * np.clip(np.minimum(life, T_end + ahead) - T_end, 0, None))
    for group in (x == 0, (x >= 1) & (x <= 3), x >= 4):
        se = later[group].std() / np.sqrt(group.sum())
        pred = pn.expected_transactions(truth, ahead, x[group], t_x[group], T[group]).mean()
        assert pred == pytest.approx(later[group].mean(), abs=4 * se + 1e-3)
        pa = pn.p_alive(truth, x[group], t_x[group], T[group]).mean()
        assert pa == pytest.approx(alive[group].mean(), abs=0.02)


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        pn.fit_pareto_nbd([], [], [])
    with pytest.raises(ValueError, match="t_x <= T"):
        pn.fit_pareto_nbd([1.0], [5.0], [2.0])


def test_fit_from_events_reports_both_models_and_chooses(cdnow_sample: Path) -> None:
    out = fit_from_events(read_cdnow(cdnow_sample), date(1997, 9, 30), date(1998, 6, 30))
    assert set(out["pareto_nbd"]) == {"r", "alpha", "s", "beta", "log_likelihood"}
    mae = out["holdout"]["weekly_tracking_mae"]
    assert set(mae) == {"bgnbd", "pareto_nbd"} and all(v > 0 for v in mae.values())
    assert out["chosen"] == min(mae, key=mae.get)
    forced = fit_from_events(read_cdnow(cdnow_sample), date(1997, 9, 30), model="bgnbd")
    assert forced["chosen"] == "bgnbd" and "holdout" not in forced
    by_ll = fit_from_events(read_cdnow(cdnow_sample), date(1997, 9, 30))
    assert by_ll["chosen"] == "bgnbd"  # -9582.4 > -9595.0
    with pytest.raises(ValueError, match="model must be"):
        fit_from_events(read_cdnow(cdnow_sample), date(1997, 9, 30), model="weibull")


def test_cli_model_option(cdnow_sample: Path) -> None:
    args = ["clv", "fit", "--events", str(cdnow_sample), "--calibration-end", "1997-09-30"]
    res = CliRunner().invoke(app, [*args, "--model", "pareto_nbd"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["chosen"] == "pareto_nbd"
    assert out["pareto_nbd"]["r"] == pytest.approx(PUBLISHED["r"], rel=0.005)
    bad = CliRunner().invoke(app, [*args, "--model", "weibull"])
    assert bad.exit_code == 2 and "--model must be one of" in bad.output


def test_features_build_with_pareto_nbd(cdnow_sample: Path, tmp_path: Path) -> None:
    """``features build --clv-model pareto_nbd``: p_alive, churn risk, expected purchases and
    CLV of the feature table come from the fitted Pareto/NBD."""
    import polars as pl

    base = ["features", "build", "--events", str(cdnow_sample), "--as-of", "1997-09-30"]
    res = CliRunner().invoke(
        app, [*base, "--out", str(tmp_path / "p"), "--clv-model", "pareto_nbd"]
    )
    assert res.exit_code == 0, res.output
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info["clv_model"] == "pareto_nbd"
    got = pl.read_parquet(tmp_path / "p" / "customers.parquet")
    fit = pn.ParetoNBD(**info["pareto_nbd"])
    x, t_x, T = _summary(cdnow_sample)
    assert fit.r == pytest.approx(pn.fit_pareto_nbd(x, t_x, T).r, rel=1e-6)
    daily = daily_transactions(read_cdnow(cdnow_sample)).collect().lazy()
    summ = calibration_summary(daily, date(1997, 9, 30)).collect()
    rows = got.join(summ, on="customer_id")
    want = pn.p_alive(fit, *(rows[c].to_numpy() for c in ("x", "t_x", "T")))
    np.testing.assert_allclose(rows["p_alive"].to_numpy(), want, rtol=1e-9)
    np.testing.assert_allclose(rows["churn_risk"].to_numpy(), 1 - want, rtol=1e-9, atol=1e-12)
    ahead = pn.expected_transactions(fit, 52.0, *(rows[c].to_numpy() for c in ("x", "t_x", "T")))
    np.testing.assert_allclose(rows["expected_transactions"].to_numpy(), ahead, rtol=1e-9)
    assert rows["clv"].drop_nulls().len() == rows.height
    bad = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "q"), "--clv-model", "weibull"])
    assert bad.exit_code == 2 and "--clv-model must be one of" in bad.output
