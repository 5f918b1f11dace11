"""Abilities of single models and merge weights lambda, given fitted item parameters."""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

from ._params import IRTParams

_logger = logging.getLogger(__name__)

#: Box for the "unconstrained" lambda fit: with separable answers (e.g. all correct) the
#: maximum-likelihood lambda is at infinity; the peers (plain BFGS) return whatever the iteration
#: cap reached (values from -3 to 7 seen with 10 items). A wide box keeps the value finite and
#: reproducible without binding in ordinary cases.
LAMBDA_BOUND = 10.0
#: Variants of the lambda fit (the config's ``[irt] lambda_constraint`` choices); "none" is the
#: paper's unconstrained fit (``None`` is accepted as an alias).
LAMBDA_CONSTRAINTS = ("ridge", "simplex", "nonneg", "none")
#: Default of :func:`fit_merge_weights` (chosen by measurement, see docs/irt.md).
DEFAULT_LAMBDA_CONSTRAINT = "ridge"
DEFAULT_RIDGE = 1.0


def item_probabilities(params: IRTParams, gamma: np.ndarray) -> np.ndarray:
    """P(Y_i = 1 | gamma) = sigmoid(alpha_i . gamma - beta_i) for every item (2PL).

    Args:
        params: fitted item parameters.
        gamma: ability, (d,) or (n_models, d).

    Returns:
        (n_items,) for one ability, (n_models, n_items) for several.
    """
    g = np.asarray(gamma, dtype=float)
    if g.shape[-1] != params.n_dims or g.ndim not in (1, 2):
        raise ValueError(f"gamma must be ({params.n_dims},) or (m, {params.n_dims}), got {g.shape}")
    return expit(g @ params.alpha.T - params.beta)


def _answers(params: IRTParams, y: np.ndarray, item_idx: np.ndarray | None) -> tuple:
    """Validate ``y`` / ``item_idx``; return (alpha, beta, y filled with 0, observed mask)."""
    y = np.asarray(y, dtype=float)
    if y.ndim != 1:
        raise ValueError(f"y must be 1-D, got shape {y.shape}")
    if item_idx is None:
        if y.shape[0] != params.n_items:
            raise ValueError(f"y has {y.shape[0]} answers for {params.n_items} items; "
                             "pass item_idx for a subset")
        idx = np.arange(params.n_items)
    else:
        idx = np.asarray(item_idx, dtype=int).reshape(-1)
        if idx.shape != y.shape:
            raise ValueError(f"item_idx has {idx.shape[0]} entries, y has {y.shape[0]}")
        if idx.size and (idx.min() < 0 or idx.max() >= params.n_items):
            raise ValueError(f"item_idx out of range [0, {params.n_items})")
    mask = ~np.isnan(y)
    if np.any((y[mask] != 0) & (y[mask] != 1)):
        raise ValueError("answers must be 0, 1 or NaN")
    return params.alpha[idx], params.beta[idx], np.where(mask, y, 0.0), mask


def ability_prior(params: IRTParams, prior_std: float | None = None
                  ) -> tuple[np.ndarray, np.ndarray]:
    """(mean, precision) of the Gaussian prior on a new model's ability.

    ``prior_std=None``: the fitted population's prior (:meth:`IRTParams.ability_prior`);
    a number s: N(0, s^2 I), the prior the reference abilities were fitted under.
    """
    if prior_std is None:
        mean, cov = params.ability_prior()
        return mean, np.linalg.inv(cov)
    if not prior_std > 0:
        raise ValueError(f"prior_std must be > 0, got {prior_std}")
    return np.zeros(params.n_dims), np.eye(params.n_dims) / prior_std**2


def _fit_abilities(
    alpha: np.ndarray, beta: np.ndarray, responses: np.ndarray,
    prior: tuple[np.ndarray, np.ndarray] | None = None, max_iter: int = 500,
) -> np.ndarray:
    """MAP abilities of several models at once (items fixed), vectorised; NaN = not observed.

    ``prior``: (mean, precision) of the Gaussian prior on each ability (default N(0, I)).
    The log-posterior is separable over models, so one L-BFGS-B run on all of them is the same
    as one run per model, minus the Python overhead.
    """
    resp = np.atleast_2d(np.asarray(responses, dtype=float))
    mask = ~np.isnan(resp)
    y = np.where(mask, resp, 0.0)
    m, d = resp.shape[0], alpha.shape[1]
    mean, prec = prior if prior is not None else (np.zeros(d), np.eye(d))

    def fun(x: np.ndarray) -> tuple[float, np.ndarray]:
        g = x.reshape(m, d)
        z = g @ alpha.T - beta
        dev = (g - mean) @ prec
        nll = np.sum(mask * (np.logaddexp(0.0, z) - y * z)) + 0.5 * np.sum(dev * (g - mean))
        r = mask * (expit(z) - y)
        return float(nll), (r @ alpha + dev).ravel()

    res = minimize(fun, np.tile(mean, m), jac=True, method="L-BFGS-B",
                   options={"maxiter": max_iter, "gtol": 1e-8, "ftol": 1e-12})
    return res.x.reshape(m, d)


def fit_ability(
    params: IRTParams,
    y: np.ndarray,
    item_idx: np.ndarray | None = None,
    prior_std: float | None = None,
) -> np.ndarray:
    """MAP ability gamma of one model from its observed answers (items fixed).

    Maximises sum_i [y_i z_i - log(1 + e^{z_i})] - (gamma - mu)^T S^-1 (gamma - mu) / 2 with
    z_i = alpha_i . gamma - beta_i. The Gaussian prior N(mu, S) keeps all-correct / all-wrong
    answers finite (tinyBenchmarks and Mergenetic use plain MLE and clip at +-30). By default
    it is the fitted population's ability distribution (:meth:`IRTParams.ability_prior`), so a
    new model is shrunk toward the reference models as far as they actually spread, not toward
    N(0, I): with more items than reference models the fitted abilities spread wider than the
    fit's N(0, I) prior (docs/irt.md, "Small populations").

    Args:
        params: fitted item parameters.
        y: 0/1 answers (NaN = not observed), aligned with ``item_idx`` (all items if None).
        item_idx: item indices of ``y``.
        prior_std: None = the population prior; a number s = N(0, s^2 I).

    Returns:
        gamma, shape (d,). With no observed answer it is the prior mean.
    """
    alpha, beta, y0, mask = _answers(params, y, item_idx)
    prior = ability_prior(params, prior_std)
    resp = np.where(mask, y0, np.nan)[None, :]
    return _fit_abilities(alpha, beta, resp, prior)[0]


def ability_hessian(alpha: np.ndarray, beta: np.ndarray, gamma: np.ndarray,
                    prior_precision: np.ndarray) -> np.ndarray:
    """Hessian of the negative log-posterior of gamma (Laplace precision), (d, d)."""
    p = expit(alpha @ gamma - beta)
    w = p * (1.0 - p)
    return (alpha * w[:, None]).T @ alpha + prior_precision


def ability_covariances(params: IRTParams, abilities: np.ndarray, responses: np.ndarray,
                         prior_std: float | None = None, *, name: str = "responses"
                         ) -> np.ndarray:
    """Laplace covariances H_j^-1 of abilities fitted by :func:`fit_ability` on ``responses``.

    Args:
        params: fitted item parameters.
        abilities: (m, d) the MAP abilities.
        responses: (m, n_items) the answers they were fitted on (NaN = not observed).
        prior_std: the prior of the fit (None = the population prior, as fit_ability).
        name: what the caller calls ``responses``, for the error message.

    Returns:
        (m, d, d): the inverse Hessian of each model's negative log-posterior at its ability.
    """
    gam = np.atleast_2d(np.asarray(abilities, dtype=float))
    resp = np.atleast_2d(np.asarray(responses, dtype=float))
    if resp.shape != (gam.shape[0], params.n_items):
        raise ValueError(f"{name} must be ({gam.shape[0]}, {params.n_items}), got {resp.shape}")
    prec = ability_prior(params, prior_std)[1]
    return np.stack([np.linalg.inv(ability_hessian(params.alpha[seen], params.beta[seen], g, prec))
                     for g, seen in zip(gam, ~np.isnan(resp), strict=True)])


def merge_design(params: IRTParams, endpoint_abilities: np.ndarray,
                 item_idx: np.ndarray | None = None) -> np.ndarray:
    """A_ij = alpha_i . gamma_j: logits are A @ lambda - beta under Assumption 1."""
    ends = np.asarray(endpoint_abilities, dtype=float)
    if ends.ndim != 2 or ends.shape[1] != params.n_dims:
        raise ValueError(f"endpoint_abilities must be (n_endpoints, {params.n_dims}), "
                         f"got {ends.shape}")
    alpha = params.alpha if item_idx is None else params.alpha[np.asarray(item_idx, dtype=int)]
    return alpha @ ends.T


def fit_merge_weights(
    params: IRTParams,
    endpoint_abilities: np.ndarray,
    y: np.ndarray,
    item_idx: np.ndarray | None = None,
    constraint: str | None = DEFAULT_LAMBDA_CONSTRAINT,
    ridge: float = DEFAULT_RIDGE,
) -> np.ndarray:
    """Merge weights lambda with gamma_merged = sum_j lambda_j gamma_j (MERGE^3 Assumption 1).

    Maximum likelihood of the merged model's observed answers under the 2PL with
    z_i = sum_j lambda_j (alpha_i . gamma_j) - beta_i (paper section 4; the peers fit it by BFGS
    from lambda = 1/n, unconstrained).

    Args:
        params: fitted item parameters.
        endpoint_abilities: (n_endpoints, d) abilities gamma_j of the endpoints.
        y: 0/1 answers of the merged model (NaN = not observed), aligned with ``item_idx``.
        item_idx: item indices of ``y`` (all items if None).
        constraint: one of :data:`LAMBDA_CONSTRAINTS`. "none" (or None) = unconstrained (as
            the paper; kept inside |lambda_j| <= 10 so that separable answers stay finite);
            "nonneg" = lambda_j >= 0; "simplex" = lambda_j >= 0, sum 1; "ridge" = penalised ML
            with ridge / 2 * |lambda - 1/n|^2 (a Gaussian prior centred on the uniform merge).
            Default "ridge" with ridge = 1, chosen by measurement (docs/irt.md, "Which
            variant estimates best"; benchmarks/lambda_constraint.py).
        ridge: strength of the "ridge" penalty.

    Returns:
        lambda, shape (n_endpoints,).
    """
    constraint = "none" if constraint is None else constraint
    if constraint not in LAMBDA_CONSTRAINTS:
        raise ValueError(f"unknown constraint {constraint!r}; valid: {list(LAMBDA_CONSTRAINTS)}")
    alpha, beta, y0, mask = _answers(params, y, item_idx)
    design = merge_design(params, endpoint_abilities, None)
    if item_idx is not None:
        design = design[np.asarray(item_idx, dtype=int)]
    design, beta, y0 = design[mask], beta[mask], y0[mask]
    n_end = design.shape[1]
    start = np.full(n_end, 1.0 / n_end)
    pen = float(ridge) if constraint == "ridge" else 0.0
    if pen < 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}")

    def fun(lam: np.ndarray) -> tuple[float, np.ndarray]:
        z = design @ lam - beta
        diff = lam - start
        nll = np.sum(np.logaddexp(0.0, z) - y0 * z) + 0.5 * pen * diff @ diff
        return float(nll), design.T @ (expit(z) - y0) + pen * diff

    if constraint == "simplex":
        res = minimize(fun, start, jac=True, method="SLSQP", bounds=[(0.0, 1.0)] * n_end,
                       constraints=[{"type": "eq", "fun": lambda v: v.sum() - 1.0,
                                     "jac": lambda v: np.ones_like(v)}],
                       options={"maxiter": 200, "ftol": 1e-10})
        lam = np.clip(res.x, 0.0, 1.0)
        return lam / lam.sum()
    if constraint == "ridge":
        bounds = None
    elif constraint == "nonneg":
        bounds = [(0.0, LAMBDA_BOUND)] * n_end
    else:
        bounds = [(-LAMBDA_BOUND, LAMBDA_BOUND)] * n_end
    res = minimize(fun, start, jac=True, method="L-BFGS-B", bounds=bounds,
                   options={"maxiter": 500, "gtol": 1e-8})
    return res.x
