"""Models at 0% or 100%: a point mass next to the 2PL (docs/irt.md, "Reference populations").

Random merges break: on the tiny world's qa_en most random task-arithmetic merges answer every
item wrong, on math_it a third do. The 2PL with Gaussian priors cannot put a model at exactly
0% (its MAP ability stops where the prior holds it), so every IRT estimate of such a model
was +.01-.03 while the naive mean of any subset is exact. Mixture: a new model is "broken"
(0%) with the population's share pi_0, "perfect" (100%) with pi_1, else a 2PL model from the
population of the others. Only an all-wrong (all-right) subset can come from a broken
(perfect) model; Bayes: P(broken | all wrong on S) = pi_0 / (pi_0 + (1 - pi_0) q_0(S)), with
q_0(S) = E[prod_{i in S} (1 - p_i(gamma))] over the other models' ability distribution
(Monte Carlo, fixed draws). The estimate is then P * 0 + (1 - P) * the IRT estimate.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit

from ._params import IRTParams

#: Monte Carlo draws of q_0(S) / q_1(S); a fixed seed keeps the estimators deterministic.
N_DRAWS = 2000


def boundary_shares(acc: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(pi_0, pi_1, mask of the other models) from the reference models' accuracies."""
    acc = np.asarray(acc, dtype=float)
    zero, one = acc <= 0.0, acc >= 1.0
    return float(zero.mean()), float(one.mean()), ~(zero | one)


def boundary_posterior(params: IRTParams, idx: np.ndarray, all_right: bool) -> float:
    """P(the model is broken | all wrong on items ``idx``), or perfect | all right; 0 without
    ``meta["boundary"]`` (fits before it, or no model at 0% / 100%)."""
    stored = params.meta.get("boundary")
    if not stored:
        return 0.0
    share = float(stored["one" if all_right else "zero"])
    if share <= 0.0:
        return 0.0
    mean = np.asarray(stored["mean"], dtype=float)
    cov = np.asarray(stored["cov"], dtype=float)
    draws = np.random.default_rng(0).multivariate_normal(mean, cov, N_DRAWS, method="eigh")
    p = expit(draws @ params.alpha[idx].T - params.beta[idx])
    q = float(np.exp(np.log(p if all_right else 1.0 - p).sum(axis=1)).mean())
    return share / (share + (1.0 - share) * q)


def apply_boundary(params: IRTParams, idx: np.ndarray, y: np.ndarray, value: float,
                   se: float) -> tuple[float, float, float]:
    """(value, stderr, P) of the mixture for answers ``y`` on items ``idx``; unchanged (P = 0)
    unless the answers are all wrong or all right. Variance of the mixture:
    (1 - P) se^2 + P (1 - P) (value - boundary)^2."""
    if y.size == 0 or (y.any() and not y.all()):
        return value, se, 0.0
    all_right = bool(y.all())
    post = boundary_posterior(params, idx, all_right)
    if post <= 0.0:
        return value, se, 0.0
    edge = 1.0 if all_right else 0.0
    mixed = post * edge + (1.0 - post) * value
    var = (1.0 - post) * se**2 + post * (1.0 - post) * (value - edge) ** 2
    return float(mixed), float(np.sqrt(var)), post
