"""Estimators: unbiasedness and stderr calibration in simulation, merge-awareness, edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import (
    ESTIMATORS,
    IRTParams,
    Subset,
    estimate_accuracy,
    extract_subset,
    fit_ability,
    gmpirt_estimate,
    naive_estimate,
)
from optuna_merge3.irt._estimators import endpoint_gp_weights

MERGE_AWARE = ("mpirt", "gmpirt", "gmpirt_star")
N_DRAWS = 300


@pytest.fixture(scope="module")
def simulation(fitted):
    """N_DRAWS merged models gamma = sum_j lambda_j gamma_j of two random endpoints (Assumption
    1 exact, lambda ~ Dirichlet(1, 1)), each evaluated on a fresh random subset of 20 of the 150
    items; the truth is the model's realised accuracy over all 150 items."""
    rng = np.random.default_rng(9)
    errors = {name: [] for name in ESTIMATORS}
    stderrs = {name: [] for name in ESTIMATORS}
    for _ in range(N_DRAWS):
        ends_true = rng.standard_normal((2, 3))
        lam = rng.dirichlet([1.0, 1.0])
        y_ends = fitted.world.sample(ends_true, rng)
        y = fitted.world.sample(ends_true.T @ lam, rng)
        ends = np.stack([fit_ability(fitted.params, row) for row in y_ends])
        sub = extract_subset("random", 150, 20, rng)
        for name in ESTIMATORS:
            # the answers the endpoint abilities came from: the stderr counts their error
            kw = {"endpoint_responses": y_ends} if name in MERGE_AWARE else {}
            est = estimate_accuracy(name, fitted.params, sub, y[sub.indices],
                                    ends if name in MERGE_AWARE else None, **kw)
            errors[name].append(est.value - y.mean())
            stderrs[name].append(est.stderr)
    return ({k: np.array(v) for k, v in errors.items()},
            {k: np.array(v) for k, v in stderrs.items()})


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_estimator_is_unbiased_in_simulation(simulation, name):
    err = simulation[0][name]
    # The mean error of N_DRAWS independent draws has standard error sd / sqrt(N_DRAWS);
    # 4 of them keep a correct estimator from failing by chance (p < 1e-4).
    assert abs(err.mean()) < 4 * err.std() / np.sqrt(N_DRAWS)
    assert np.abs(err).mean() < 0.1


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_stderr_gives_calibrated_95_percent_intervals(simulation, name):
    err, se = simulation[0][name], simulation[1][name]
    assert np.all(np.isfinite(se)) and np.all(se > 0)
    coverage = np.mean(np.abs(err) <= 1.96 * se)
    # Binomial sd of the coverage over 300 draws is ~0.013; the mixtures' stderr is a
    # conservative bound, so allow up to 0.99.
    assert 0.88 <= coverage <= 0.99


@pytest.mark.parametrize("name", ["mpirt", "gmpirt", "gmpirt_star", "pirt", "gpirt"])
def test_irt_estimators_beat_naive_on_merged_models(simulation, name):
    gain = np.abs(simulation[0]["naive"]) - np.abs(simulation[0][name])
    assert gain.mean() > 2 * gain.std() / np.sqrt(N_DRAWS)


def test_mpirt_beats_pirt_on_merged_models(simulation):
    gain = np.abs(simulation[0]["pirt"]) - np.abs(simulation[0]["mpirt"])
    assert gain.mean() > 0


def test_full_subset_returns_the_observed_accuracy(fitted):
    y = fitted.responses[5].copy()
    y[np.isnan(y)] = 1.0
    sub = Subset(np.arange(150), np.full(150, 1 / 150), "random")
    for name in ("naive", "pirt", "gpirt"):
        est = estimate_accuracy(name, fitted.params, sub, y)
        assert est.value == pytest.approx(y.mean(), abs=1e-12)
    assert estimate_accuracy("gpirt", fitted.params, sub, y).details["c"] == pytest.approx(1.0)


def test_weighted_naive_and_details(fitted):
    sub = Subset(np.array([3, 7, 9]), np.array([0.5, 0.3, 0.2]), "irt_clusters")
    est = naive_estimate(None, sub, np.array([1.0, 0.0, 1.0]))
    assert est.value == pytest.approx(0.7)
    ends = fitted.abilities[:2]
    gmp = gmpirt_estimate(fitted.params, sub, np.array([1.0, 0.0, 1.0]), ends)
    assert gmp.details["c"] == 0.5 and gmp.details["lambda"].shape == (2,)
    assert gmp.value == pytest.approx(0.5 * gmp.details["naive"] + 0.5 * gmp.details["mpirt"])
    star = estimate_accuracy("gmpirt_star", fitted.params, sub, np.array([1.0, 0.0, 1.0]), ends,
                             endpoint_responses=fitted.responses[:2])
    assert star.details["c_endpoints"].shape == (2,)
    assert star.details["c"] == pytest.approx(star.details["c_endpoints"].mean())


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
@pytest.mark.parametrize("answers", ["all_correct", "all_wrong", "one_item", "with_nan"])
def test_edge_cases_give_finite_estimates(fitted, name, answers):
    k = 1 if answers == "one_item" else 10
    sub = extract_subset("random", 150, k, random_state=0)
    y = np.full(k, 0.0 if answers == "all_wrong" else 1.0)
    if answers == "with_nan":
        y[::2] = np.nan
        y[1::4] = 0.0
    kw = {"endpoint_responses": fitted.responses[:2]} if name == "gmpirt_star" else {}
    est = estimate_accuracy(name, fitted.params, sub, y, fitted.abilities[:2], **kw)
    assert 0.0 <= est.value <= 1.0 and np.isfinite(est.stderr) and est.stderr > 0
    if answers == "all_correct" and name != "naive":
        assert est.value > 0.5
    if answers == "all_wrong" and name != "naive":
        assert est.value < 0.5


def test_constant_items_are_handled(fitted):
    params = IRTParams(fitted.params.alpha.copy(), fitted.params.beta.copy())
    params.alpha[:5] = 0.0  # items that do not discriminate
    params.meta = dict(fitted.params.meta)
    sub = Subset(np.arange(5), np.full(5, 0.2), "random")
    est = estimate_accuracy("gpirt", params, sub, np.array([1.0, 1.0, 0.0, 1.0, 1.0]))
    # Answers on items that do not discriminate say nothing: gamma stays at the prior mean.
    assert np.isfinite(est.value)
    assert np.allclose(est.details["gamma"], params.ability_prior()[0])


def test_registry_and_input_errors(fitted):
    sub = extract_subset("random", 150, 5, random_state=0)
    y = np.ones(5)
    with pytest.raises(ValueError, match="valid: \\['gmpirt', 'gmpirt_star', 'gpirt'"):
        estimate_accuracy("tinybench", fitted.params, sub, y)
    for name in MERGE_AWARE:
        with pytest.raises(ValueError, match="endpoint_abilities"):
            estimate_accuracy(name, fitted.params, sub, y)
    with pytest.raises(ValueError, match="endpoint_responses"):
        estimate_accuracy("gmpirt_star", fitted.params, sub, y, fitted.abilities[:2])
    with pytest.raises(ValueError, match="endpoint_responses must be"):
        estimate_accuracy("gmpirt_star", fitted.params, sub, y, fitted.abilities[:2],
                          endpoint_responses=np.ones((2, 5)))
    with pytest.raises(ValueError, match="needs fitted IRTParams"):
        estimate_accuracy("pirt", None, sub, y)
    with pytest.raises(ValueError, match="answers for a subset"):
        estimate_accuracy("naive", fitted.params, sub, np.ones(4))
    with pytest.raises(ValueError, match="no observed answer"):
        estimate_accuracy("pirt", fitted.params, sub, np.full(5, np.nan))
    with pytest.raises(ValueError, match="0, 1 or NaN"):
        estimate_accuracy("naive", fitted.params, sub, np.full(5, 0.5))
    with pytest.raises(ValueError, match="c must be"):
        estimate_accuracy("gmpirt", fitted.params, sub, y, fitted.abilities[:2], c=1.5)
    with pytest.raises(TypeError, match="Subset"):
        estimate_accuracy("naive", fitted.params, np.arange(5), y)
    with pytest.raises(ValueError, match="out of range"):
        estimate_accuracy("pirt", fitted.params.subset(np.arange(3)), sub, y)


def test_gpirt_needs_b_when_the_fit_did_not_measure_it(fitted):
    bare = IRTParams(fitted.params.alpha, fitted.params.beta)
    sub = extract_subset("random", 150, 10, random_state=0)
    y = fitted.responses[1][sub.indices]
    y = np.nan_to_num(y)
    with pytest.raises(ValueError, match="pass b="):
        estimate_accuracy("gpirt", bare, sub, y)
    est = estimate_accuracy("gpirt", bare, sub, y, b=0.05)
    assert est.details["b"] == 0.05 and 0.0 < est.details["c"] < 1.0


def test_gmpirt_star_judges_a_ragged_endpoint_on_the_items_it_answered(fitted):
    """Real endpoints are ragged (e.g. answers on arc_v1 only). c_j must be what it is on the
    benchmark restricted to the endpoint's answered items: the p-IRT part must not predict items
    the endpoint never answered while the target is the mean over the answered ones."""
    rng = np.random.default_rng(4)
    answered = np.sort(rng.choice(150, 60, replace=False))
    restricted = fitted.params.subset(answered)
    c_ragged, c_restricted = [], []
    for _ in range(8):
        row = np.full(150, np.nan)
        row[answered] = fitted.world.sample(rng.standard_normal(3), rng)[answered]
        sub = extract_subset("random", 150, 20, rng)
        keep = np.isin(sub.indices, answered)
        w = sub.weights[keep] / sub.weights[keep].sum()  # the estimators renormalise the same way
        sub_r = Subset(np.searchsorted(answered, sub.indices[keep]), w, "random")
        c_ragged.append(endpoint_gp_weights(fitted.params, sub, row[None])[0])
        c_restricted.append(endpoint_gp_weights(restricted, sub_r, row[answered][None])[0])
    np.testing.assert_allclose(c_ragged, c_restricted, atol=1e-9)


def test_gmpirt_star_with_an_endpoint_silent_on_the_subset(fitted):
    sub = Subset(np.array([0, 1, 2, 3]), np.full(4, 0.25), "random")
    y = np.array([1.0, 0.0, 1.0, 1.0])
    ends_resp = np.nan_to_num(fitted.responses[:2].copy())
    ends_resp[0, :4] = np.nan  # endpoint 0 has no answer on the subset
    est = estimate_accuracy("gmpirt_star", fitted.params, sub, y, fitted.abilities[:2],
                            endpoint_responses=ends_resp)
    c_each = est.details["c_endpoints"]
    assert np.isnan(c_each[0]) and np.isfinite(c_each[1])
    assert est.details["c"] == pytest.approx(c_each[1])
    ends_resp[1, :4] = np.nan  # no endpoint can judge c: the paper's c = 1/2
    est = estimate_accuracy("gmpirt_star", fitted.params, sub, y, fitted.abilities[:2],
                            endpoint_responses=ends_resp)
    assert est.details["c"] == 0.5 and np.isfinite(est.value)
