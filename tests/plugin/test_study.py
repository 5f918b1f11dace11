"""Optuna plumbing on real storages: samplers, gen-0 seeds, dedupe, resume checks, budget."""

from __future__ import annotations

import multiprocessing as mp
import warnings
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from optuna_merge3 import study as study_lib
from optuna_merge3 import workers

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def _two_objectives(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    y = trial.suggest_float("y", 0.0, 1.0)
    workers.claim_genotype(trial, trial.params)
    return x + 0.1 * y, y - 0.1 * x


@pytest.mark.parametrize("name", study_lib.SAMPLERS)
def test_every_sampler_builds_and_runs(name: str) -> None:
    n_obj = 1 if name in ("cmaes", "gp", "tpe") else 2
    sampler = study_lib.create_sampler(name, n_objectives=n_obj, seed=1, population_size=4)
    study = optuna.create_study(directions=["maximize"] * n_obj, sampler=sampler)
    study.optimize(lambda t: _two_objectives(t)[:n_obj] if n_obj == 2 else t.suggest_float(
        "x", 0, 1), n_trials=6)
    assert len(study.trials) == 6


def test_sampler_errors_name_the_valid_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown sampler 'pso'; valid: \['nsga2'"):
        study_lib.create_sampler("pso", n_objectives=1)
    with pytest.raises(ValueError, match="single-objective but the study has 2 objectives"):
        study_lib.create_sampler("cmaes", n_objectives=2)


def test_enqueued_seeds_become_generation_zero_parents(tmp_path: Path) -> None:
    """Optuna's own NSGA-II ignores enqueued seeds as parents; ours keeps them (DESIGN.md 2)."""
    seeds = {"endpoint:a": {"x": 1.0, "y": 1.0}, "uniform": {"x": 0.5, "y": 0.5}}
    parents = {}
    for label, sampler in {
        "plain": optuna.samplers.NSGAIISampler(population_size=4, seed=0),
        "ours": study_lib.create_sampler("nsga2", n_objectives=2, seed=0, population_size=4),
    }.items():
        storage = f"sqlite:///{tmp_path / label}.db"
        study = optuna.create_study(directions=["maximize"] * 2, sampler=sampler, storage=storage)
        assert study_lib.seed_population(study, seeds) == 2
        study.optimize(_two_objectives, n_trials=9)
        key = f"{type(sampler).__name__}:parent:1"
        ids = study._storage.get_study_system_attrs(study._study_id)[key]
        parents[label] = [t.number for t in study.trials if t._trial_id in ids]
    # Trial 0 (x = y = 1) dominates every other point: an elitist parent set must hold it.
    assert 0 in parents["ours"]
    assert 0 not in parents["plain"]


def test_seed_population_is_enqueued_once(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/s.db")
    assert study_lib.seed_population(study, {"u": {"x": 0.5}}) == 1
    assert study_lib.seed_population(study, {"u": {"x": 0.5}}) == 0
    assert len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_same_seed_same_trials() -> None:
    def run() -> list[dict]:
        sampler = study_lib.create_sampler("nsga2", n_objectives=2, seed=7, population_size=4)
        study = optuna.create_study(directions=["maximize"] * 2, sampler=sampler)
        study.optimize(_two_objectives, n_trials=14)
        return [t.params for t in study.trials]

    assert run() == run()


def test_repeated_genotype_is_pruned_and_linked() -> None:
    study = optuna.create_study(directions=["maximize"] * 2)
    study.enqueue_trial({"x": 0.25, "y": 0.5})
    study.enqueue_trial({"x": 0.25, "y": 0.5})
    study.optimize(_two_objectives, n_trials=2)
    first, second = study.trials
    assert first.state == TrialState.COMPLETE
    assert second.state == TrialState.PRUNED and second.user_attrs["duplicate_of"] == 0


def test_resume_with_changed_signature_is_refused_and_study_intact(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path}/s.db"
    sig = {"merge": {"method": "ties", "search": {"weight": [0, 1]}}, "tasks": ["a", "b"]}
    kwargs = {"directions": ["maximize"] * 2, "sampler": optuna.samplers.RandomSampler(0)}
    study, resumed = study_lib.create_or_resume_study("s", storage, signature=sig, **kwargs)
    assert not resumed
    study.optimize(_two_objectives, n_trials=3)
    same, resumed = study_lib.create_or_resume_study("s", storage, signature=sig, **kwargs)
    assert resumed and len(same.trials) == 3
    changed = {"merge": {"method": "ties", "search": {"weight": [0, 2]}}, "tasks": ["a", "c"]}
    with pytest.raises(study_lib.SignatureMismatchError) as err:
        study_lib.create_or_resume_study("s", storage, signature=changed, **kwargs)
    assert "merge.search.weight[1]: 1 -> 2" in str(err.value)
    assert "tasks[1]: \"b\" -> \"c\"" in str(err.value)
    assert len(optuna.load_study(study_name="s", storage=storage).trials) == 3


def test_storage_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="expected an RDB URL"):
        study_lib.open_storage("not a url")
    with pytest.raises(ValueError, match=r"postgresql://nobody:\*\*\*@127.0.0.1:1/x: cannot"):
        study_lib.open_storage("postgresql://nobody:secret@127.0.0.1:1/x")
    journal = study_lib.open_storage(tmp_path / "journal" / "study.log")
    study = optuna.create_study(storage=journal)
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    assert len(optuna.load_study(study_name=study.study_name, storage=journal).trials) == 2


def _budget_worker(url: str, name: str, budget: int) -> None:
    import time

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_lib.open_storage(url, heartbeat_interval=2)
    study = optuna.load_study(study_name=name, storage=storage)

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        workers.claim_budget_slot(trial, budget, poll_s=0.05)
        time.sleep(0.05)
        return x

    study.optimize(
        objective,
        callbacks=[optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))],
    )


def test_two_workers_on_postgres_complete_exactly_the_budget(pg_study: tuple[str, str]) -> None:
    postgres_url, name = pg_study
    budget = 12
    optuna.create_study(study_name=name, storage=postgres_url)  # once, before workers
    ctx = mp.get_context("spawn")
    workers = [ctx.Process(target=_budget_worker, args=(postgres_url, name, budget))
               for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
        assert w.exitcode == 0
    trials = optuna.load_study(study_name=name, storage=postgres_url).trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    assert len({t.number for t in complete}) == budget
