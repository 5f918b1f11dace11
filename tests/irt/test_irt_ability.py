"""Ability of one model and merge weights lambda (MERGE^3 Assumption 1)."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import IRTParams, fit_ability, fit_merge_weights, item_probabilities
from optuna_merge3.irt._simulate import make_world


def _true_params(n_items: int, d: int, seed: int):
    rng = np.random.default_rng(seed)
    world = make_world(n_items, d, rng)
    return world, IRTParams(world.alpha, world.beta), rng


def test_ability_recovered_with_many_items():
    world, params, rng = _true_params(3000, 3, 0)
    gamma = np.array([0.8, -0.5, 0.3])
    est = fit_ability(params, world.sample(gamma, rng))
    assert np.allclose(est, gamma, atol=0.15)


def test_ability_on_a_subset_and_with_missing_answers(fitted):
    y = fitted.responses[0]
    full = fit_ability(fitted.params, y)
    idx = np.arange(0, 150, 2)
    part = fit_ability(fitted.params, y[idx], idx)
    assert part.shape == (3,) and np.all(np.isfinite(part))
    with_nan = y.copy()
    with_nan[1::2] = np.nan  # NaN answers count as not observed
    assert np.allclose(fit_ability(fitted.params, with_nan), part, atol=1e-5)
    assert np.linalg.norm(full - fitted.abilities[0]) < 0.3


@pytest.mark.parametrize("value", [0.0, 1.0])
def test_all_correct_and_all_wrong_stay_finite(fitted, value):
    gamma = fit_ability(fitted.params, np.full(20, value), np.arange(20))
    assert np.all(np.isfinite(gamma)) and np.linalg.norm(gamma) < 10
    p = item_probabilities(fitted.params, gamma)[:20].mean()
    assert p > 0.7 if value == 1.0 else p < 0.3


def test_no_observed_answer_gives_the_prior_mean(fitted):
    mean, _ = fitted.params.ability_prior()
    assert np.allclose(fit_ability(fitted.params, np.full(150, np.nan)), mean)
    assert np.allclose(fit_ability(fitted.params, np.full(150, np.nan), prior_std=1.0), 0.0)


def test_ability_input_errors(fitted):
    with pytest.raises(ValueError, match="item_idx"):
        fit_ability(fitted.params, np.ones(10))
    with pytest.raises(ValueError, match="entries"):
        fit_ability(fitted.params, np.ones(3), np.arange(4))
    with pytest.raises(ValueError, match="out of range"):
        fit_ability(fitted.params, np.ones(2), np.array([0, 150]))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        fit_ability(fitted.params, np.full(150, 0.5))
    with pytest.raises(ValueError, match="gamma"):
        item_probabilities(fitted.params, np.zeros(4))


@pytest.mark.parametrize("constraint", [None, "nonneg", "simplex", "ridge"])
def test_lambda_recovered_for_a_synthetic_merge(constraint):
    world, params, rng = _true_params(20000, 3, 1)
    ends = np.array([[1.0, 0.5, -0.5], [-0.5, -0.3, 1.0]])
    lam = np.array([0.3, 0.7])
    y = world.sample(ends.T @ lam, rng)
    est = fit_merge_weights(params, ends, y, constraint=constraint, ridge=1.0)
    assert est.shape == (2,)
    assert np.allclose(est, lam, atol=0.08)
    if constraint == "simplex":
        assert np.isclose(est.sum(), 1.0) and np.all(est >= 0)


def test_lambda_outside_the_simplex_is_found_only_without_simplex():
    world, params, rng = _true_params(20000, 3, 2)
    ends = np.array([[1.0, 0.5, -0.5], [-0.5, -0.3, 1.0]])
    lam = np.array([1.3, 0.2])  # an extrapolating merge (sum 1.5)
    y = world.sample(ends.T @ lam, rng)
    free = fit_merge_weights(params, ends, y, constraint=None)
    assert np.allclose(free, lam, atol=0.1)
    simplex = fit_merge_weights(params, ends, y, constraint="simplex")
    assert np.isclose(simplex.sum(), 1.0) and not np.allclose(simplex, lam, atol=0.1)


def test_lambda_from_fitted_parameters_predicts_the_merge(fitted):
    rng = np.random.default_rng(3)
    ends_true = fitted.gamma[:3]
    lam = np.array([0.2, 0.5, 0.3])
    y = fitted.world.sample(ends_true.T @ lam, rng)
    ends_fit = np.stack([fit_ability(fitted.params, r) for r in fitted.world.sample(ends_true, rng)])
    est = fit_merge_weights(fitted.params, ends_fit, y)
    p_est = item_probabilities(fitted.params, ends_fit.T @ est)
    p_true = fitted.world.probabilities(ends_true.T @ lam)
    assert np.mean(np.abs(p_est - p_true)) < 0.08


@pytest.mark.parametrize("constraint", [None, "nonneg", "simplex", "ridge"])
def test_separable_merge_answers_stay_finite(fitted, constraint):
    ends = fitted.abilities[:2]
    idx = np.arange(10)
    for value in (0.0, 1.0):
        lam = fit_merge_weights(fitted.params, ends, np.full(10, value), idx,
                                constraint=constraint)
        assert np.all(np.isfinite(lam))
        if constraint != "ridge":  # the box |lambda_j| <= 10 of the ML variants
            assert np.all(np.abs(lam) <= 10.0 + 1e-9)


def test_merge_weight_errors(fitted):
    ends = fitted.abilities[:2]
    with pytest.raises(ValueError, match="valid"):
        fit_merge_weights(fitted.params, ends, fitted.responses[0], constraint="box")
    with pytest.raises(ValueError, match="endpoint_abilities"):
        fit_merge_weights(fitted.params, np.zeros((2, 5)), fitted.responses[0])
    with pytest.raises(ValueError, match="ridge"):
        fit_merge_weights(fitted.params, ends, fitted.responses[0], constraint="ridge", ridge=-1)
