"""MAP fitting of a multidimensional 2PL model (items and abilities jointly) with scipy."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit
from threadpoolctl import threadpool_limits

from ._ability import _fit_abilities, ability_prior
from ._params import IRTParams, responses_fingerprint
from ._population import (
    CROSSFIT_MAX_MODELS,
    boundary_mixture,
    crossfit_stderr_scale,
    population_ability_prior,
)

_logger = logging.getLogger(__name__)

DEFAULT_N_DIMS = 10
#: Subset sizes at which the IRT prediction error b(n) for gp-IRT is measured at fit time.
GP_CALIBRATION_SIZES = (5, 10, 20, 30, 50, 100, 200)


def check_responses(responses: np.ndarray) -> np.ndarray:
    """A float (n_models, n_items) copy of ``responses``; raises on anything but 0/1/NaN."""
    arr = np.array(responses, dtype=float)
    if arr.ndim != 2 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"responses must be a non-empty (n_models, n_items) array, got {arr.shape}")
    obs = arr[~np.isnan(arr)]
    if obs.size == 0:
        raise ValueError("responses hold no observed (non-NaN) cell")
    if np.any((obs != 0) & (obs != 1)):
        raise ValueError("responses must be 0, 1 or NaN")
    return arr


def softplus_sigmoid(z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log(1 + e^z) and sigmoid(z) from one exp: np.logaddexp is ~5x slower and dominated
    the fit's time."""
    e = np.exp(-np.abs(z))
    one_e = 1.0 + e
    softplus = np.maximum(z, 0.0) + np.log1p(e)
    sigmoid = np.where(z >= 0, 1.0, e) / one_e
    return softplus, sigmoid


def neg_log_posterior(
    x: np.ndarray, y: np.ndarray, mask: np.ndarray, n_dims: int,
    prior_vars: tuple[float, float, float],
) -> tuple[float, np.ndarray]:
    """Negative log-posterior of the 2PL per observed cell, and its analytic gradient.

    With Z = Gamma @ alpha.T - beta (models x items), the loss is
    sum_obs [log(1 + e^Z) - Y Z] + |alpha|^2/(2 s_a^2) + |beta|^2/(2 s_b^2) + |Gamma|^2/(2 s_g^2),
    divided by the number of observed cells (same optimum, tolerances independent of size).
    Gradient: R = mask * (sigmoid(Z) - Y); d/dGamma = R alpha, d/dalpha = R^T Gamma,
    d/dbeta = -sum_m R (plus the prior terms). No loop over cells.

    Args:
        x: concatenation of alpha (n_items * d), beta (n_items), Gamma (n_models * d).
        y: responses with missing cells set to 0, (n_models, n_items).
        mask: 1.0 where observed, (n_models, n_items).
        n_dims: d.
        prior_vars: prior variances (s_a^2, s_b^2, s_g^2).
    """
    n_models, n_items = y.shape
    d = n_dims
    alpha = x[: n_items * d].reshape(n_items, d)
    beta = x[n_items * d : n_items * (d + 1)]
    gamma = x[n_items * (d + 1) :].reshape(n_models, d)
    va, vb, vg = prior_vars
    scale = 1.0 / mask.sum()
    z = gamma @ alpha.T - beta
    softplus, sigmoid = softplus_sigmoid(z)
    nll = np.sum(mask * (softplus - y * z))
    nll += 0.5 * (np.sum(alpha * alpha) / va + beta @ beta / vb + np.sum(gamma * gamma) / vg)
    r = mask * (sigmoid - y)
    g_alpha = r.T @ gamma + alpha / va
    g_beta = -r.sum(axis=0) + beta / vb
    g_gamma = r @ alpha + gamma / vg
    grad = np.concatenate([g_alpha.ravel(), g_beta, g_gamma.ravel()])
    return float(nll * scale), grad * scale


def _initial_point(y: np.ndarray, mask: np.ndarray, d: int, rng: np.random.Generator) -> tuple:
    """Deterministic start: beta from item means, alpha / Gamma from an SVD of the residuals."""
    n_models, n_items = y.shape
    counts = mask.sum(axis=0)
    mean = np.clip((np.sum(y * mask, axis=0) + 0.5) / (counts + 1.0), 0.02, 0.98)
    beta = -np.log(mean / (1.0 - mean))
    resid = mask * (y - mean)
    u, s, vt = np.linalg.svd(resid, full_matrices=False)
    k = min(d, s.size)
    gamma = 0.01 * rng.standard_normal((n_models, d))
    alpha = 0.01 * rng.standard_normal((n_items, d))
    # Unit-variance abilities; ~4x maps probability-scale loadings to the logit scale.
    gamma[:, :k] += u[:, :k] * np.sqrt(n_models)
    alpha[:, :k] += 4.0 * vt[:k].T * s[:k] / np.sqrt(n_models)
    return alpha, beta, gamma


def fit_irt(
    responses: np.ndarray,
    n_dims: int = DEFAULT_N_DIMS,
    item_ids: Sequence[str] | None = None,
    *,
    alpha_prior_std: float = 0.5,
    beta_prior_std: float = 3.0,
    ability_prior_std: float = 1.0,
    max_iter: int = 2000,
    tol: float = 1e-9,
    random_state: int | np.random.Generator | None = 0,
    calibrate_gp: bool = True,
    population_prior: bool = True,
    calibrate_stderr: bool = True,
) -> tuple[IRTParams, np.ndarray]:
    """Fit a multidimensional 2PL P(Y_im = 1) = sigmoid(alpha_i . gamma_m - beta_i) by MAP.

    Items (alpha, beta) and the reference models' abilities gamma are fitted jointly with
    scipy's L-BFGS-B on the analytic gradient of :func:`neg_log_posterior` (Gaussian priors,
    missing cells masked). tinyBenchmarks / MERGE^3 fit the same model with py-irt variational
    inference; MAP gives the same point estimates up to the prior. BLAS is limited to one
    thread inside the fit (on a busy 2-core machine multi-threaded OpenBLAS was ~15x slower).

    Identifiability: gamma is only defined up to an orthogonal rotation for d > 1 (the prior
    fixes the scale); everything downstream uses probabilities, which are invariant.

    Args:
        responses: (n_models, n_items), 0/1, NaN for missing cells.
        n_dims: d (tinyBenchmarks picks it by validation from {2, 5, 10, 15}; see
            :func:`select_n_dims`).
        item_ids: ids of the items (default "0", "1", ...).
        alpha_prior_std: std of the N(0, s^2) prior on each alpha component.
        beta_prior_std: std of the N(0, s^2) prior on beta.
        ability_prior_std: std of the N(0, s^2) prior on each gamma component.
        max_iter: L-BFGS-B iteration cap.
        tol: relative tolerance on the objective (L-BFGS-B ``ftol``).
        random_state: seed or generator for the initial jitter (the fit is deterministic for
            a seed).
        calibrate_gp: also measure the IRT prediction error b(n) for gp-IRT (stored in
            ``meta["gp_b"]``, see :func:`calibrate_gp_error`).
        population_prior: store the fitted population's ability distribution as the prior of
            a new model (``meta["ability_prior"]``, see :func:`population_ability_prior`)
            and, when some models score 0%, their share and the others' ability
            distribution (``meta["boundary"]``, irt/_boundary.py); False keeps
            N(0, ability_prior_std^2 I), the package's behaviour before both.
        calibrate_stderr: with at most ``CROSSFIT_MAX_MODELS`` models, refit on folds of the
            models and store ``meta["stderr_scale"]``, the factor the IRT estimators' stderr
            needs to cover held-out models (:func:`crossfit_stderr_scale`).

    Returns:
        (params, abilities): the item parameters and the (n_models, d) MAP abilities.
    """
    arr = check_responses(responses)
    if int(n_dims) != n_dims or n_dims < 1:
        raise ValueError(f"n_dims must be a positive integer, got {n_dims}")
    for name, val in (("alpha_prior_std", alpha_prior_std), ("beta_prior_std", beta_prior_std),
                      ("ability_prior_std", ability_prior_std)):
        if not val > 0:
            raise ValueError(f"{name} must be > 0, got {val}")
    n_models, n_items = arr.shape
    if item_ids is not None and len(item_ids) != n_items:
        raise ValueError(f"{len(item_ids)} item_ids for {n_items} items")
    rng = np.random.default_rng(random_state)
    mask = (~np.isnan(arr)).astype(float)
    y = np.where(mask > 0, arr, 0.0)
    d = int(n_dims)
    prior_vars = (alpha_prior_std**2, beta_prior_std**2, ability_prior_std**2)
    started = time.perf_counter()
    with threadpool_limits(limits=1, user_api="blas"):
        alpha0, beta0, gamma0 = _initial_point(y, mask, d, rng)
        x0 = np.concatenate([alpha0.ravel(), beta0, gamma0.ravel()])
        res = minimize(neg_log_posterior, x0, args=(y, mask, d, prior_vars), jac=True,
                       method="L-BFGS-B",
                       options={"maxiter": int(max_iter), "ftol": tol, "gtol": 1e-7,
                                "maxcor": 20})
        x = res.x
        alpha = x[: n_items * d].reshape(n_items, d).copy()
        beta = x[n_items * d : n_items * (d + 1)].copy()
        gamma = x[n_items * (d + 1) :].reshape(n_models, d).copy()
        fit_seconds = time.perf_counter() - started
        if not res.success:
            _logger.warning("2PL fit stopped before convergence: %s", res.message)
        meta = {
            "d": d,
            "priors": {"alpha_std": alpha_prior_std, "beta_std": beta_prior_std,
                       "ability_std": ability_prior_std},
            "fingerprint": responses_fingerprint(arr),
            "n_models": n_models,
            "n_observed": int(mask.sum()),
            "fit_seconds": round(fit_seconds, 4),
            "iterations": int(res.nit),
            "converged": bool(res.success),
            "neg_log_posterior": float(res.fun),
            "random_state": random_state if isinstance(random_state, int) else None,
        }
        ids = list(item_ids) if item_ids is not None else None
        params = IRTParams(alpha, beta, ids or [], meta)
        if population_prior:
            params.meta["ability_prior"] = population_ability_prior(
                params, gamma, mask, 1.0 / ability_prior_std**2)
            boundary = boundary_mixture(params, gamma, arr, 1.0 / ability_prior_std**2)
            if boundary:
                params.meta["boundary"] = boundary
        if calibrate_stderr and population_prior and n_models <= CROSSFIT_MAX_MODELS:
            refit = functools.partial(
                _refit, n_dims=d, alpha_prior_std=alpha_prior_std, beta_prior_std=beta_prior_std,
                ability_prior_std=ability_prior_std, max_iter=max_iter, tol=tol, random_state=rng)
            params.meta["stderr_scale"] = crossfit_stderr_scale(arr, refit, rng)
        if calibrate_gp:
            params.meta["gp_b"] = calibrate_gp_error(params, arr, rng)
    _logger.info("fitted 2PL d=%d on %dx%d in %.2fs (%d iterations)", d, n_models, n_items,
                 fit_seconds, res.nit)
    return params, gamma


def _refit(responses: np.ndarray, **kw) -> IRTParams:
    return fit_irt(responses, calibrate_gp=False, calibrate_stderr=False, **kw)[0]


def calibrate_gp_error(
    params: IRTParams, responses: np.ndarray, rng: np.random.Generator, n_models: int = 200,
    sizes: Sequence[int] = GP_CALIBRATION_SIZES,
) -> dict[str, list[float]]:
    """Error b(n) of the p-IRT prediction of a model's accuracy from n random items.

    For up to ``n_models`` reference models and each size n: draw n of the model's observed
    items, fit its ability on them (items fixed), predict its accuracy over all its observed
    items with p-IRT, and take the root mean squared error against the truth. This is the
    "validation error of the IRT prediction" b of tinyBenchmarks' gp-IRT weight
    c = b^2 / (b^2 + v). It is measured on the fitting models (the items' parameters saw them;
    with thousands of models the optimism is small), so nothing has to be held out of the fit.

    Returns:
        {"n": sizes used, "b": RMSE of p-IRT, "naive_rmse": RMSE of the plain subset mean}.
    """
    arr = np.asarray(responses, dtype=float)
    observed = ~np.isnan(arr)
    rows = rng.permutation(arr.shape[0])[:n_models]
    out: dict[str, list[float]] = {"n": [], "b": [], "naive_rmse": []}
    for n in sizes:
        keep = [m for m in rows if observed[m].sum() > n]
        if len(keep) < 5:
            continue
        sub = np.full((len(keep), arr.shape[1]), np.nan)
        for r, m in enumerate(keep):
            items = rng.choice(np.flatnonzero(observed[m]), size=n, replace=False)
            sub[r, items] = arr[m, items]
        gamma = _fit_abilities(params.alpha, params.beta, sub, ability_prior(params))
        p = expit(gamma @ params.alpha.T - params.beta)
        seen, full = ~np.isnan(sub), observed[keep]
        unseen = full & ~seen
        total = full.sum(axis=1)
        pirt = (np.nansum(sub, axis=1) + np.sum(p * unseen, axis=1)) / total
        truth = np.nansum(np.where(full, arr[keep], 0.0), axis=1) / total
        naive = np.nanmean(sub, axis=1)
        out["n"].append(int(n))
        out["b"].append(float(np.sqrt(np.mean((pirt - truth) ** 2))))
        out["naive_rmse"].append(float(np.sqrt(np.mean((naive - truth) ** 2))))
    return out
