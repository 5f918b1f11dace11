"""2PL MAP fitting: gradients, recovery, determinism, persistence, input validation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad

from optuna_merge3.irt import (
    IRTParams,
    fit_irt,
    item_probabilities,
    n_dims_scores,
    select_n_dims,
)
from optuna_merge3.irt._fit import neg_log_posterior


def test_gradient_matches_finite_differences():
    rng = np.random.default_rng(0)
    n_models, n_items, d = 7, 5, 2
    raw = (rng.random((n_models, n_items)) < 0.6).astype(float)
    mask = (rng.random(raw.shape) > 0.2).astype(float)  # missing cells must not contribute
    y = raw * mask
    x = rng.standard_normal(n_items * (d + 1) + n_models * d)
    args = (y, mask, d, (0.7**2, 2.0**2, 1.3**2))
    err = check_grad(lambda v: neg_log_posterior(v, *args)[0],
                     lambda v: neg_log_posterior(v, *args)[1], x, epsilon=1e-6)
    grad_norm = np.linalg.norm(neg_log_posterior(x, *args)[1])
    assert err < 1e-5 * max(1.0, grad_norm)


def test_missing_cells_are_ignored_by_the_objective():
    rng = np.random.default_rng(1)
    y = (rng.random((4, 3)) < 0.5).astype(float)
    mask = np.ones_like(y)
    mask[0, 1] = 0.0
    x = rng.standard_normal(3 * 3 + 4 * 2)
    y_other = y.copy()
    y_other[0, 1] = 1.0 - y[0, 1]  # the value under a masked cell changes nothing
    a = neg_log_posterior(x, y * mask, mask, 2, (1.0, 1.0, 1.0))
    b = neg_log_posterior(x, y_other * mask, mask, 2, (1.0, 1.0, 1.0))
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_probabilities_recovered_up_to_rotation(fitted):
    true_p = fitted.world.probabilities(fitted.gamma)
    fit_p = item_probabilities(fitted.params, fitted.abilities)
    assert fit_p.shape == true_p.shape
    assert np.corrcoef(true_p.ravel(), fit_p.ravel())[0, 1] > 0.93
    assert np.mean(np.abs(true_p - fit_p)) < 0.06
    # Item difficulty ordering at the population's centre is recovered too.
    corr_beta = np.corrcoef(fitted.params.beta, fitted.world.beta)[0, 1]
    assert corr_beta > 0.9


def test_fit_is_deterministic_per_seed_and_records_metadata(fitted):
    rng = np.random.default_rng(5)
    resp = fitted.responses[:80, :40]
    a, ga = fit_irt(resp, n_dims=2, random_state=3, calibrate_gp=False)
    b, gb = fit_irt(resp, n_dims=2, random_state=3, calibrate_gp=False)
    assert np.array_equal(a.alpha, b.alpha) and np.array_equal(ga, gb)
    assert a.meta["d"] == 2 and a.meta["fingerprint"] == b.meta["fingerprint"]
    assert a.meta["priors"]["ability_std"] == 1.0 and a.meta["fit_seconds"] >= 0
    other = resp.copy()
    other[0, 0] = 1.0 - np.nan_to_num(other[0, 0])
    c, _ = fit_irt(other, n_dims=2, random_state=int(rng.integers(10)), calibrate_gp=False)
    assert c.meta["fingerprint"] != a.meta["fingerprint"]


def test_gp_calibration_table_is_stored(fitted):
    table = fitted.params.meta["gp_b"]
    assert table["n"] == sorted(table["n"]) and len(table["n"]) >= 4
    assert all(np.isfinite(table["b"])) and all(b > 0 for b in table["b"])
    # The IRT prediction beats the plain subset mean at small n (that is its point).
    assert table["b"][0] < table["naive_rmse"][0]


def test_edge_cases_give_finite_parameters():
    rng = np.random.default_rng(2)
    resp = (rng.random((50, 8)) < 0.5).astype(float)
    resp[:, 0] = 1.0  # an item every model solves
    resp[:, 1] = 0.0  # an item no model solves
    resp[0] = 1.0  # an all-correct model
    resp[1] = 0.0  # an all-wrong model
    resp[2, 3:] = np.nan  # a model with few observed cells
    resp[:, 7] = np.nan
    resp[3, 7] = 1.0  # an item with one observation
    params, abilities = fit_irt(resp, n_dims=2, calibrate_gp=False)
    assert np.all(np.isfinite(params.alpha)) and np.all(np.isfinite(params.beta))
    assert np.all(np.isfinite(abilities))
    p = item_probabilities(params, abilities)
    assert p[:, 0].min() > 0.5 and p[:, 1].max() < 0.5
    one_item, ab = fit_irt(resp[:, :1], n_dims=1, calibrate_gp=False)
    assert one_item.n_items == 1 and np.all(np.isfinite(ab))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        (np.zeros(5), "n_models, n_items"),
        (np.full((3, 2), np.nan), "no observed"),
        (np.array([[0.0, 2.0]]), "0, 1 or NaN"),
    ],
)
def test_invalid_responses_raise(bad, match):
    with pytest.raises(ValueError, match=match):
        fit_irt(bad, n_dims=1)


def test_invalid_options_raise():
    resp = np.array([[0.0, 1.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match="n_dims"):
        fit_irt(resp, n_dims=0)
    with pytest.raises(ValueError, match="alpha_prior_std"):
        fit_irt(resp, n_dims=1, alpha_prior_std=0.0)
    with pytest.raises(ValueError, match="item_ids"):
        fit_irt(resp, n_dims=1, item_ids=["a"])


def test_save_load_round_trip(tmp_path, fitted):
    path = tmp_path / "irt_task.npz"
    fitted.params.save(path)
    assert path.exists() and path.with_suffix(".json").exists()
    loaded = IRTParams.load(path)
    assert np.array_equal(loaded.alpha, fitted.params.alpha)
    assert np.array_equal(loaded.beta, fitted.params.beta)
    assert loaded.item_ids == fitted.params.item_ids
    assert loaded.meta == fitted.params.meta
    assert loaded.n_items == 150 and loaded.n_dims == 3
    fitted.params.save(tmp_path / "plain")  # a name without suffix works as well
    assert IRTParams.load(tmp_path / "plain").item_ids == fitted.params.item_ids


def test_subset_and_validation(fitted):
    sub = fitted.params.subset([4, 2])
    assert sub.item_ids == ["4", "2"] and sub.n_items == 2
    assert np.array_equal(sub.alpha[1], fitted.params.alpha[2])
    with pytest.raises(ValueError, match="beta"):
        IRTParams(np.zeros((3, 2)), np.zeros(2))
    with pytest.raises(ValueError, match="item_ids"):
        IRTParams(np.zeros((3, 2)), np.zeros(3), ["a"])


def test_select_n_dims_prefers_the_true_dimension_over_one():
    from optuna_merge3.irt._simulate import make_world

    rng = np.random.default_rng(7)
    world = make_world(60, 3, rng, general=0.0)  # three equally strong skills
    resp = world.sample(rng.standard_normal((400, 3)), rng)
    assert select_n_dims(resp, candidates=(1, 3), criterion="logloss", random_state=0) == 3
    scores = n_dims_scores(resp, candidates=(1, 3), criterion="accuracy", repeats=1)
    assert set(scores) == {1, 3} and all(0 < v < 0.2 for v in scores.values())
    with pytest.raises(ValueError, match="valid"):
        select_n_dims(resp, criterion="aic")
