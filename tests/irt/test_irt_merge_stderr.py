"""mp-IRT's stderr counts the error of the endpoint abilities (irt/_merge_stderr.py)."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import (
    estimate_accuracy,
    extract_subset,
    fit_ability,
    fit_irt,
    mpirt_estimate,
)
from optuna_merge3.irt._ability import ability_covariances, ability_prior
from optuna_merge3.irt._estimators import _mpirt, _observed
from optuna_merge3.irt._simulate import make_world


@pytest.mark.parametrize("constraint", ["ridge", "none"])
def test_endpoint_term_is_the_delta_method_of_the_refitted_estimate(fitted, constraint):
    """Analytic total derivative (lambda refitted when an endpoint ability moves) against
    central finite differences of the estimate itself."""
    rng = np.random.default_rng(5)
    ends = fitted.abilities[:2]
    sub = extract_subset("random", 150, 20, random_state=2)
    y = fitted.world.sample(fitted.gamma[:2].T @ np.array([0.6, 0.5]), rng)[sub.indices]
    half = rng.standard_normal((2, 3, 3))
    cov = np.einsum("jab,jcb->jac", half, half) * 1e-2  # any SPD covariance per endpoint
    numeric, eps = 0.0, 1e-5
    for j in range(2):
        grad = np.zeros(3)
        for k in range(3):
            up, down = ends.copy(), ends.copy()
            up[j, k] += eps
            down[j, k] -= eps
            grad[k] = (
                mpirt_estimate(fitted.params, sub, y, up, constraint=constraint).value
                - mpirt_estimate(fitted.params, sub, y, down, constraint=constraint).value
            ) / (2 * eps)
        numeric += grad @ cov[j] @ grad
    obs = _observed(fitted.params, sub, y)
    scale = fitted.params.meta.get("stderr_scale", 1.0)
    _, se0, _, _ = _mpirt(fitted.params, obs, ends, constraint, 1.0)
    _, se1, _, _ = _mpirt(fitted.params, obs, ends, constraint, 1.0, cov)
    assert numeric > 0
    assert (se1**2 - se0**2) / scale**2 == pytest.approx(numeric, rel=1e-3)


def test_endpoint_responses_widen_the_stderr_only(fitted):
    sub = extract_subset("random", 150, 20, random_state=0)
    y = np.nan_to_num(fitted.responses[7][sub.indices])
    ends, resp = fitted.abilities[:2], fitted.responses[:2]
    for name in ("mpirt", "gmpirt"):
        exact = estimate_accuracy(name, fitted.params, sub, y, ends)
        wide = estimate_accuracy(name, fitted.params, sub, y, ends, endpoint_responses=resp)
        assert wide.value == exact.value and wide.stderr > exact.stderr
    # gmp-IRT* has the answers anyway (it tunes c on them): its stderr counts them too.
    star = estimate_accuracy("gmpirt_star", fitted.params, sub, y, ends, endpoint_responses=resp)
    same_c = estimate_accuracy(
        "gmpirt", fitted.params, sub, y, ends, c=star.details["c"], endpoint_responses=resp
    )
    assert star.stderr == pytest.approx(same_c.stderr)
    with pytest.raises(ValueError, match="endpoint_responses must be"):
        estimate_accuracy("mpirt", fitted.params, sub, y, ends, endpoint_responses=resp[:, :5])


def test_ability_covariances_are_the_inverse_laplace_precisions(fitted):
    rows = fitted.responses[:3]
    cov = ability_covariances(fitted.params, fitted.abilities[:3], rows)
    assert cov.shape == (3, 3, 3)
    # Fewer answers, wider: the same model on a third of its items.
    few = rows[:1].copy()
    few[:, 50:] = np.nan
    narrow = ability_covariances(fitted.params, fitted.abilities[:1], few)[0]
    assert np.linalg.eigvalsh(narrow - cov[0]).min() > 0
    # No answer at all: the prior's covariance.
    none = ability_covariances(fitted.params, fitted.abilities[:1], np.full((1, 150), np.nan))
    assert np.allclose(none[0], np.linalg.inv(ability_prior(fitted.params)[1]))


def test_intervals_hold_when_the_endpoints_answered_few_items():
    """Endpoints fitted from 30 of 150 items in a 6-dimensional world: their abilities are
    uncertain. Measured (seed 3): coverage .977 with the endpoint term, .917 without."""
    rng = np.random.default_rng(3)
    world = make_world(150, 6, rng)
    params, _ = fit_irt(
        world.sample(rng.standard_normal((600, 6)), rng), n_dims=6, calibrate_gp=False
    )
    covered = {True: [], False: []}
    for _ in range(300):
        ends_true = rng.standard_normal((2, 6))
        y_ends = world.sample(ends_true, rng)
        for row in y_ends:
            row[rng.permutation(150)[30:]] = np.nan
        y = world.sample(ends_true.T @ rng.dirichlet([1.0, 1.0]), rng)
        ends = np.stack([fit_ability(params, row) for row in y_ends])
        sub = extract_subset("random", 150, 20, rng)
        for with_term in (True, False):
            kw = {"endpoint_responses": y_ends} if with_term else {}
            est = estimate_accuracy("mpirt", params, sub, y[sub.indices], ends, **kw)
            covered[with_term].append(abs(est.value - y.mean()) <= 1.96 * est.stderr)
    with_term, without = np.mean(covered[True]), np.mean(covered[False])
    # 300 draws: binomial sd of a coverage ~.012; the two are paired (same draws).
    assert 0.93 <= with_term <= 0.995
    assert without <= with_term - 0.03
