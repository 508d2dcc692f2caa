"""CLV models: golden CDNOW numbers (FHL 2005), numerical safety, the CLI, the CDNOW adapter."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from features import clv
from features.adapters.cdnow import read_cdnow
from features.clv_data import fit_from_events
from patron.cli import app

GOLD_BG = {"r": 0.2426, "alpha": 4.4136, "a": 0.7929, "b": 2.4259}
GOLD_BG_LL = -9582.43
GOLD_GG = {"p": 6.25, "q": 3.74, "gamma": 15.44}
GOLD_GG_LL = -4055.92


def _close(got: dict[str, float], gold: dict[str, float], rel: float = 0.005) -> None:
    for k, v in gold.items():
        assert got[k] == pytest.approx(v, rel=rel), k


def test_read_cdnow_both_layouts(cdnow_sample: Path, tmp_path: Path) -> None:
    sample = read_cdnow(cdnow_sample)
    assert sample["customer_id"].n_unique() == 2357
    assert sample.height == 6919
    master_like = tmp_path / "m.txt"
    master_like.write_text(
        " customer_id  date number_of_cds  dollar_value\n"
        " 00001 19970101  1   11.77\n 00002 19970112  0   0.00\n 00002 19970113  2   0.00\n"
    )
    m = read_cdnow(master_like)
    assert m["customer_id"].to_list() == ["00001", "00002", "00002"]
    assert m["unit_price"].to_list() == [11.77, None, 0.0]  # 0 CDs -> null, $0 -> 0
    assert m["ts"].dt.day().to_list() == [1, 12, 13]
    bad = tmp_path / "bad.txt"
    bad.write_text("1 2 3\n")
    with pytest.raises(ValueError, match="columns"):
        read_cdnow(bad)


def test_golden_cdnow_fit(cdnow_sample: Path) -> None:
    out = fit_from_events(read_cdnow(cdnow_sample), date(1997, 9, 30), date(1998, 6, 30))
    assert out["customers"] == 2357
    assert out["repeat_customers"] == 946
    _close(out["bgnbd"], GOLD_BG)
    assert out["bgnbd"]["log_likelihood"] == pytest.approx(GOLD_BG_LL, abs=0.1)
    _close(out["gamma_gamma"], GOLD_GG)
    assert out["gamma_gamma"]["log_likelihood"] == pytest.approx(GOLD_GG_LL, abs=0.1)
    hold = out["holdout"]
    # the model is fitted on calibration only: the holdout forecast is within 15% of actual
    assert hold["predicted_repeat_transactions"] == pytest.approx(
        hold["actual_repeat_transactions"], rel=0.15
    )


def test_cli_clv_fit_prints_json(cdnow_sample: Path) -> None:
    res = CliRunner().invoke(
        app,
        [
            "clv",
            "fit",
            "--events",
            str(cdnow_sample),
            "--calibration-end",
            "1997-09-30",
            "--holdout-end",
            "1998-06-30",
        ],
    )
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert set(out) >= {"customers", "bgnbd", "gamma_gamma", "holdout"}
    assert set(out["holdout"]) >= {"actual_repeat_transactions", "predicted_repeat_transactions"}
    _close(out["bgnbd"], GOLD_BG)
    bad = CliRunner().invoke(
        app, ["clv", "fit", "--events", str(cdnow_sample), "--calibration-end", "30/09/1997"]
    )
    assert bad.exit_code == 2


def test_fhl_worked_example() -> None:
    """FHL 2005 sec. 6: x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks."""
    bg = clv.BGNBD(0.2426, 4.4136, 0.7929, 2.4259, 0.0)
    e = clv.expected_transactions(bg, 39.0, np.array([2.0]), np.array([30.43]), np.array([38.86]))
    assert e[0] == pytest.approx(1.226, abs=0.002)


@pytest.mark.parametrize(
    "params", [(0.5, 2.0, 0.1, 0.3), (0.2, 4.0, 3.0, 0.05), (5.0, 0.5, 0.6, 0.2)]
)
def test_likelihood_and_expectation_finite_everywhere(params: tuple[float, ...]) -> None:
    """a+b<1, heavy buyers (x up to 2000) and x=0 never give NaN or inf."""
    x = np.array([0.0, 1, 5, 300, 2000])
    t_x = np.array([0.0, 1.0, 20.0, 38.0, 38.8])
    T = np.full(5, 38.86)
    ll = clv.bgnbd_log_likelihood_terms(np.array(params), x, t_x, T)
    assert np.all(np.isfinite(ll))
    bg = clv.BGNBD(*params, log_likelihood=0.0)
    e = clv.expected_transactions(bg, 52.0, x, t_x, T)
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    assert e[-1] > e[1]  # heavier recent buyers expect more
    pa = clv.p_alive(bg, x, t_x, T)
    assert np.all((pa >= 0) & (pa <= 1)) and pa[0] == 1.0


def test_recovers_synthetic_parameters() -> None:
    """Simulate the BG/NBD generative process and recover the parameters."""
    rng = np.random.default_rng(7)
    n, r, alpha, a, b = 20_000, 0.8, 6.0, 0.9, 3.0
    lam = rng.gamma(r, 1.0 / alpha, n)
    p = rng.beta(a, b, n)
    T = rng.integers(10, 60, n).astype(float)
    x = np.zeros(n)
    t_x = np.zeros(n)
    t = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    for _ in range(200):
        t = t + rng.exponential(1.0 / lam)
        ok = alive & (t <= T)
        x[ok] += 1
        t_x[ok] = t[ok]
        alive = ok & (rng.random(n) >= p)
        if not alive.any():
            break
    fit = clv.fit_bgnbd(x, t_x, T)
    assert fit.r == pytest.approx(r, rel=0.15)
    assert fit.alpha == pytest.approx(alpha, rel=0.2)
    assert fit.a == pytest.approx(a, rel=0.3)
    assert fit.b == pytest.approx(b, rel=0.4)


def test_gamma_gamma_rejects_too_few() -> None:
    with pytest.raises(ValueError, match="repeat customers"):
        clv.fit_gamma_gamma([0, 0, 1], [0.0, 0.0, 5.0])


def test_discounted_clv_monotone_in_discount() -> None:
    bg = clv.BGNBD(0.2426, 4.4136, 0.7929, 2.4259, 0.0)
    gg = clv.GammaGamma(6.25, 3.74, 15.44, 0.0)
    x = np.array([0.0, 2, 10, 2])
    t_x = np.array([0.0, 30.0, 38.0, 30.0])
    T = np.full(4, 38.86)
    m = np.array([np.nan, 20.0, 40.0, 20.0])
    low = clv.discounted_clv(bg, gg, x, t_x, T, m, annual_discount=0.0)
    high = clv.discounted_clv(bg, gg, x, t_x, T, m, annual_discount=0.5)
    assert np.all(high <= low + 1e-12) and high[2] < low[2]
    assert low[1] == pytest.approx(low[3])  # duplicate rows map back correctly
    e52 = clv.expected_transactions(bg, 52.0, x, t_x, T)
    assert low == pytest.approx(e52 * clv.expected_spend(gg, x, m), rel=1e-9)


def test_expected_transactions_with_nearly_fixed_dropout_is_finite_and_fast() -> None:
    """Huge a, b (a degenerate but legal fit seen on synthetic data) stay finite and sensible."""
    from features.clv import BGNBD, expected_transactions

    params = BGNBD(r=0.5487, alpha=2.0675, a=66370.15, b=3269017.37, log_likelihood=0.0)
    rng = np.random.default_rng(0)
    n = 100_000
    x = rng.integers(0, 60, n).astype(float)
    T = rng.uniform(1, 78, n)
    t_x = np.where(x > 0, T, 0.0)  # just bought: almost surely alive
    e = expected_transactions(params, 52.0, x, t_x, T)
    assert np.all(np.isfinite(e)) and np.all(e >= 0)
    # with p ~ a/(a+b) = 0.02 fixed, a customer who just bought buys at ~ (r+x)/(alpha+T) per
    # week, thinned a little by dropout over 52 weeks: of that order, neither 0 nor more
    rate = (params.r + x) / (params.alpha + T) * 52
    assert 0.3 < float(np.median(e / rate)) <= 1.0
