"""Choice of the IRT dimension d by validation on held-out models (as tinyBenchmarks does)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import expit

from ._ability import _fit_abilities, ability_prior
from ._fit import check_responses, fit_irt
from ._params import IRTParams

_logger = logging.getLogger(__name__)
CRITERIA = ("accuracy", "logloss")


def _accuracy_error(params: IRTParams, val: np.ndarray, n_items: int, repeats: int,
                    rng: np.random.Generator) -> float:
    """Mean absolute error of p-IRT from ``n_items`` random items vs each model's accuracy."""
    observed = ~np.isnan(val)
    errors = []
    for _ in range(repeats):
        keep = np.zeros_like(observed)
        for m in range(val.shape[0]):
            obs = np.flatnonzero(observed[m])
            keep[m, rng.choice(obs, size=min(n_items, obs.size), replace=False)] = True
        sub = np.where(keep, val, np.nan)
        gamma = _fit_abilities(params.alpha, params.beta, sub, ability_prior(params))
        p = expit(gamma @ params.alpha.T - params.beta)
        unseen = observed & ~keep
        pirt = (np.nansum(sub, axis=1) + np.sum(p * unseen, axis=1)) / observed.sum(axis=1)
        errors.append(np.abs(pirt - np.nanmean(val, axis=1)))
    return float(np.mean(errors))


def n_dims_scores(
    responses: np.ndarray,
    candidates: Sequence[int] = (2, 5, 10, 15),
    *,
    criterion: str = "accuracy",
    val_fraction: float = 0.2,
    n_items: int = 20,
    repeats: int = 3,
    random_state: int | np.random.Generator | None = 0,
    **fit_kw: Any,
) -> dict[int, float]:
    """Validation score of the 2PL for each candidate d (lower is better).

    Models are split into train / validation (``val_fraction``) and the 2PL is fitted on the
    training models for each d. ``criterion``:

    - "accuracy" (default, what the estimators need; tinyBenchmarks validates d the same way):
      mean absolute error of the p-IRT estimate of each validation model's accuracy from
      ``n_items`` random items (``repeats`` draws);
    - "logloss": each validation model's ability is fitted on a random half of its items and
      the mean log-loss on the other half is the score.
    """
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}; valid: {list(CRITERIA)}")
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
    if criterion == "logloss" and not test_half.any():
        raise ValueError("no held-out cell to score on")
    scores: dict[int, float] = {}
    for d in candidates:
        params, _ = fit_irt(train, n_dims=int(d), random_state=rng, calibrate_gp=False,
                            calibrate_stderr=False, **fit_kw)
        if criterion == "accuracy":
            score = _accuracy_error(params, val, n_items, repeats, np.random.default_rng(0))
        else:
            gamma = _fit_abilities(params.alpha, params.beta, np.where(fit_half, val, np.nan),
                                   ability_prior(params))
            p = np.clip(expit(gamma @ params.alpha.T - params.beta), 1e-9, 1 - 1e-9)
            y = val[test_half]
            score = float(np.mean(-(y * np.log(p[test_half]) + (1 - y) * np.log(1 - p[test_half]))))
        scores[int(d)] = score
        _logger.info("d=%d: validation %s %.4f", d, criterion, score)
    return scores


def select_n_dims(
    responses: np.ndarray,
    candidates: Sequence[int] = (2, 5, 10, 15),
    *,
    criterion: str = "accuracy",
    val_fraction: float = 0.2,
    random_state: int | np.random.Generator | None = 0,
    **kw: Any,
) -> int:
    """The d of ``candidates`` with the best validation score (see :func:`n_dims_scores`)."""
    scores = n_dims_scores(responses, candidates, criterion=criterion,
                           val_fraction=val_fraction, random_state=random_state, **kw)
    return min(scores, key=lambda d: (scores[d], d))
