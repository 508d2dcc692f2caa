"""CLV public API: BG/NBD and Gamma-Gamma fitting and the predictions made from them.

Re-exports ``features.clv_fit`` (maximum-likelihood fits of both models) and
``features.clv_predict`` (P(alive), expected purchases and spend, discounted CLV, cohort
expectations), so callers keep importing ``from features import clv``.
"""

from __future__ import annotations

from features.clv_fit import (
    BGNBD,
    F,
    GammaGamma,
    bgnbd_log_likelihood_terms,
    compress,
    fit_bgnbd,
    fit_gamma_gamma,
    gamma_gamma_log_likelihood_terms,
)
from features.clv_predict import (
    discounted_clv,
    expected_cohort_repeat_transactions,
    expected_repeat_transactions_new,
    expected_spend,
    expected_transactions,
    p_alive,
)

__all__ = [
    "BGNBD",
    "F",
    "GammaGamma",
    "bgnbd_log_likelihood_terms",
    "compress",
    "discounted_clv",
    "expected_cohort_repeat_transactions",
    "expected_repeat_transactions_new",
    "expected_spend",
    "expected_transactions",
    "fit_bgnbd",
    "fit_gamma_gamma",
    "gamma_gamma_log_likelihood_terms",
    "p_alive",
]
