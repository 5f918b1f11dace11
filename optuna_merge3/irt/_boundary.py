"""Broken models: a point mass at 0% next to the 2PL (docs/irt.md, "Reference populations").

Random merges break: on the tiny world's qa_en most random task-arithmetic merges answer every
item wrong, on math_it a third do (and the leaderboard has such models, e.g. on GSM8K). The
2PL with Gaussian priors cannot put a model at exactly 0% (its MAP ability stops where the
prior holds it), so every IRT estimate of a broken model was +.01-.03 while the naive mean of
any subset is exact. Mixture: a new model is broken with the population's share pi_0, else a
2PL model from the ability distribution of the other models. Only an all-wrong subset S can
come from a broken model; Bayes: P(broken | all wrong on S) = pi_0 / (pi_0 + (1 - pi_0)
q_0(S)), with q_0(S) = E[prod_{i in S} (1 - p_i(gamma))] over the others' ability
distribution (Monte Carlo, fixed draws). The estimate is then (1 - P) * the IRT estimate.

Not at 100%: a model there is the 2PL's upper tail, not another process, and a mass at 100%
took a real merge at 95.6% (TruthfulQA, T3Q) for a perfect one from 20 right answers: estimate
.997-.9999, stderr .002-.02 (docs/irt.md).
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ._params import IRTParams

#: Monte Carlo draws of q_0(S); a fixed seed keeps the estimators deterministic.
N_DRAWS = 2000


def broken_share(acc: np.ndarray) -> tuple[float, np.ndarray]:
    """(pi_0, mask of the other models) from the reference models' accuracies."""
    zero = np.asarray(acc, dtype=float) <= 0.0
    return float(zero.mean()), ~zero


def broken_posterior(params: IRTParams, idx: np.ndarray) -> float:
    """P(the model is broken | every answer on items ``idx`` wrong); 0 without
    ``meta["boundary"]`` (fits before it, or no reference model at 0%)."""
    stored = params.meta.get("boundary")
    share = float(stored["zero"]) if stored else 0.0
    if share <= 0.0:
        return 0.0
    mean = np.asarray(stored["mean"], dtype=float)
    cov = np.asarray(stored["cov"], dtype=float)
    draws = np.random.default_rng(0).multivariate_normal(mean, cov, N_DRAWS, method="eigh")
    p = expit(draws @ params.alpha[idx].T - params.beta[idx])
    q = float(np.exp(np.log1p(-p).sum(axis=1)).mean())
    return share / (share + (1.0 - share) * q)


def apply_boundary(
    params: IRTParams, idx: np.ndarray, y: np.ndarray, value: float, se: float
) -> tuple[float, float, float]:
    """(value, stderr, P) of the mixture for answers ``y`` on items ``idx``; unchanged (P = 0)
    unless every answer is wrong. Variance of the mixture: (1 - P) se^2 + P (1 - P) value^2."""
    if y.any():
        return value, se, 0.0
    post = broken_posterior(params, idx)
    if post <= 0.0:
        return value, se, 0.0
    var = (1.0 - post) * se**2 + post * (1.0 - post) * value**2
    return float((1.0 - post) * value), float(np.sqrt(var)), post
