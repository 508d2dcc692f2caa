"""CLV models: BG/NBD (Fader, Hardie & Lee 2005) and Gamma-Gamma (Fader & Hardie 2013).

Both are fitted by maximum likelihood with scipy on log parameters. Likelihoods are written
in log space with ``gammaln``/``betaln``/``logaddexp`` so that no parameter region (a+b<1,
heavy buyers with hundreds of repeat purchases) produces NaN or inf. Customers are
compressed to unique (x, t_x, T) rows with counts as weights, and x-only terms are computed
once per distinct x, so a million customers fit in seconds.

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


def p_alive(params: BGNBD, x: F, t_x: F, T: F) -> F:
    """P(customer still active | x, t_x, T) (FHL 2005 eq. 11), via a log-odds."""
    x = np.asarray(x, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_odds = (
            np.log(params.a)
            - np.log(np.maximum(params.b + x - 1, 1e-300))
            + (params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + t_x))
        )
    log_odds = np.where(x > 0, log_odds, -np.inf)
    return np.asarray(special.expit(-log_odds), dtype=np.float64)


def _hyp2f1_series(a: F, b: F, c: F, z: F, terms: int = 20_000) -> F:
    """Direct Gauss series (|z| < 1), used only where scipy's hyp2f1 is not finite."""
    a, b, c, z = (np.asarray(v, dtype=np.float64) for v in (a, b, c, z))
    out = np.ones_like(z)
    term = np.ones_like(z)
    active = np.arange(z.size)  # rows still converging: converged rows drop out each step
    for n in range(terms):
        ta = term[active] * (a[active] + n) * (b[active] + n) / ((c[active] + n) * (n + 1))
        ta *= z[active]
        term[active] = ta
        out[active] += ta
        active = active[~(np.abs(ta) < 1e-15 * np.abs(out[active]))]
        if active.size == 0:
            break
    return out


def expected_transactions(params: BGNBD, t: float, x: F, t_x: F, T: F) -> F:
    """E[Y(t) | x, t_x, T]: expected purchases in the next t weeks (FHL 2005 eq. 10).

    The factor ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; z) is rewritten by
    Euler's transformation as (1-z)^(a-1) * 2F1(a+b-1-r, a-1; a+b+x-1; z), which stays
    bounded for heavy buyers (the original 2F1 diverges as z -> 1 when x is large).
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < 1e-8:  # removable singularity of the (a-1) factor
        a = 1.0 + 1e-8
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    if t <= 0:
        return np.zeros_like(x)
    z = t / (alpha + T + t)
    c = a + b + x - 1.0
    c = np.where(np.abs(c - np.round(c)) < 1e-12, c + 1e-9, c) if np.any(c <= 0) else c
    with np.errstate(all="ignore"):
        h = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        tail = np.exp((a - 1.0) * np.log1p(-z)) * h
        bad = ~np.isfinite(tail)
        if np.any(bad):  # e.g. huge a, b (p nearly fixed): the untransformed form is finite
            xb = x[bad]
            tail[bad] = np.exp((r + xb) * np.log1p(-z[bad])) * special.hyp2f1(
                r + xb, b + xb, c[bad], z[bad]
            )
            bad = ~np.isfinite(tail)
        if np.any(bad):
            n_bad = int(bad.sum())
            h_bad = _hyp2f1_series(
                np.full(n_bad, a + b - 1.0 - r), np.full(n_bad, a - 1.0), c[bad], z[bad]
            )
            tail[bad] = np.exp((a - 1.0) * np.log1p(-z[bad])) * h_bad
        num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - tail)
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1.0, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        den_log = np.where(x > 0, np.logaddexp(0.0, log_odds), 0.0)
        out = num * np.exp(-den_log)
    return np.asarray(np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0), dtype=np.float64)


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


def expected_spend(params: GammaGamma, x: F, m: F) -> F:
    """E[spend per transaction | x, m]; the population mean p*gamma/(q-1) when x = 0."""
    x = np.asarray(x, dtype=np.float64)
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    p, q, g = params.p, params.q, params.gamma
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (g + m * x) * p / (p * x + q - 1.0)
    return np.asarray(np.where(np.isfinite(out) & (out >= 0), out, 0.0), dtype=np.float64)


def discounted_clv(
    bg: BGNBD,
    gg: GammaGamma,
    x: F,
    t_x: F,
    T: F,
    m: F,
    horizon_weeks: int = 52,
    annual_discount: float = 0.10,
    step_weeks: int = 13,
) -> F:
    """Sum over steps of (expected purchases in the step) * spend / (1+d)^(time in years).

    Evaluated on unique (x, t_x, T) rows only, then mapped back.
    """
    (ux, ut, uT), _ = compress(x, t_x, T)
    keys = np.column_stack([x, t_x, T])
    order = np.lexsort((uT, ut, ux))
    ukeys = np.column_stack([ux, ut, uT])[order]
    idx = _row_index(ukeys, keys)
    total = np.zeros(ux.size)
    prev = np.zeros(ux.size)
    steps = list(range(step_weeks, horizon_weeks + 1, step_weeks))
    if not steps or steps[-1] != horizon_weeks:
        steps.append(horizon_weeks)
    for s in steps:
        cur = expected_transactions(bg, float(s), ukeys[:, 0], ukeys[:, 1], ukeys[:, 2])
        total += (cur - prev) / (1.0 + annual_discount) ** (s / 52.0)
        prev = cur
    return np.asarray(total[idx] * expected_spend(gg, x, m), dtype=np.float64)


def _row_index(sorted_unique: F, rows: F) -> npt.NDArray[np.int64]:
    """Index of each row in a lexicographically sorted unique table."""
    view_u = np.ascontiguousarray(sorted_unique).view([("", np.float64)] * 3).ravel()
    view_r = np.ascontiguousarray(rows).view([("", np.float64)] * 3).ravel()
    return np.asarray(np.searchsorted(view_u, view_r), dtype=np.int64)


def expected_repeat_transactions_new(params: BGNBD, t: npt.ArrayLike) -> F:
    """E[X(t)]: expected repeat purchases of a new customer within t weeks of the first one.

    FHL 2005 eq. 7, (a+b-1)/(a-1) * [1 - (alpha/(alpha+t))^r * 2F1(r, b; a+b-1; t/(alpha+t))],
    with the same Euler transformation as ``expected_transactions`` (it is that function at
    x = t_x = T = 0), vectorised over t. Used for tracking plots of a whole cohort.
    """
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if abs(a - 1.0) < 1e-8:
        a = 1.0 + 1e-8
    ta = np.atleast_1d(np.asarray(t, dtype=np.float64))
    tt = np.maximum(ta, 0.0)
    z = tt / (alpha + tt)
    c = np.full_like(z, a + b - 1.0)
    with np.errstate(all="ignore"):
        h = special.hyp2f1(a + b - 1.0 - r, a - 1.0, c, z)
        bad = ~np.isfinite(h)
        if np.any(bad):
            n = int(bad.sum())
            h[bad] = _hyp2f1_series(
                np.full(n, a + b - 1.0 - r), np.full(n, a - 1.0), c[bad], z[bad]
            )
        out = (a + b - 1.0) / (a - 1.0) * (1.0 - np.exp((a - 1.0) * np.log1p(-z)) * h)
    out = np.where((ta > 0) & np.isfinite(out), np.maximum(out, 0.0), 0.0)
    return np.asarray(out.reshape(np.shape(t)), dtype=np.float64)


def expected_cohort_repeat_transactions(
    params: BGNBD, first_purchase: npt.ArrayLike, at: npt.ArrayLike
) -> F:
    """Expected cumulative repeat purchases of a cohort by each time in ``at``.

    ``first_purchase`` holds each customer's first-purchase time and ``at`` the evaluation
    times, both in weeks from the same origin; the result is sum_i E[X(at - first_i)]
    (customers not yet acquired contribute 0). This is the model line of the BG/NBD
    tracking plot (FHL 2005 fig. 3). Evaluated once per distinct first-purchase time.
    """
    births, counts = np.unique(np.asarray(first_purchase, dtype=np.float64), return_counts=True)
    times = np.atleast_1d(np.asarray(at, dtype=np.float64))
    grid = times[:, None] - births[None, :]
    ex = expected_repeat_transactions_new(params, grid.ravel()).reshape(grid.shape)
    return np.asarray(ex @ counts.astype(np.float64), dtype=np.float64)
