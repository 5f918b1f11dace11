"""Choice of the IRT dimension d by validation on held-out models (as tinyBenchmarks does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from ._ability import _fit_abilities
from ._fit import check_responses, fit_irt

_logger = logging.getLogger(__name__)


def n_dims_scores(
    responses: np.ndarray,
    candidates: Sequence[int] = (2, 5, 10, 15),
    *,
    val_fraction: float = 0.2,
    random_state: int | np.random.Generator | None = 0,
    **fit_kw: Any,
) -> dict[int, float]:
    """Held-out log-loss of the 2PL for each candidate d.

    Models are split into train / validation (``val_fraction``); for each d the 2PL is fitted
    on the training models; each validation model's ability is fitted on a random half of its
    observed items and the mean log-loss of the predicted probabilities on the other half is
    the score (lower is better).
    """
    arr = check_responses(responses)
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    rng = np.random.default_rng(random_state)
    n_models = arr.shape[0]
    n_val = int(round(val_fraction * n_models))
    if n_val < 1 or n_val >= n_models:
        raise ValueError(f"{n_models} models are too few to hold out {val_fraction:.0%}")
    perm = rng.permutation(n_models)
    train, val = arr[perm[n_val:]], arr[perm[:n_val]]
    observed = ~np.isnan(val)
    fit_half = observed & (rng.random(val.shape) < 0.5)
    test_half = observed & ~fit_half
    if not test_half.any():
        raise ValueError("no held-out cell to score on")
    scores: dict[int, float] = {}
    for d in candidates:
        params, _ = fit_irt(train, n_dims=int(d), random_state=rng, calibrate_gp=False, **fit_kw)
        gamma = _fit_abilities(params.alpha, params.beta, np.where(fit_half, val, np.nan))
        p = np.clip(expit(gamma @ params.alpha.T - params.beta), 1e-9, 1 - 1e-9)
        y = val[test_half]
        ll = -(y * np.log(p[test_half]) + (1 - y) * np.log(1 - p[test_half]))
        scores[int(d)] = float(ll.mean())
        _logger.info("d=%d: held-out log-loss %.4f", d, scores[int(d)])
    return scores


def select_n_dims(
    responses: np.ndarray,
    candidates: Sequence[int] = (2, 5, 10, 15),
    *,
    val_fraction: float = 0.2,
    random_state: int | np.random.Generator | None = 0,
    **fit_kw: Any,
) -> int:
    """The d of ``candidates`` with the lowest held-out log-loss (see :func:`n_dims_scores`)."""
    scores = n_dims_scores(responses, candidates, val_fraction=val_fraction,
                           random_state=random_state, **fit_kw)
    return min(scores, key=lambda d: (scores[d], d))
