"""CLV model fitting: BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader & Hardie 2013).

Both are fitted by maximum likelihood with scipy on log parameters. Likelihoods are written
in log space with ``gammaln``/``betaln``/``logaddexp`` so that no parameter region (a+b<1,
heavy buyers with hundreds of repeat purchases) produces NaN or inf. Customers are
compressed to unique (x, t_x, T) rows with counts as weights, and x-only terms are computed
once per distinct x, so a million customers fit in seconds. Predictions from the fitted
parameters live in ``features.clv_predict``.

Notation (weekly units): x = repeat purchases (distinct purchase days after the first),
t_x = time of the last purchase since the first, T = time from the first purchase to the end
of the calibration period.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import optimize, special
from threadpoolctl import threadpool_limits

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class BGNBD:
    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


@dataclass(frozen=True)
class GammaGamma:
    p: float
    q: float
    gamma: float
    log_likelihood: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def compress(*cols: npt.ArrayLike) -> tuple[list[F], F]:
    """Unique rows of the given columns and how often each occurs (the fit weights)."""
    names = [f"c{i}" for i in range(len(cols))]
    df = pl.DataFrame(
        {n: np.asarray(c, dtype=np.float64) for n, c in zip(names, cols, strict=True)}
    )
    g = df.group_by(names).len().sort(names)
    return [g[n].to_numpy() for n in names], g["len"].to_numpy().astype(np.float64)


def _check_bgnbd_input(x: F, t_x: F, T: F) -> None:
    if not (x.shape == t_x.shape == T.shape):
        raise ValueError("x, t_x and T must have the same length (one entry per customer)")
    if x.size == 0:
        raise ValueError("no customers to fit: the calibration period holds no purchases")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T + 1e-9):
        raise ValueError("need 0 <= x, 0 <= t_x <= T for every customer")


def bgnbd_log_likelihood_terms(params: F, x: F, t_x: F, T: F) -> F:
    """Per-customer BG/NBD log-likelihood (FHL 2005 eq. 6), in log space."""
    data = _BGData(
        np.asarray(x, np.float64), np.asarray(t_x, np.float64), np.asarray(T, np.float64)
    )
    ll, _ = _bgnbd_ll_grad(np.asarray(params, dtype=np.float64), data, grad=False)
    return ll


class _BGData:
    """Customers indexed by their distinct x, t_x and T values (few on a daily grid), so
    each likelihood evaluation computes special functions and logs once per distinct value."""

    def __init__(self, x: F, t_x: F, T: F) -> None:
        self.x = x
        self.ux, self.ix = np.unique(x, return_inverse=True)
        self.ut, self.it = np.unique(t_x, return_inverse=True)
        self.uT, self.iT = np.unique(T, return_inverse=True)


def _bgnbd_ll_grad(params: F, d: _BGData, grad: bool = True) -> tuple[F, F | None]:
    """Log-likelihood per row and (optionally) its gradient in (r, alpha, a, b) per row.

    LL = ln G(r+x) - ln G(r) + r ln(alpha) + logaddexp(term1, term2) with
    term1 = ln B(a, b+x) - ln B(a, b) - (r+x) ln(alpha+T),
    term2 = ln B(a+1, b+x-1) - ln B(a, b) - (r+x) ln(alpha+t_x) (only when x > 0).
    """
    r, alpha, a, b = (float(v) for v in params)
    ux, inv = d.ux, d.ix
    base = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha)
    lb_ab = special.betaln(a, b)
    pos = ux > 0
    l1x = special.betaln(a, b + ux) - lb_ab
    l2x = np.full(ux.shape, -np.inf)
    l2x[pos] = special.betaln(a + 1, b + ux[pos] - 1) - lb_ab
    rx = r + d.x
    log_aT = np.log(alpha + d.uT)[d.iT]
    log_at = np.log(alpha + d.ut)[d.it]
    term1 = l1x[inv] - rx * log_aT
    term2 = l2x[inv] - rx * log_at
    lse = np.logaddexp(term1, term2)
    ll = np.asarray(base[inv] + lse, dtype=np.float64)
    if not grad:
        return ll, None
    w1 = np.exp(term1 - lse)
    w2 = 1.0 - w1
    dg = special.digamma
    d_r = (dg(r + ux) - dg(r))[inv] + np.log(alpha) - w1 * log_aT - w2 * log_at
    d_alpha = r / alpha - rx * (w1 / (alpha + d.uT)[d.iT] + w2 / (alpha + d.ut)[d.it])
    psi_ab = dg(a + b)
    psi_abx = dg(a + b + ux)
    d1a = psi_ab - psi_abx
    d1b = dg(b + ux) - psi_abx - dg(b) + psi_ab
    d2a = np.zeros_like(ux)
    d2b = np.zeros_like(ux)
    d2a[pos] = dg(a + 1) - psi_abx[pos] - dg(a) + psi_ab
    d2b[pos] = dg(b + ux[pos] - 1) - psi_abx[pos] - dg(b) + psi_ab
    d_a = d1a[inv] + w2 * (d2a - d1a)[inv]
    d_b = d1b[inv] + w2 * (d2b - d1b)[inv]
    return ll, np.vstack([d_r, d_alpha, d_a, d_b])


def fit_bgnbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    init: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
) -> BGNBD:
    """Maximum-likelihood BG/NBD parameters (r, alpha, a, b) for the given customers."""
    xa, ta, Ta = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    _check_bgnbd_input(xa, ta, Ta)
    if weights is None:
        (xa, ta, Ta), w = compress(xa, ta, Ta)
    else:
        w = np.asarray(weights, dtype=np.float64)
    data = _BGData(xa, ta, Ta)
    scale = 1.0 / max(float(np.sum(w)), 1.0)

    def nll(logp: F) -> tuple[float, F]:
        p = np.exp(logp)
        with np.errstate(all="ignore"):
            ll, g = _bgnbd_ll_grad(p, data)
        assert g is not None
        v = -float((w * ll).sum()) * scale
        grad = -(g * w).sum(axis=1) * scale * p  # chain rule for log parameters
        if not (np.isfinite(v) and np.all(np.isfinite(grad))):
            return 1e30, np.zeros_like(logp)
        return v, grad

    best = _minimize(nll, np.log(np.asarray(init, dtype=np.float64)))
    p = np.exp(best)
    ll, _ = _bgnbd_ll_grad(p, data, grad=False)
    return BGNBD(float(p[0]), float(p[1]), float(p[2]), float(p[3]), float((w * ll).sum()))


def _minimize(fun: Any, x0: F) -> F:
    """L-BFGS-B with analytic gradients on log parameters, to tight tolerances."""
    # BLAS threads only add contention for 3-4 parameters (L-BFGS-B calls BLAS internally)
    with threadpool_limits(limits=1, user_api="blas"):
        res = optimize.minimize(
            fun,
            x0,
            jac=True,
            method="L-BFGS-B",
            bounds=[(-15.0, 15.0)] * len(x0),
            options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 2000},
        )
    return np.asarray(res.x, dtype=np.float64)


class _GGData:
    """Repeat customers with per-distinct-x indexing and the logs that never change."""

    def __init__(self, x: F, m: F) -> None:
        self.x, self.m = x, m
        self.ux, self.ix = np.unique(x, return_inverse=True)
        self.log_m = np.log(m)
        self.log_x = np.log(x)


def _gg_ll_grad(params: F, d: _GGData, grad: bool = True) -> tuple[F, F | None]:
    """ln G(px+q) - ln G(px) - ln G(q) + q ln g + (px-1) ln m + px ln x - (px+q) ln(g+mx)."""
    p, q, g = (float(v) for v in params)
    ux, inv = d.ux, d.ix
    pux = p * ux
    per_x = special.gammaln(pux + q) - special.gammaln(pux) - special.gammaln(q) + q * np.log(g)
    px = p * d.x
    gmx = g + d.m * d.x
    log_gmx = np.log(gmx)
    ll = per_x[inv] + (px - 1.0) * d.log_m + px * d.log_x - (px + q) * log_gmx
    if not grad:
        return np.asarray(ll, dtype=np.float64), None
    dg = special.digamma
    psi = dg(pux + q)
    d_p = d.x * ((psi - dg(pux))[inv] + d.log_m + d.log_x - log_gmx)
    d_q = (psi - dg(q) + np.log(g))[inv] - log_gmx
    d_g = q / g - (px + q) / gmx
    return np.asarray(ll, dtype=np.float64), np.vstack([d_p, d_q, d_g])


def gamma_gamma_log_likelihood_terms(params: F, x: F, m: F) -> F:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend m over x transactions."""
    d = _GGData(np.asarray(x, np.float64), np.asarray(m, np.float64))
    return _gg_ll_grad(np.asarray(params, dtype=np.float64), d, grad=False)[0]


def fit_gamma_gamma(
    x: npt.ArrayLike,
    m: npt.ArrayLike,
    weights: npt.ArrayLike | None = None,
    init: tuple[float, float, float] = (1.0, 1.0, 1.0),
) -> GammaGamma:
    """Fit Gamma-Gamma on repeat customers (x >= 1) with positive mean spend m."""
    xa = np.asarray(x, dtype=np.float64)
    ma = np.asarray(m, dtype=np.float64)
    keep = (xa >= 1) & np.isfinite(ma) & (ma > 0)
    xa, ma = xa[keep], ma[keep]
    w_in = None if weights is None else np.asarray(weights, dtype=np.float64)[keep]
    if xa.size < 2:
        raise ValueError(
            "Gamma-Gamma needs at least 2 repeat customers with positive spend; "
            "extend the calibration period or check unit_price"
        )
    w = np.ones(xa.size) if w_in is None else w_in  # spend is continuous: no compression
    scale = 1.0 / float(np.sum(w))
    data = _GGData(xa, ma)

    def nll(logp: F) -> tuple[float, F]:
        p = np.exp(logp)
        with np.errstate(all="ignore"):
            ll, g = _gg_ll_grad(p, data)
        assert g is not None
        v = -float((w * ll).sum()) * scale
        grad = -(g * w).sum(axis=1) * scale * p
        if not (np.isfinite(v) and np.all(np.isfinite(grad))):
            return 1e30, np.zeros_like(logp)
        return v, grad

    best = np.exp(_minimize(nll, np.log(np.asarray(init, dtype=np.float64))))
    ll = float((w * _gg_ll_grad(best, data, grad=False)[0]).sum())
    return GammaGamma(float(best[0]), float(best[1]), float(best[2]), ll)
