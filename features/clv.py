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
from scipy import optimize, special

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
    stacked = np.column_stack([np.asarray(c, dtype=np.float64) for c in cols])
    uniq, counts = np.unique(stacked, axis=0, return_counts=True)
    return [uniq[:, i] for i in range(uniq.shape[1])], counts.astype(np.float64)


def _check_bgnbd_input(x: F, t_x: F, T: F) -> None:
    if not (x.shape == t_x.shape == T.shape):
        raise ValueError("x, t_x and T must have the same length (one entry per customer)")
    if x.size == 0:
        raise ValueError("no customers to fit: the calibration period holds no purchases")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T + 1e-9):
        raise ValueError("need 0 <= x, 0 <= t_x <= T for every customer")


def bgnbd_log_likelihood_terms(params: F, x: F, t_x: F, T: F) -> F:
    """Per-customer BG/NBD log-likelihood (FHL 2005 eq. 6), in log space."""
    r, alpha, a, b = (float(v) for v in params)
    ux, inv = np.unique(x, return_inverse=True)
    # x-only parts, once per distinct x
    base = special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha)
    lb_ab = special.betaln(a, b)
    l1x = special.betaln(a, b + ux) - lb_ab
    with np.errstate(divide="ignore", invalid="ignore"):
        l2x = np.where(
            ux > 0, special.betaln(a + 1, np.maximum(b + ux - 1, 1e-300)) - lb_ab, -np.inf
        )
    rx = (r + x).astype(np.float64)
    term1 = l1x[inv] - rx * np.log(alpha + T)
    term2 = l2x[inv] - rx * np.log(alpha + t_x)
    return np.asarray(base[inv] + np.logaddexp(term1, term2), dtype=np.float64)


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
    scale = 1.0 / max(float(np.sum(w)), 1.0)

    def nll(logp: F) -> float:
        ll = bgnbd_log_likelihood_terms(np.exp(logp), xa, ta, Ta)
        v = -float(np.dot(w, ll)) * scale
        return v if np.isfinite(v) else 1e300

    best = _minimize(nll, np.log(np.asarray(init, dtype=np.float64)))
    p = np.exp(best)
    ll = float(np.dot(w, bgnbd_log_likelihood_terms(p, xa, ta, Ta)))
    return BGNBD(float(p[0]), float(p[1]), float(p[2]), float(p[3]), ll)


def _minimize(fun: Any, x0: F) -> F:
    """Nelder-Mead polish after L-BFGS-B: robust on the flat valleys these likelihoods have."""
    bounds = [(-15.0, 15.0)] * len(x0)
    res = optimize.minimize(fun, x0, method="L-BFGS-B", bounds=bounds)
    res2 = optimize.minimize(
        fun,
        res.x,
        method="Nelder-Mead",
        options={"xatol": 1e-7, "fatol": 1e-11, "maxiter": 4000, "adaptive": True},
    )
    out = res2.x if res2.fun <= res.fun else res.x
    return np.asarray(out, dtype=np.float64)


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
    out = np.ones_like(z)
    term = np.ones_like(z)
    for n in range(terms):
        term = term * (a + n) * (b + n) / ((c + n) * (n + 1)) * z
        out = out + term
        if np.all(np.abs(term) < 1e-15 * np.abs(out)):
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
        bad = ~np.isfinite(h)
        if np.any(bad):
            h[bad] = _hyp2f1_series(
                np.full(bad.sum(), a + b - 1.0 - r), np.full(bad.sum(), a - 1.0), c[bad], z[bad]
            )
        tail = np.exp((a - 1.0) * np.log1p(-z)) * h
        num = (a + b + x - 1.0) / (a - 1.0) * (1.0 - tail)
        log_odds = (
            np.log(a)
            - np.log(np.maximum(b + x - 1.0, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
        den_log = np.where(x > 0, np.logaddexp(0.0, log_odds), 0.0)
        out = num * np.exp(-den_log)
    return np.asarray(np.where(np.isfinite(out), np.maximum(out, 0.0), 0.0), dtype=np.float64)


def gamma_gamma_log_likelihood_terms(params: F, x: F, m: F) -> F:
    """Per-customer Gamma-Gamma log-likelihood of the mean spend m over x transactions."""
    p, q, g = (float(v) for v in params)
    px = p * x
    return np.asarray(
        special.gammaln(px + q)
        - special.gammaln(px)
        - special.gammaln(q)
        + q * np.log(g)
        + (px - 1.0) * np.log(m)
        + px * np.log(x)
        - (px + q) * np.log(g + m * x),
        dtype=np.float64,
    )


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
    if w_in is None:
        (xa, ma), w = compress(xa, ma)
    else:
        w = w_in
    scale = 1.0 / float(np.sum(w))

    def nll(logp: F) -> float:
        v = -float(np.dot(w, gamma_gamma_log_likelihood_terms(np.exp(logp), xa, ma))) * scale
        return v if np.isfinite(v) else 1e300

    best = np.exp(_minimize(nll, np.log(np.asarray(init, dtype=np.float64))))
    ll = float(np.dot(w, gamma_gamma_log_likelihood_terms(best, xa, ma)))
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
    step_weeks: int = 4,
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
