"""CLV predictions from fitted BG/NBD and Gamma-Gamma parameters (``features.clv_fit``).

Per-customer P(alive), expected purchases (FHL 2005 eq. 10), expected spend per transaction
and discounted CLV, plus the unconditional cohort expectations of the tracking plot (FHL 2005
eq. 7). The Gauss 2F1 terms use Euler's transformation (with a direct-series fallback) so that
heavy buyers stay finite. Weekly units, as in ``features.clv_fit``.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import special

from features.clv_fit import BGNBD, F, GammaGamma, compress
from features.clv_pareto import ParetoNBD
from features.clv_pareto import expected_transactions as pareto_expected_transactions
from features.clv_pareto import p_alive as pareto_p_alive


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


def expected_spend(params: GammaGamma, x: F, m: F) -> F:
    """E[spend per transaction | x, m]; the population mean p*gamma/(q-1) when x = 0."""
    x = np.asarray(x, dtype=np.float64)
    m = np.nan_to_num(np.asarray(m, dtype=np.float64), nan=0.0)
    p, q, g = params.p, params.q, params.gamma
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (g + m * x) * p / (p * x + q - 1.0)
    return np.asarray(np.where(np.isfinite(out) & (out >= 0), out, 0.0), dtype=np.float64)


def expected_purchases(params: BGNBD | ParetoNBD, t: float, x: F, t_x: F, T: F) -> F:
    """Expected purchases in (T, T + t] under either purchase model (``params``' type says
    which): the one dispatch the feature build, CLV and the bootstrap share."""
    if isinstance(params, ParetoNBD):
        return pareto_expected_transactions(params, t, x, t_x, T)
    return expected_transactions(params, t, x, t_x, T)


def alive(params: BGNBD | ParetoNBD, x: F, t_x: F, T: F) -> F:
    """P(alive) under either purchase model."""
    if isinstance(params, ParetoNBD):
        return pareto_p_alive(params, x, t_x, T)
    return p_alive(params, x, t_x, T)


def discounted_clv(
    bg: BGNBD | ParetoNBD,
    gg: GammaGamma,
    x: F,
    t_x: F,
    T: F,
    m: F,
    horizon_weeks: int = 52,
    annual_discount: float = 0.10,
    step_weeks: int = 13,
) -> F:
    """Sum over steps of (expected purchases in the step) * spend / (1+d)^(time in years),
    with purchases from BG/NBD or Pareto/NBD (``bg``'s type says which).

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
        cur = expected_purchases(bg, float(s), ukeys[:, 0], ukeys[:, 1], ukeys[:, 2])
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
