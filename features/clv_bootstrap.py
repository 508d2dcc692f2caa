"""Bootstrap intervals for the CLV models: resample customers, refit, take percentiles.

A draw resamples the N calibration customers with replacement (each customer's count is
multinomial), the same draw for the purchase models (BG/NBD and Pareto/NBD, on the compressed
(x, t_x, T) rows, whose weights are the summed counts) and Gamma-Gamma (per repeat customer).
Cost: ``draws`` refits of each model (on the CDNOW sample 50 draws of all three take ~1 s;
the fits scale with distinct rows, see benchmarks/features_scale.py), plus, for per-customer
intervals, one discounted-CLV evaluation per draw and a (draws x customers) float32 matrix
(100 draws x 1M customers = 400 MB).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from features.clv_fit import BGNBD, GammaGamma, fit_bgnbd, fit_gamma_gamma
from features.clv_pareto import ParetoNBD, fit_pareto_nbd
from features.clv_predict import discounted_clv, expected_purchases

F = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Draws:
    bgnbd: list[BGNBD]
    pareto_nbd: list[ParetoNBD]
    gamma_gamma: list[GammaGamma]


def bootstrap(
    x: F,
    t_x: F,
    T: F,
    m: F,
    draws: int = 100,
    seed: int = 0,
    models: tuple[str, ...] = ("bgnbd", "pareto_nbd"),
) -> Draws:
    """``draws`` refits of the purchase ``models`` and Gamma-Gamma on resampled customers."""
    if draws < 2:
        raise ValueError(f"a bootstrap needs at least 2 draws, got {draws}")
    unknown = set(models) - {"bgnbd", "pareto_nbd"}
    if unknown:
        raise ValueError(f"unknown purchase models {sorted(unknown)}")
    n = len(x)
    keys, inverse = np.unique(np.column_stack([x, t_x, T]), axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    rng = np.random.default_rng(seed)
    out = Draws([], [], [])
    for _ in range(draws):
        counts = rng.multinomial(n, np.full(n, 1.0 / n)).astype(np.float64)
        w = np.bincount(inverse, weights=counts, minlength=len(keys))
        ux, ut, uT = keys[:, 0], keys[:, 1], keys[:, 2]
        if "bgnbd" in models:
            out.bgnbd.append(fit_bgnbd(ux, ut, uT, weights=w))
        if "pareto_nbd" in models:
            out.pareto_nbd.append(fit_pareto_nbd(ux, ut, uT, weights=w))
        out.gamma_gamma.append(fit_gamma_gamma(x, m, weights=counts))
    return out


def param_intervals(d: Draws, level: float) -> dict[str, dict[str, list[float]]]:
    """Each model's parameters: the central ``level`` % interval over the draws."""
    lo, hi = (100 - level) / 2, 100 - (100 - level) / 2
    out: dict[str, dict[str, list[float]]] = {}
    for name, fits in (
        ("bgnbd", d.bgnbd),
        ("pareto_nbd", d.pareto_nbd),
        ("gamma_gamma", d.gamma_gamma),
    ):
        if not fits:
            continue
        table: dict[str, list[float]] = {}
        for key in fits[0].as_dict():
            if key == "log_likelihood":
                continue
            vals = np.array([f.as_dict()[key] for f in fits])
            table[key] = [float(np.percentile(vals, lo)), float(np.percentile(vals, hi))]
        out[name] = table
    return out


def customer_intervals(
    d: Draws,
    model: str,
    x: F,
    t_x: F,
    T: F,
    m: F,
    horizon_weeks: int,
    annual_discount: float,
    level: float,
) -> dict[str, Any]:
    """Per customer, the central ``level`` % interval of expected purchases over the horizon
    and of discounted CLV, over the draws of ``model``'s purchase fits."""
    fits: list[BGNBD] | list[ParetoNBD] = d.pareto_nbd if model == "pareto_nbd" else d.bgnbd
    if len(fits) != len(d.gamma_gamma):
        raise ValueError(f"the draws hold no {model} fits")
    purchases = np.empty((len(fits), len(x)), np.float32)
    value = np.empty((len(fits), len(x)), np.float32)
    for i, gg in enumerate(d.gamma_gamma):
        pm: BGNBD | ParetoNBD = fits[i]
        purchases[i] = expected_purchases(pm, float(horizon_weeks), x, t_x, T)
        value[i] = discounted_clv(pm, gg, x, t_x, T, m, horizon_weeks, annual_discount)
    lo, hi = (100 - level) / 2, 100 - (100 - level) / 2
    return {
        "expected_transactions_low": np.percentile(purchases, lo, axis=0).astype(np.float64),
        "expected_transactions_high": np.percentile(purchases, hi, axis=0).astype(np.float64),
        "clv_low": np.percentile(value, lo, axis=0).astype(np.float64),
        "clv_high": np.percentile(value, hi, axis=0).astype(np.float64),
    }
