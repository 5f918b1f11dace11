"""The new-model prior from the fitted population, and the cross-fitted stderr scale.

Simulated (irt/_simulate.py): a population with more items than models (40 x 300), where the
fitted reference abilities spread wider than the N(0, I) prior of the fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import IRTParams, estimate_accuracy, extract_subset, fit_ability, fit_irt
from optuna_merge3.irt._population import CROSSFIT_MAX_MODELS
from optuna_merge3.irt._simulate import make_world


@pytest.fixture(scope="module")
def small():
    """40 reference models x 300 items (d = 2), and 200 new models from the same population."""
    rng = np.random.default_rng(0)
    world = make_world(300, 2, rng)
    ref = rng.standard_normal((40, 2))
    params, abilities = fit_irt(world.sample(ref, rng), n_dims=2, calibrate_gp=False)
    new_y = world.sample(rng.standard_normal((200, 2)), rng)
    return params, abilities, new_y


def test_the_prior_is_the_fitted_populations_spread(small):
    params, abilities, _ = small
    mean, cov = params.ability_prior()
    assert np.allclose(mean, abilities.mean(axis=0))
    spread = np.cov(abilities.T, bias=True)
    # cov = spread + the mean posterior covariance: positive semi-definite difference
    assert np.linalg.eigvalsh(cov - spread).min() >= -1e-12
    # More items than models: the reference abilities spread wider than the fit's N(0, I).
    assert np.diag(spread).min() > 1.5
    # A new model with no answer sits at the population mean, not at 0.
    assert np.allclose(fit_ability(params, np.full(300, np.nan)), mean)


def _pirt_on_new_models(params, new_y, **kw):
    errors, covered, naive = [], [], []
    for m, y in enumerate(new_y):
        sub = extract_subset("random", 300, 20, random_state=m)
        est = estimate_accuracy("pirt", params, sub, y[sub.indices], **kw)
        errors.append(abs(est.value - y.mean()))
        covered.append(abs(est.value - y.mean()) <= 1.96 * est.stderr)
        naive.append(abs(y[sub.indices].mean() - y.mean()))
    return np.mean(errors), np.mean(covered), np.mean(naive)


def test_population_prior_beats_the_standard_prior_and_the_naive_mean(small):
    params, _, new_y = small
    mae, cover, naive = _pirt_on_new_models(params, new_y)
    mae_std, cover_std, _ = _pirt_on_new_models(params, new_y, ability_prior_std=1.0)
    # Measured (seed 0): population prior .070 / coverage .97; N(0, I) .112 / .64; naive .086.
    assert mae < naive < mae_std
    assert mae < 0.8 * mae_std
    assert 0.9 <= cover <= 1.0
    assert cover_std < 0.85


def test_prior_and_stderr_scale_are_saved_and_can_be_turned_off(small, tmp_path):
    params, _, _ = small
    assert 40 <= CROSSFIT_MAX_MODELS and params.meta["stderr_scale"] >= 1.0
    params.save(tmp_path / "p.npz")
    loaded = IRTParams.load(tmp_path / "p.npz")
    for a, b in zip(loaded.ability_prior(), params.ability_prior(), strict=True):
        assert np.allclose(a, b)
    assert loaded.meta["stderr_scale"] == params.meta["stderr_scale"]
    rng = np.random.default_rng(1)
    resp = (rng.random((30, 12)) < 0.6).astype(float)
    plain, _ = fit_irt(resp, n_dims=2, calibrate_gp=False, population_prior=False,
                       ability_prior_std=2.0)
    mean, cov = plain.ability_prior()
    assert np.allclose(mean, 0.0) and np.allclose(cov, 4.0 * np.eye(2))
    assert "stderr_scale" not in plain.meta and "ability_prior" not in plain.meta


def test_stderr_scale_widens_the_irt_stderr_only(small):
    params, _, new_y = small
    sub = extract_subset("random", 300, 20, random_state=0)
    unscaled = IRTParams(params.alpha, params.beta, params.item_ids,
                         {k: v for k, v in params.meta.items() if k != "stderr_scale"})
    wide = IRTParams(params.alpha, params.beta, params.item_ids,
                     {**unscaled.meta, "stderr_scale": 2.0})
    for name in ("pirt", "mpirt"):
        ends = params.ability_prior()[0][None, :] + np.eye(2)
        kw = {"endpoint_abilities": ends} if name == "mpirt" else {}
        a = estimate_accuracy(name, unscaled, sub, new_y[0, sub.indices], **kw)
        b = estimate_accuracy(name, wide, sub, new_y[0, sub.indices], **kw)
        assert b.value == a.value and np.isclose(b.stderr, 2.0 * a.stderr)
    a = estimate_accuracy("naive", unscaled, sub, new_y[0, sub.indices])
    assert estimate_accuracy("naive", wide, sub, new_y[0, sub.indices]).stderr == a.stderr
