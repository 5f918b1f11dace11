"""What a fitted reference population says about a NEW model: its ability prior and how wide
its accuracy intervals must be (small populations; docs/irt.md, "Small populations")."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy.special import expit

from ._boundary import broken_share
from ._estimators import pirt_estimate
from ._extract import Subset
from ._params import IRTParams

#: Populations up to this size get the cross-fitted stderr scale (above it the in-sample
#: intervals already held their level on the leaderboard data, and the refits cost seconds).
CROSSFIT_MAX_MODELS = 300


def population_ability_prior(
    params: IRTParams, gamma: np.ndarray, mask: np.ndarray, fit_precision: float,
) -> dict[str, list]:
    """Mean and covariance of the reference models' abilities: the prior of a new model.

    The fit's N(0, s^2 I) prior on the reference abilities does not say how far they spread:
    with more items than models the likelihood dominates, the items' prior shrinks alpha and the
    abilities grow to compensate (sd 1.03-1.55 per dimension on 256-32 leaderboard models at
    d = 10, 0.62 on all 3763-5392). A new model fitted under N(0, I) from 20 answers is shrunk too
    far toward the middle. The empirical-Bayes estimate of the population distribution is the
    moment estimate mean(gamma_hat), cov(gamma_hat) + mean_m H_m^-1: the MAP abilities' spread
    plus their average posterior (Laplace) covariance, which adds back what the MAP shrinkage
    took off when each model answered few items.

    Args:
        params: the fitted items.
        gamma: (n_models, d) MAP abilities of the reference models.
        mask: (n_models, n_items) 1 where observed.
        fit_precision: 1 / s^2 of the fit's ability prior.
    """
    d = gamma.shape[1]
    p = expit(gamma @ params.alpha.T - params.beta)
    hess = np.einsum("mi,ik,il->mkl", mask * p * (1.0 - p), params.alpha, params.alpha,
                     optimize=True) + fit_precision * np.eye(d)
    post = np.linalg.inv(hess).mean(axis=0)
    spread = np.cov(gamma.T, bias=True).reshape(d, d) if gamma.shape[0] > 1 else np.zeros((d, d))
    return {"mean": gamma.mean(axis=0).tolist(), "cov": (spread + post).tolist()}


def boundary_mixture(params: IRTParams, gamma: np.ndarray, responses: np.ndarray,
                     fit_precision: float) -> dict | None:
    """``meta["boundary"]``: the share of models at 0% (on the items they answered) and the
    ability distribution of the others (as :func:`population_ability_prior`); None when no
    model is at 0%, or fewer than 2 are not (irt/_boundary.py)."""
    seen = ~np.isnan(responses)
    acc = np.nansum(responses, axis=1) / np.maximum(seen.sum(axis=1), 1)
    zero, others = broken_share(acc)
    if zero == 0.0 or others.sum() < 2:
        return None
    rest = population_ability_prior(params, gamma[others], seen[others].astype(float),
                                    fit_precision)
    return {"zero": zero, **rest}


def crossfit_stderr_scale(
    responses: np.ndarray, refit: Callable[[np.ndarray], IRTParams], rng: np.random.Generator,
    folds: int = 5, n_items: int = 20, repeats: int = 5,
) -> float:
    """Factor (>= 1) by which the IRT estimators' stderr must grow to cover held-out models.

    The stderr (binomial + Laplace) treats the items as known; with tens of reference models
    they are not: with the population prior alone a 95% interval covered 84% of held-out ARC /
    MMLU models at 32 models (small_populations_explore.md; 97% with the scale, in
    small_populations.md over five benchmarks). Cross-fit: each of ``folds`` folds of the (complete) models is held out, the items
    are refitted on the others (``refit``), and p-IRT estimates each held-out model's accuracy
    from ``n_items`` random items (``repeats`` draws); the factor is the 95% quantile of
    |error| / stderr divided by 1.96, so that the scaled intervals hold their level there.
    Returns 1.0 when fewer than 2 * folds models answered every item, or with one item.
    """
    arr = np.asarray(responses, dtype=float)
    complete = np.flatnonzero(~np.isnan(arr).any(axis=1))
    k = min(n_items, arr.shape[1] - 1)  # at least one item left to predict
    if complete.size < 2 * folds or k < 1:
        return 1.0
    order = rng.permutation(complete)
    z = []
    for f in range(folds):
        held = order[f::folds]
        params = refit(np.delete(arr, held, axis=0))
        for m in held:
            truth = arr[m].mean()
            for _ in range(repeats):
                idx = np.sort(rng.choice(arr.shape[1], size=k, replace=False))
                est = pirt_estimate(params, Subset(idx, np.full(k, 1.0 / k), "random"),
                                    arr[m, idx])
                if est.stderr:
                    z.append(abs(est.value - truth) / est.stderr)
    if not z:
        return 1.0
    return float(max(1.0, np.quantile(z, 0.95) / 1.96))
