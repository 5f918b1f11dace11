"""Estimate: full-dataset accuracy from answers on the subset (tinyBenchmarks, MERGE^3 eq. 4-5).

Notation: D = all N items, D_bar = the subset (n observed items), Y_i the 0/1 answers on D_bar,
w_i the subset weights, p_i = sigmoid(alpha_i . gamma - beta_i) the 2PL probabilities.
Every estimator has the same signature ``(params, subset, y_subset, endpoint_abilities=None,
**options) -> Estimate``; ``y_subset`` is aligned with ``subset.indices`` (NaN = no answer:
the item counts as unseen).

Uncertainty (``Estimate.stderr``): the standard error of the estimate as a predictor of the
accuracy over all N items, from (a) the binomial variance of the answers not observed,
sum_{D \\ D_bar} p_i (1 - p_i) / N^2, and (b) the Laplace (inverse-Hessian) variance of the
fitted gamma or lambda propagated by the delta method; for the merge-aware estimators given
``endpoint_responses`` also (c) the Laplace variance of the endpoint abilities, through gamma
and through the refit of lambda (:mod:`~optuna_merge3.irt._merge_stderr`). Naive: the
binomial variance of a mean of n draws without replacement, with a Laplace-smoothed accuracy so
all-correct answers do not give zero. Mixtures c * naive + (1 - c) * IRT use
c * se_naive + (1 - c) * se_IRT (the bound for perfectly correlated errors: conservative). The
IRT part is multiplied by ``params.meta["stderr_scale"]`` when the fit stored one (small
populations, see :func:`~optuna_merge3.irt._population.crossfit_stderr_scale`). It ignores
the misfit of the IRT model itself (for mp-IRT: a merge whose ability is not in the span of
its endpoints'); on real leaderboard data the 95% intervals still held their level, except
mp-IRT with the unconstrained lambda, whose Laplace variance is too small. docs/irt.md has
the coverage measured.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit

from ._ability import (
    DEFAULT_LAMBDA_CONSTRAINT,
    DEFAULT_RIDGE,
    ability_hessian,
    ability_prior,
    fit_ability,
    fit_merge_weights,
    merge_design,
)
from ._boundary import apply_boundary
from ._extract import Subset
from ._merge_stderr import endpoint_covariances, merge_cov_map
from ._params import IRTParams


@dataclass
class Estimate:
    """An accuracy estimate.

    Attributes:
        value: estimated accuracy over the full dataset, in [0, 1].
        stderr: its standard error (see the module docstring), or None.
        details: intermediate quantities (``c``, ``lambda``, ``gamma``, component estimates).
    """

    value: float
    stderr: float | None = None
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Obs:
    idx: np.ndarray  # observed item indices
    y: np.ndarray  # their answers
    w: np.ndarray  # their weights, renormalised
    n_items: int | None  # N (None: unknown, naive without params)

    @property
    def n(self) -> int:
        return int(self.idx.size)


def _observed(params: IRTParams | None, subset: Subset, y_subset: np.ndarray) -> _Obs:
    if not isinstance(subset, Subset):
        raise TypeError(f"subset must be a Subset, got {type(subset).__name__}")
    y = np.asarray(y_subset, dtype=float).reshape(-1)
    if y.shape != subset.indices.shape:
        raise ValueError(f"y_subset has {y.size} answers for a subset of {subset.indices.size}")
    keep = ~np.isnan(y)
    if not keep.any():
        raise ValueError("no observed answer in y_subset: nothing to estimate from")
    if np.any((y[keep] != 0) & (y[keep] != 1)):
        raise ValueError("y_subset must hold 0, 1 or NaN")
    n_items = params.n_items if params is not None else None
    if n_items is not None and subset.indices.max() >= n_items:
        raise ValueError(f"subset index {subset.indices.max()} out of range for {n_items} items")
    w = subset.weights[keep]
    w = w / w.sum() if w.sum() > 0 else np.full(w.size, 1.0 / w.size)
    return _Obs(subset.indices[keep], y[keep], w, n_items)


def _naive_var(acc: float, obs: _Obs) -> float:
    """Variance of the weighted subset mean as an estimate of the mean over N items."""
    if obs.n_items is None:  # dataset size unknown: no finite-population correction
        fpc = 1.0
    else:
        fpc = (obs.n_items - obs.n) / (obs.n_items - 1) if obs.n_items > 1 else 0.0
    return float(acc * (1.0 - acc) * np.sum(obs.w**2) * max(fpc, 0.0))


def _naive(obs: _Obs) -> tuple[float, float]:
    value = float(obs.w @ obs.y)
    n_eff = 1.0 / np.sum(obs.w**2)
    smoothed = (value * n_eff + 1.0) / (n_eff + 2.0)  # Laplace: all-correct keeps a variance
    return value, float(np.sqrt(_naive_var(smoothed, obs)))


def _irt_part(params: IRTParams, obs: _Obs, gamma: np.ndarray, cov_map: Callable) -> tuple:
    """(n/N) mean_{D_bar} Y + (1 - n/N) mean_{D \\ D_bar} p_i(gamma), and its stderr.

    ``cov_map(grad_gamma)`` returns the delta-method variance for a gradient w.r.t. gamma.
    """
    rest = np.ones(params.n_items, dtype=bool)
    rest[obs.idx] = False
    p = expit(params.alpha[rest] @ gamma - params.beta[rest])
    total = params.n_items
    value = float((obs.y.sum() + p.sum()) / total)
    q = p * (1.0 - p)
    grad = params.alpha[rest].T @ q / total
    # stderr_scale: the cross-fitted widening for small populations (fit_irt).
    scale = float(params.meta.get("stderr_scale", 1.0))
    var = float(q.sum() / total**2 + cov_map(grad)) * scale**2
    value, se = float(np.clip(value, 0.0, 1.0)), float(np.sqrt(max(var, 0.0)))
    # An all-wrong subset may come from a broken model (answers nothing right): _boundary.py.
    value, se, _ = apply_boundary(params, obs.idx, obs.y, value, se)
    return value, se


def _pirt(params: IRTParams, obs: _Obs, prior_std: float | None
          ) -> tuple[float, float, np.ndarray]:
    gamma = fit_ability(params, obs.y, obs.idx, prior_std=prior_std)
    prec = ability_hessian(params.alpha[obs.idx], params.beta[obs.idx], gamma,
                           ability_prior(params, prior_std)[1])
    value, se = _irt_part(params, obs, gamma, lambda g: g @ np.linalg.solve(prec, g))
    return value, se, gamma


def _gp_b(params: IRTParams, n: int, b: float | None) -> float:
    if b is not None:
        return float(b)
    table = params.meta.get("gp_b") or {}
    if not table.get("n"):
        raise ValueError("gp-IRT needs the IRT validation error b: pass b=..., or fit the "
                         "parameters with fit_irt(..., calibrate_gp=True)")
    return float(np.interp(np.log(n), np.log(table["n"]), table["b"]))


def _require(params: IRTParams | None, ends: np.ndarray | None, name: str) -> np.ndarray | None:
    if params is None:
        raise ValueError(f"estimator {name!r} needs fitted IRTParams")
    if name in MERGE_AWARE:
        if ends is None:
            raise ValueError(f"estimator {name!r} is merge-aware: pass endpoint_abilities "
                             "(n_endpoints, d), the endpoints' abilities gamma_j")
        return np.atleast_2d(np.asarray(ends, dtype=float))
    return None


def naive_estimate(params: IRTParams | None, subset: Subset, y_subset: np.ndarray,
                   endpoint_abilities: np.ndarray | None = None) -> Estimate:
    """Naive estimator: sum_{i in D_bar} w_i Y_i (the subset mean; cluster-weighted if w != 1/n).

    ``params`` and ``endpoint_abilities`` are not used. stderr: binomial standard error of a
    mean of n draws without replacement (finite-population corrected).
    """
    obs = _observed(params, subset, y_subset)
    value, se = _naive(obs)
    return Estimate(value, se, {"n": obs.n, "N": obs.n_items})


def pirt_estimate(params: IRTParams, subset: Subset, y_subset: np.ndarray,
                  endpoint_abilities: np.ndarray | None = None, *,
                  ability_prior_std: float | None = None) -> Estimate:
    """p-IRT (tinyBenchmarks, Polo et al. 2024, eq. 3.2).

    Z = (n/N) mean_{D_bar} Y + (1 - n/N) mean_{D \\ D_bar} p_i(gamma_hat), with gamma_hat the
    MAP ability fitted from scratch on the subset answers (:func:`fit_ability`; prior:
    ``ability_prior_std=None`` = the fitted population's, a number s = N(0, s^2 I)).
    """
    _require(params, endpoint_abilities, "pirt")
    obs = _observed(params, subset, y_subset)
    value, se, gamma = _pirt(params, obs, ability_prior_std)
    return Estimate(value, se, {"gamma": gamma, "n": obs.n, "N": obs.n_items})


def gpirt_estimate(params: IRTParams, subset: Subset, y_subset: np.ndarray,
                   endpoint_abilities: np.ndarray | None = None, *, b: float | None = None,
                   ability_prior_std: float | None = None) -> Estimate:
    """gp-IRT (tinyBenchmarks): c * naive + (1 - c) * p-IRT with c = b^2 / (b^2 + v).

    b is the validation error of the IRT prediction at this subset size (``b`` or, by default,
    interpolated in log n from ``params.meta["gp_b"]`` measured by :func:`fit_irt`); v is the
    variance of the naive estimator, P (1 - P) sum_i w_i^2 (N - n) / (N - 1) with P the p-IRT
    estimate. Large n -> small v -> c near 1 (trust the answers); small n -> trust the IRT.
    """
    _require(params, endpoint_abilities, "gpirt")
    obs = _observed(params, subset, y_subset)
    naive, se_naive = _naive(obs)
    pirt, se_pirt, gamma = _pirt(params, obs, ability_prior_std)
    bias = _gp_b(params, obs.n, b)
    var = _naive_var(pirt, obs)
    c = bias**2 / (bias**2 + var) if bias**2 + var > 0 else 1.0
    value = c * naive + (1.0 - c) * pirt
    return Estimate(float(value), float(c * se_naive + (1 - c) * se_pirt),
                    {"c": c, "b": bias, "v": var, "naive": naive, "pirt": pirt, "gamma": gamma,
                     "n": obs.n, "N": obs.n_items})


def _mpirt(params: IRTParams, obs: _Obs, ends: np.ndarray, constraint: str | None,
           ridge: float, end_cov: np.ndarray | None = None
           ) -> tuple[float, float, np.ndarray, np.ndarray]:
    lam = fit_merge_weights(params, ends, obs.y, obs.idx, constraint=constraint, ridge=ridge)
    gamma = ends.T @ lam
    design = merge_design(params, ends, obs.idx)
    p = expit(design @ lam - params.beta[obs.idx])
    w = p * (1 - p)
    prec = (design * w[:, None]).T @ design
    prec += (ridge if constraint == "ridge" else 1e-6) * np.eye(lam.size)
    cov_map = merge_cov_map(params.alpha[obs.idx], p - obs.y, w, design, prec, ends, lam,
                             end_cov)
    value, se = _irt_part(params, obs, gamma, cov_map)
    return value, se, lam, gamma


def mpirt_estimate(params: IRTParams, subset: Subset, y_subset: np.ndarray,
                   endpoint_abilities: np.ndarray | None = None, *,
                   constraint: str | None = DEFAULT_LAMBDA_CONSTRAINT,
                   ridge: float = DEFAULT_RIDGE,
                   endpoint_responses: np.ndarray | None = None) -> Estimate:
    """mp-IRT (MERGE^3 eq. 4): p-IRT with the merged ability gamma = sum_j lambda_j gamma_j.

    (n/N) mean_{D_bar} Y + (1 - n/N) mean_{D \\ D_bar} p_i(sum_j lambda_j gamma_j), lambda fitted
    on the subset answers by :func:`fit_merge_weights` (``constraint``, ``ridge``).
    ``endpoint_responses`` (n_endpoints, N; NaN = not answered), the answers the endpoint
    abilities were fitted on (by :func:`fit_ability`, population prior), adds their error to
    the stderr (:func:`~optuna_merge3.irt._merge_stderr.merge_cov_map`); without them the
    endpoint abilities count as exact.
    """
    ends = _require(params, endpoint_abilities, "mpirt")
    obs = _observed(params, subset, y_subset)
    value, se, lam, gamma = _mpirt(params, obs, ends, constraint, ridge,
                                   endpoint_covariances(params, ends, endpoint_responses))
    return Estimate(value, se, {"lambda": lam, "gamma": gamma, "n": obs.n, "N": obs.n_items})


def gmpirt_estimate(params: IRTParams, subset: Subset, y_subset: np.ndarray,
                    endpoint_abilities: np.ndarray | None = None, *, c: float = 0.5,
                    constraint: str | None = DEFAULT_LAMBDA_CONSTRAINT,
                    ridge: float = DEFAULT_RIDGE,
                    endpoint_responses: np.ndarray | None = None) -> Estimate:
    """gmp-IRT (MERGE^3 eq. 5): c * naive + (1 - c) * mp-IRT, paper default c = 1/2.

    ``endpoint_responses``: as :func:`mpirt_estimate` (the stderr only).
    """
    ends = _require(params, endpoint_abilities, "gmpirt")
    if not 0.0 <= c <= 1.0:
        raise ValueError(f"c must be in [0, 1], got {c}")
    obs = _observed(params, subset, y_subset)
    naive, se_naive = _naive(obs)
    mp, se_mp, lam, gamma = _mpirt(params, obs, ends, constraint, ridge,
                                   endpoint_covariances(params, ends, endpoint_responses))
    return Estimate(float(c * naive + (1 - c) * mp), float(c * se_naive + (1 - c) * se_mp),
                    {"c": c, "lambda": lam, "gamma": gamma, "naive": naive, "mpirt": mp,
                     "n": obs.n, "N": obs.n_items})


def endpoint_gp_weights(params: IRTParams, subset: Subset, endpoint_responses: np.ndarray,
                        grid: np.ndarray | None = None, ability_prior_std: float | None = None
                        ) -> np.ndarray:
    """Per-endpoint c_j of gmp-IRT* (MERGE^3 appendix C.2.3).

    For endpoint j with full-data answers Y_j: estimate its accuracy from the subset as
    c * naive_j + (1 - c) * p-IRT_j and pick the c of ``grid`` (default 0, 0.05, ..., 1) with
    the smallest absolute error against mean(Y_j) (ties: the mean of the tied values).

    Endpoints with missing answers (NaN; real leaderboard data is ragged) are judged on the
    items they answered: the target is the mean over those items and the p-IRT part predicts
    only the answered items outside the subset, so estimate and target cover the same items.
    An endpoint with no answer on the subset gets c_j = NaN (nothing to judge c on).
    """
    resp = np.atleast_2d(np.asarray(endpoint_responses, dtype=float))
    if resp.shape[1] != params.n_items:
        raise ValueError(f"endpoint_responses must be (n_endpoints, {params.n_items}), "
                         f"got {resp.shape}")
    grid = np.linspace(0.0, 1.0, 21) if grid is None else np.asarray(grid, dtype=float)
    out = []
    for row in resp:
        y_sub = row[subset.indices]
        if np.isnan(y_sub).all():
            out.append(np.nan)
            continue
        obs = _observed(params, subset, y_sub)
        naive, _ = _naive(obs)
        gamma = fit_ability(params, obs.y, obs.idx, prior_std=ability_prior_std)
        rest = ~np.isnan(row)
        n_answered = int(rest.sum())
        rest[obs.idx] = False
        p_rest = expit(params.alpha[rest] @ gamma - params.beta[rest])
        pirt = float((obs.y.sum() + p_rest.sum()) / n_answered)
        err = np.abs(grid * naive + (1 - grid) * pirt - np.nanmean(row))
        out.append(float(grid[np.isclose(err, err.min(), rtol=0, atol=1e-12)].mean()))
    return np.asarray(out)


def gmpirt_star_estimate(params: IRTParams, subset: Subset, y_subset: np.ndarray,
                         endpoint_abilities: np.ndarray | None = None, *,
                         endpoint_responses: np.ndarray | None = None,
                         c_grid: np.ndarray | None = None,
                         constraint: str | None = DEFAULT_LAMBDA_CONSTRAINT,
                         ridge: float = DEFAULT_RIDGE) -> Estimate:
    """gmp-IRT* (MERGE^3 appendix C.2.3): gmp-IRT with c = mean_j c_j from the endpoints.

    c_j minimises the gp-IRT error of endpoint j estimated from the same subset
    (:func:`endpoint_gp_weights`); ``endpoint_responses`` (n_endpoints, N) are the endpoints'
    full-data 0/1 answers (NaN allowed). c is the mean over the endpoints with at least one
    answer on the subset; with none, the paper's c = 1/2.
    """
    ends = _require(params, endpoint_abilities, "gmpirt_star")
    if endpoint_responses is None:
        raise ValueError("gmpirt_star needs endpoint_responses (n_endpoints, n_items): the "
                         "endpoints' full-data answers")
    c_each = endpoint_gp_weights(params, subset, endpoint_responses, c_grid)
    judged = c_each[np.isfinite(c_each)]
    # No endpoint answered any subset item: nothing to tune c on, use the paper's c = 1/2.
    c = float(judged.mean()) if judged.size else 0.5
    est = gmpirt_estimate(params, subset, y_subset, ends, c=c, constraint=constraint,
                          ridge=ridge, endpoint_responses=endpoint_responses)
    est.details["c_endpoints"] = c_each
    return est


ESTIMATORS: dict[str, Callable[..., Estimate]] = {
    "naive": naive_estimate,
    "pirt": pirt_estimate,
    "gpirt": gpirt_estimate,
    "mpirt": mpirt_estimate,
    "gmpirt": gmpirt_estimate,
    "gmpirt_star": gmpirt_star_estimate,
}
MERGE_AWARE = ("mpirt", "gmpirt", "gmpirt_star")


def estimate_accuracy(estimator: str, params: IRTParams | None, subset: Subset,
                      y_subset: np.ndarray, endpoint_abilities: np.ndarray | None = None,
                      **kw: Any) -> Estimate:
    """Estimate full-dataset accuracy with the registered ``estimator``.

    Args:
        estimator: one of :data:`ESTIMATORS`.
        params: fitted item parameters (may be None only for "naive").
        subset: the evaluation subset.
        y_subset: 0/1 answers on ``subset.indices`` (same order; NaN = no answer).
        endpoint_abilities: (n_endpoints, d), required by "mpirt", "gmpirt", "gmpirt_star".
        **kw: estimator options (``b``, ``c``, ``constraint``, ``ridge``,
            ``endpoint_responses``: required by "gmpirt_star", and the merge-aware stderr
            counts the endpoint abilities' error with them, ...).
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; valid: {sorted(ESTIMATORS)}")
    return ESTIMATORS[estimator](params, subset, y_subset, endpoint_abilities, **kw)
