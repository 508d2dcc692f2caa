"""Pareto/NBD with a time-invariant categorical covariate on purchase and dropout rates.

As in CLVTools (Bachmann, Meierer & Näf), a covariate scales the gamma mixing distributions:
customers of level g have lambda ~ Gamma(r, alpha * exp(-gamma_purchase[g])) and
mu ~ Gamma(s, beta * exp(-gamma_dropout[g])), so a positive ``gamma_purchase`` multiplies the
level's mean purchase rate by exp(gamma), a positive ``gamma_dropout`` its mean dropout rate.
The first level (sorted) is the reference (gamma 0). A continuous covariate enters as levels
(``first_order_value`` quintiles). Within a level the likelihood is the Pareto/NBD one of
features/clv_pareto.py with that level's alpha and beta, so there is one likelihood.

The likelihood-ratio test against the model without the covariate: 2 (LL_cov - LL_0) ~
chi-square with 2 (levels - 1) degrees of freedom.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import optimize, stats
from threadpoolctl import threadpool_limits

from features.clv_fit import compress
from features.clv_pareto import ParetoNBD, _log_likelihood, _Rows, fit_pareto_nbd

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class ParetoNBDCovariate:
    r: float
    alpha: float  # of the reference level
    s: float
    beta: float
    reference: str
    gamma_purchase: dict[str, float]
    gamma_dropout: dict[str, float]
    log_likelihood: float
    lr_statistic: float
    lr_df: int
    lr_p_value: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def fit_pareto_nbd_covariate(
    x: npt.ArrayLike,
    t_x: npt.ArrayLike,
    T: npt.ArrayLike,
    level: Sequence[str],
    without: ParetoNBD | None = None,
) -> ParetoNBDCovariate:
    """Maximum-likelihood fit with one categorical covariate (``level`` per customer), and
    the likelihood-ratio test against ``without`` (fitted here when not given)."""
    xa, ta, Ta = (np.asarray(v, dtype=np.float64) for v in (x, t_x, T))
    lev = np.asarray(level, dtype=object)
    if len(lev) != len(xa):
        raise ValueError("one covariate level per customer is needed")
    names = sorted({str(v) for v in lev})
    if len(names) < 2:
        raise ValueError("the covariate has a single level: nothing to estimate")
    base = without if without is not None else fit_pareto_nbd(xa, ta, Ta)
    groups = []
    for name in names:
        keep = lev == name
        (gx, gt, gT), w = compress(xa[keep], ta[keep], Ta[keep])
        groups.append((_Rows.of(gx, gt, gT), w))
    n = float(len(xa))
    k = len(names) - 1

    def loglik(theta: F) -> float:
        r, alpha, s, beta = np.exp(theta[:4])
        gp, gd = np.concatenate([[0.0], theta[4 : 4 + k]]), np.concatenate([[0.0], theta[4 + k :]])
        total = 0.0
        for (rows, w), a, b in zip(groups, gp, gd, strict=True):
            ll = _log_likelihood(
                float(r), float(alpha * np.exp(-a)), float(s), float(beta * np.exp(-b)), rows
            )
            total += float((w * ll).sum())
        return total

    def nll(theta: F) -> float:
        with np.errstate(all="ignore"):
            v = -loglik(theta) / n
        return v if np.isfinite(v) else 1e30

    start = np.concatenate([np.log([base.r, base.alpha, base.s, base.beta]), np.zeros(2 * k)])
    bounds = [(-15.0, 15.0)] * 4 + [(-10.0, 10.0)] * (2 * k)
    with threadpool_limits(limits=1, user_api="blas"):
        res = optimize.minimize(
            nll,
            start,
            method="L-BFGS-B",
            bounds=bounds,
            options={"ftol": 1e-15, "gtol": 1e-9, "maxiter": 3000},
        )
    theta = res.x if res.fun <= nll(start) else start
    ll = loglik(theta)
    stat = max(0.0, 2.0 * (ll - base.log_likelihood))
    r, alpha, s, beta = (float(v) for v in np.exp(theta[:4]))
    rest = names[1:]
    return ParetoNBDCovariate(
        r=r,
        alpha=alpha,
        s=s,
        beta=beta,
        reference=names[0],
        gamma_purchase={nm: float(v) for nm, v in zip(rest, theta[4 : 4 + k], strict=True)},
        gamma_dropout={nm: float(v) for nm, v in zip(rest, theta[4 + k :], strict=True)},
        log_likelihood=ll,
        lr_statistic=stat,
        lr_df=2 * k,
        lr_p_value=float(stats.chi2.sf(stat, 2 * k)),
    )
