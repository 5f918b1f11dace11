"""A cheap worker process for the many-worker tests: the real claim / budget / beat machinery
(:func:`optuna_merge3.workers.run_claimed`) around a sleep instead of a merge.

Each evaluation appends one JSON line (trial number, genotype key, pid, start and end time) to a
log with ``O_APPEND`` (atomic for short lines), so a test can count what was evaluated, by whom
and when, independently of what the storage says.
"""

from __future__ import annotations

import json
import os
import time
import warnings

import optuna
from optuna.trial import TrialState

from optuna_merge3 import study as study_lib
from optuna_merge3 import workers

GRID = 0.05  # genes on a grid: NSGA-II proposes exact repeats, so claims are exercised


def suggest(trial: optuna.Trial) -> dict[str, float]:
    return {k: trial.suggest_float(k, 0.0, 1.5, step=GRID) for k in ("weight/a", "weight/b")}


def _log(path: str, record: dict) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (json.dumps(record) + "\n").encode())
    finally:
        os.close(fd)


def worker(url: str, name: str, budget: int, log: str, *, population: int = 8,
           sampler: str = "nsga2", seed: int = 0, sleep_s: float = 0.1,
           heartbeat_s: int = 1) -> None:
    """Join study ``name`` and run trials until the global budget is met."""
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    journal = study_lib.is_journal(url)
    storage = study_lib.open_storage(url, heartbeat_interval=None if journal else heartbeat_s)
    if sampler == "random":
        the_sampler = optuna.samplers.RandomSampler(seed=seed)
    else:
        the_sampler = study_lib.create_sampler(sampler, n_objectives=2, seed=seed,
                                               population_size=population)
    study = optuna.load_study(study_name=name, storage=storage, sampler=the_sampler)

    def evaluate(trial: optuna.Trial, params: dict[str, float]) -> tuple[float, float]:
        start = time.time()
        time.sleep(sleep_s)
        a, b = params["weight/a"], params["weight/b"]
        _log(log, {"trial": trial.number, "key": workers.genotype_key(params),
                   "pid": os.getpid(), "start": start, "end": time.time()})
        return a - 0.3 * b * b, b - 0.3 * a * a

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        return workers.run_claimed(trial, suggest, evaluate, budget=budget,
                                   beat_s=heartbeat_s if journal else None, say=lambda m: None)

    workers.optimize(study, objective, callbacks=[
        optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))], say=print)


def read_log(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
