"""IRT engine of MERGE^3: multidimensional 2PL fitting, subset extraction, accuracy estimators.

numpy / scipy / scikit-learn only. See docs/irt.md for the model, the estimators' equations
and the measurements behind the defaults.
"""

from __future__ import annotations

from ._ability import (
    DEFAULT_LAMBDA_CONSTRAINT,
    LAMBDA_CONSTRAINTS,
    fit_ability,
    fit_merge_weights,
    item_probabilities,
)
from ._estimators import (
    ESTIMATORS,
    MERGE_AWARE,
    Estimate,
    estimate_accuracy,
    gmpirt_estimate,
    gmpirt_star_estimate,
    gpirt_estimate,
    mpirt_estimate,
    naive_estimate,
    pirt_estimate,
)
from ._extract import EXTRACTORS, Subset, extract_subset
from ._fit import DEFAULT_N_DIMS, fit_irt
from ._params import IRTParams, responses_fingerprint
from ._select import n_dims_scores, select_n_dims

__all__ = [
    "DEFAULT_LAMBDA_CONSTRAINT",
    "DEFAULT_N_DIMS",
    "ESTIMATORS",
    "EXTRACTORS",
    "Estimate",
    "IRTParams",
    "LAMBDA_CONSTRAINTS",
    "MERGE_AWARE",
    "Subset",
    "estimate_accuracy",
    "extract_subset",
    "fit_ability",
    "fit_irt",
    "fit_merge_weights",
    "gmpirt_estimate",
    "gmpirt_star_estimate",
    "gpirt_estimate",
    "item_probabilities",
    "mpirt_estimate",
    "n_dims_scores",
    "naive_estimate",
    "pirt_estimate",
    "responses_fingerprint",
    "select_n_dims",
]
