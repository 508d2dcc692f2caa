"""The Pareto/NBD model (Schmittlein, Morrison & Colombo 1987): fit, P(alive), expected purchases.

Same notation and weekly units as features/clv_fit.py (x repeat purchases, t_x the last one,
T the customer's observed time). Purchases while alive are Poisson(lambda), lifetimes are
exponential(mu), lambda ~ Gamma(r, alpha), mu ~ Gamma(s, beta). The likelihood follows Fader,
Hardie & Lee, "A Note on Deriving the Pareto/NBD Model and Related Expressions" (2005):

    L = Gamma(r+x) alpha^r beta^s / Gamma(r)
        * [ 1 / ((alpha+T)^(r+x) (beta+T)^s) + s / (r+s+x) * A0 ]

with A0 the difference of two Gauss hypergeometric terms (``_log_a0``). Everything is
computed in logs: A0 as a signed log-sum-exp of the two terms over their common
denominator, so neither the powers of (alpha+T) nor the hypergeometric values overflow for
long-lived customers (large T) or heavy buyers (large x). Fitted by maximum likelihood on
compressed (x, t_x, T) rows, as BG/NBD is.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import numpy.typing as npt
from scipy import optimize, special
from threadpoolctl import threadpool_limits

from features.clv_fit import compress

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ParetoNBD:
    r: float
    alpha: float
    s: float
    beta: float
    log_likelihood: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def _pairs(a: F, b: F) -> tuple[F, F, npt.NDArray[np.intp]]:
    """The distinct (a, b) pairs and each row's pair (a lexicographic sort: several times
    faster than ``np.unique(axis=1)`` at millions of rows)."""
    if len(a) == 0:
        return a, b, np.zeros(0, np.intp)
    order = np.lexsort((b, a))
    sa, sb = a[order], b[order]
    new = np.empty(len(a), bool)
    new[0] = True
    new[1:] = (sa[1:] != sa[:-1]) | (sb[1:] != sb[:-1])
    inv = np.empty(len(a), np.intp)
    inv[order] = np.cumsum(new) - 1
    return sa[new], sb[new], inv


def _values(a: F) -> tuple[F, npt.NDArray[np.intp]]:
    u, inv = np.unique(a, return_inverse=True)
    return u, inv.reshape(-1)


@dataclass(frozen=True)
class _Rows:
    """Customers' (x, t_x, T), with the distinct values of x, t_x and T and the distinct
    (x, t_x) and (x, T) pairs. Every term of the likelihood but the last few combinations
    depends on one value or one pair (A0's hypergeometric terms on a pair), so each is
    computed once per value or pair and gathered: at 10M customers 1.3M distinct rows share
    ~22k pairs and a few hundred values."""

    x: tuple[F, npt.NDArray[np.intp]]
    t_x: tuple[F, npt.NDArray[np.intp]]
    T: tuple[F, npt.NDArray[np.intp]]
    xt: tuple[F, F, npt.NDArray[np.intp]]
    xT: tuple[F, F, npt.NDArray[np.intp]]

    @classmethod
    def of(cls, x: npt.ArrayLike, t_x: npt.ArrayLike, T: npt.ArrayLike) -> _Rows:
        xa, ta, Ta = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (x, t_x, T))
        return cls(_values(xa), _values(ta), _values(Ta), _pairs(xa, ta), _pairs(xa, Ta))


def _log_a0(r: float, alpha: float, s: float, beta: float, rows: _Rows) -> F:
    """log A0: [2F1(.., z(t_x)) / (m+t_x)^(r+s+x) - 2F1(.., z(T)) / (m+T)^(r+s+x)], with m the
    larger of alpha and beta (the 2F1 argument then stays in [0, 1))."""
    big, diff = max(alpha, beta), abs(alpha - beta)

    def log_h(pair: tuple[F, F, npt.NDArray[np.intp]]) -> F:
        ux, ut, inv = pair
        rsx = r + s + ux
        second = np.full_like(ux, s + 1.0) if alpha >= beta else r + ux
        return np.asarray(np.log(special.hyp2f1(rsx, second, rsx + 1.0, diff / (big + ut))))[inv]

    (ux, ix), (ut, it), (uT, iT) = rows.x, rows.t_x, rows.T
    rsx = (r + s + ux)[ix]
    log_q1, log_q2 = np.log(big + ut)[it], np.log(big + uT)[iT]
    # h1/q1^rsx - h2/q2^rsx = (h1 q2^rsx - h2 q1^rsx) / (q1 q2)^rsx, and the first term is
    # the larger (A0 is an integral of a positive function over (t_x, T))
    l1 = log_h(rows.xt) + rsx * log_q2
    l2 = log_h(rows.xT) + rsx * log_q1
    with np.errstate(divide="ignore"):  # t_x = T: A0 = 0, the alive term is log 0
        log_diff = l1 + np.log(-np.expm1(np.minimum(l2 - l1, 0.0)))
    return np.asarray(log_diff - rsx * (log_q1 + log_q2), dtype=np.float64)


def _log_likelihood(r: float, alpha: float, s: float, beta: float, rows: _Rows) -> F:
    (ux, ix), (uT, iT) = rows.x, rows.T
    head = (special.gammaln(r + ux) - special.gammaln(r) + r * np.log(alpha) + s * np.log(beta))[ix]
    gone = (-(r + ux))[ix] * np.log(alpha + uT)[iT] - (s * np.log(beta + uT))[iT]
    alive = (np.log(s) - np.log(r + s + ux))[ix] + _log_a0(r, alpha, s, beta, rows)
    return np.asarray(head + np.logaddexp(gone, alive), dtype=np.float64)


def log_likelihood_terms(params: npt.ArrayLike, x: F, t_x: F, T: F) -> F:
    """Each customer's log-likelihood at ``params`` = (r, alpha, s, beta)."""
    r, alpha, s, beta = (float(v) for v in np.asarray(params, dtype=np.float64))
    return _log_likelihood(r, alpha, s, beta, _Rows.of(x, t_x, T))


SAMPLE_ABOVE = 200_000  # distinct rows above which the fit starts on a thinned sample
SAMPLE_SHARE = 0.03  # of the customers: 300k of 10M, ~200k distinct rows


def _maximise(rows: _Rows, w: F, x0: F, ftol: float = 1e-12) -> optimize.OptimizeResult:
    """The weighted log-likelihood's maximum over log parameters, from ``x0``; stops when the
    mean log-likelihood changes by less than ``ftol`` (relative)."""
    scale = 1.0 / float(w.sum())

    def nll(logp: F) -> float:
        with np.errstate(all="ignore"):
            r, alpha, s, beta = (float(v) for v in np.exp(logp))
            ll = _log_likelihood(r, alpha, s, beta, rows)
        v = -float((w * ll).sum()) * scale
        return v if np.isfinite(v) else 1e30

    lbfgs = {"ftol": ftol, "gtol": 1e-8, "maxiter": 2000}
    bounds = [(-15.0, 15.0)] * 4
    with threadpool_limits(limits=1, user_api="blas"):
        # L-BFGS-B on finite differences reaches the optimum in ~100-200 evaluations; from a
        # start where it stalls, Nelder-Mead finds the basin first
        res = optimize.minimize(nll, x0, method="L-BFGS-B", bounds=bounds, options=lbfgs)
        if not res.success or res.fun >= 1e29:
            nm = {"xatol": 1e-6, "fatol": 1e-12, "maxiter": 4000}
            coarse = optimize.minimize(nll, x0, method="Nelder-Mead", options=nm)
            res = optimize.minimize(nll, coarse.x, method="L-BFGS-B", bounds=bounds, options=lbfgs)
            if coarse.fun < res.fun:
                res = coarse
    return res


def fit_pareto_nbd(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    init: tuple[float, float, float, float] = (0.5, 10.0, 0.5, 10.0),
    weights: npt.ArrayLike | None = None,
) -> ParetoNBD:
    """Maximum-likelihood Pareto/NBD parameters for the given customers (compressed to
    unique (x, t_x, T) rows first; with ``weights``, the rows are taken as they are, each
    counting that often)."""
    xa, ta, Ta = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    if len(xa) == 0:
        raise ValueError("Pareto/NBD needs at least one customer")
    if np.any(xa < 0) or np.any(ta < 0) or np.any(ta > Ta + 1e-9):
        raise ValueError("Pareto/NBD needs x >= 0 and 0 <= t_x <= T")
    if weights is None:
        (xa, ta, Ta), w = compress(xa, ta, Ta)
    else:
        w = np.asarray(weights, dtype=np.float64)
        keep = w > 0
        xa, ta, Ta, w = xa[keep], ta[keep], Ta[keep], w[keep]
    start = np.log(np.asarray(init, dtype=np.float64))
    if len(xa) > SAMPLE_ABOVE:  # a thinning of the customers first: a start near the optimum
        thin = np.random.default_rng(0).binomial(w.astype(np.int64), SAMPLE_SHARE)
        part = thin.astype(np.float64)
        keep = part > 0
        start = _maximise(_Rows.of(xa[keep], ta[keep], Ta[keep]), part[keep], start).x
    full = _Rows.of(xa, ta, Ta)
    # from a thinned start, 1e-10 of the mean log-likelihood moves the parameters by ~1e-4
    # relative, below their standard errors at that many customers
    res = _maximise(full, w, start, 1e-10 if len(xa) > SAMPLE_ABOVE else 1e-12)
    p = np.exp(res.x)
    ll = float(
        (w * _log_likelihood(float(p[0]), float(p[1]), float(p[2]), float(p[3]), full)).sum()
    )
    return ParetoNBD(float(p[0]), float(p[1]), float(p[2]), float(p[3]), ll)


def p_alive(params: ParetoNBD, x: F, t_x: F, T: F) -> F:
    """P(the customer is still alive at T | x, t_x, T)."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    xa, ta, Ta = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    log_ratio = (
        np.log(s)
        - np.log(r + s + xa)
        + (r + xa) * np.log(alpha + Ta)
        + s * np.log(beta + Ta)
        + _log_a0(r, alpha, s, beta, _Rows.of(xa, ta, Ta))
    )
    return np.asarray(special.expit(-log_ratio), dtype=np.float64)


def expected_transactions(params: ParetoNBD, t: float, x: F, t_x: F, T: F) -> F:
    """Expected purchases in (T, T + t] given x, t_x, T."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    xa, Ta = np.asarray(x, dtype=np.float64), np.asarray(T, dtype=np.float64)
    rate = (r + xa) / (alpha + Ta)
    if abs(s - 1.0) < 1e-9:  # the limit s -> 1
        horizon = (beta + Ta) * np.log1p(t / (beta + Ta))
    else:
        horizon = (beta + Ta) / (s - 1.0) * (1.0 - ((beta + Ta) / (beta + Ta + t)) ** (s - 1.0))
    return np.asarray(rate * horizon * p_alive(params, xa, t_x, Ta), dtype=np.float64)
