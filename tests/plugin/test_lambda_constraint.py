"""``[irt] lambda_constraint`` reaches mp-IRT's lambda fit; ``n_dims`` has one default.

The objective runs for real (real fitted 2PL, real estimators, real Optuna trials); only the
model side is a stand-in: ``evaluation.evaluate`` returns the answers of a simulated merge, so
no model is loaded.
"""

from __future__ import annotations

import copy
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from plugin_helpers import STUDIES, tiny_raw

from optuna_merge3.config import ConfigError, StudyConfig, TaskConfig
from optuna_merge3.irt import (
    DEFAULT_LAMBDA_CONSTRAINT,
    DEFAULT_N_DIMS,
    LAMBDA_CONSTRAINTS,
    extract_subset,
    fit_irt,
    fit_merge_weights,
)
from optuna_merge3.irt._simulate import make_world


def test_lambda_constraint_and_n_dims_defaults_come_from_irt(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path)
    raw["irt"].pop("n_dims")
    config = StudyConfig.from_dict(copy.deepcopy(raw), STUDIES)
    assert config.irt.n_dims == DEFAULT_N_DIMS
    assert config.irt.lambda_constraint == DEFAULT_LAMBDA_CONSTRAINT
    for choice in LAMBDA_CONSTRAINTS:
        raw["irt"]["lambda_constraint"] = choice
        assert StudyConfig.from_dict(copy.deepcopy(raw), STUDIES).irt.lambda_constraint == choice
    raw["irt"]["lambda_constraint"] = "bogus"
    with pytest.raises(ConfigError, match=r"irt\.lambda_constraint: 'bogus' is not one of "
                                          r"\['ridge', 'simplex', 'nonneg', 'none'\]"):
        StudyConfig.from_dict(raw, STUDIES)


def _lambda_of_one_trial(monkeypatch: pytest.MonkeyPatch, setup_kw: dict, answers: np.ndarray,
                         task_setup) -> list[float]:
    from optuna_merge3 import evaluation
    from optuna_merge3.objective import Merge3Objective
    from optuna_merge3.pipeline import FitnessSetup

    idx = task_setup.subset.indices
    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: SimpleNamespace(
        correct=answers[idx].astype(bool), answers=["x"] * idx.size))
    space = SimpleNamespace(suggest=lambda trial: {"w": trial.suggest_float("w", 0.0, 1.0)})
    merger = SimpleNamespace(apply=lambda params, model, seed=0: None)
    model = SimpleNamespace(parameters=lambda: [])
    objective = Merge3Objective(merger, space, model, None,
                                FitnessSetup(["a", "b"], [task_setup], 0.0, **setup_kw))
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=1)
    assert "error" not in study.trials[0].user_attrs, study.trials[0].user_attrs
    return study.trials[0].user_attrs["lambda/t"]


def test_lambda_constraint_changes_the_fitted_lambda(monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    from optuna_merge3.pipeline import TaskSetup

    rng = np.random.default_rng(5)
    world = make_world(120, 3, rng)
    ref = rng.standard_normal((300, 3))
    params, abilities = fit_irt(world.sample(ref, rng), n_dims=3, calibrate_gp=False)
    ends = abilities[:2]
    # A merge beyond its endpoints (lambda = 1.4, 0.5): simplex, ridge and none must differ.
    answers = world.sample(ref[:2].T @ np.array([1.4, 0.5]), rng)
    subset = extract_subset("random", 120, 40, random_state=0)
    items = [SimpleNamespace(id=f"i{k}") for k in range(120)]
    config = TaskConfig(name="t", path=tmp_path / "t.jsonl", reference=tmp_path / "r.csv",
                        n_items=40, estimator="mpirt")
    task_setup = TaskSetup(config, SimpleNamespace(items=items), params, subset,
                           np.zeros((2, 120), dtype=bool), ends)
    lam = {c: np.asarray(_lambda_of_one_trial(monkeypatch, {"lambda_constraint": c}, answers,
                                              task_setup)) for c in LAMBDA_CONSTRAINTS}
    for c, value in lam.items():  # each trial used exactly the configured fit
        direct = fit_merge_weights(params, ends, answers[subset.indices], subset.indices,
                                   constraint=c)
        assert np.allclose(value, direct), c
    assert np.isclose(lam["simplex"].sum(), 1.0) and np.all(lam["simplex"] >= 0)
    assert np.linalg.norm(lam["none"] - lam["simplex"]) > 0.1
    assert np.linalg.norm(lam["ridge"] - lam["simplex"]) > 0.05
    default = _lambda_of_one_trial(monkeypatch, {}, answers, task_setup)
    assert np.allclose(default, lam[DEFAULT_LAMBDA_CONSTRAINT])
