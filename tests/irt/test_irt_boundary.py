"""Broken models (0%) next to the 2PL (irt/_boundary.py)."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import IRTParams, estimate_accuracy, extract_subset, fit_irt
from optuna_merge3.irt._boundary import apply_boundary, broken_posterior
from optuna_merge3.irt._simulate import make_world


@pytest.fixture(scope="module")
def broken():
    """80 working models and 40 broken ones (every answer wrong), 150 items, d = 2; new
    models: 60 working, 30 broken."""
    rng = np.random.default_rng(1)
    world = make_world(150, 2, rng)
    ref = np.vstack([world.sample(rng.standard_normal((80, 2)), rng), np.zeros((40, 150))])
    params, _ = fit_irt(ref, n_dims=2, calibrate_gp=False)
    new = np.vstack([world.sample(rng.standard_normal((60, 2)), rng), np.zeros((30, 150))])
    return params, new


def _errors(params, rows, name="pirt"):
    err = []
    for m, y in enumerate(rows):
        sub = extract_subset("random", 150, 20, random_state=m)
        kw = {"endpoint_abilities": params.ability_prior()[0][None, :] + np.eye(2)}
        est = estimate_accuracy(
            name, params, sub, y[sub.indices], **(kw if name == "mpirt" else {})
        )
        err.append(abs(est.value - y.mean()))
    return np.array(err)


def test_the_fit_stores_the_shares_and_the_others_prior(broken):
    params, _ = broken
    stored = params.meta["boundary"]
    assert stored["zero"] == pytest.approx(40 / 120)
    # The others' ability distribution, without the broken models.
    assert not np.allclose(stored["mean"], params.ability_prior()[0])


@pytest.mark.parametrize("name", ["pirt", "mpirt"])
def test_broken_models_are_estimated_at_zero_and_working_ones_no_worse(broken, name):
    params, new = broken
    plain = IRTParams(
        params.alpha,
        params.beta,
        params.item_ids,
        {k: v for k, v in params.meta.items() if k != "boundary"},
    )
    mixed, before = _errors(params, new, name), _errors(plain, new, name)
    work, dead = slice(0, 60), slice(60, 90)
    assert before[dead].mean() > 0.01  # the 2PL alone cannot reach 0%
    assert mixed[dead].mean() < 0.2 * before[dead].mean()
    # Working models: unchanged unless they answered all 20 wrong (then pulled toward 0).
    assert mixed[work].mean() <= before[work].mean() + 0.002
    assert mixed.mean() < before.mean()


def test_posterior_grows_with_the_evidence_and_needs_a_share(broken):
    params, _ = broken
    # Hard items answered wrong say little; more all-wrong items say "broken" more surely.
    order = np.argsort(params.beta)  # easiest first
    few, many = order[:3], order[:20]
    assert 0 < broken_posterior(params, few) < broken_posterior(params, many) < 1
    assert broken_posterior(IRTParams(params.alpha, params.beta), many) == 0.0


def test_only_all_wrong_answers_and_the_mixture_variance(broken):
    params, _ = broken
    idx = np.arange(10)
    for y in (np.r_[np.ones(3), np.zeros(7)], np.ones(10)):  # 100% is the 2PL's tail
        assert apply_boundary(params, idx, y, 0.3, 0.05) == (0.3, 0.05, 0.0)
    value, se, post = apply_boundary(params, idx, np.zeros(10), 0.3, 0.05)
    assert 0 < post < 1 and value == pytest.approx((1 - post) * 0.3)
    assert se**2 == pytest.approx((1 - post) * 0.05**2 + post * (1 - post) * 0.3**2)


def test_no_boundary_without_models_at_zero(fitted, tmp_path):
    assert "boundary" not in fitted.params.meta
    perfect = fit_irt(
        np.vstack([fitted.responses[:50], np.ones((5, 150))]),
        n_dims=3,
        calibrate_gp=False,
        calibrate_stderr=False,
    )[0]
    assert "boundary" not in perfect.meta
    params = fit_irt(
        np.vstack([fitted.responses[:50], np.zeros((5, 150))]),
        n_dims=3,
        calibrate_gp=False,
        calibrate_stderr=False,
    )[0]
    assert params.meta["boundary"]["zero"] == pytest.approx(5 / 55)
    params.save(tmp_path / "p.npz")
    assert IRTParams.load(tmp_path / "p.npz").meta["boundary"] == params.meta["boundary"]
