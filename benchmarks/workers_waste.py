"""Wasted evaluations with many workers on PostgreSQL: the old dedupe vs genotype claims, and how
NSGA-II's generations behave with 2, 4 and 8 workers for populations of 8 and 25.

Each worker is a process running a cheap objective (a sleep of 50-150 ms instead of a merge) on
genes on a grid of 0.05, so that NSGA-II proposes exact repeats as it does on the tiny world.
Every worker's sampler has the same seed, as with ``optuna-merge3 run`` (the config's seed).
"before" is the dedupe of main until this change (a repeat is pruned only if an equal trial is
already COMPLETE); "after" is :func:`optuna_merge3.workers.run_claimed` (claimed in the storage
before the evaluation). Both use the same global budget (``claim_budget_slot``).

Columns: ``duplicate evals`` = evaluations of a genotype that another trial also evaluated;
``overfill`` = complete trials beyond the population size in a generation (Optuna assigns a
trial to a generation by counting COMPLETE trials only, so running ones pile in); ``late`` =
complete trials of generation g that finished after generation g+1 had chosen its parents (the
first g+1 trial's start), hence never candidates for any parent set: budget spent on
evaluations the search cannot use.

Usage: nice -n 10 python benchmarks/workers_waste.py [--generations 4] [--server URL]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import collections
import json
import multiprocessing as mp
import os
import platform
import random
import time
import uuid
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState

from optuna_merge3 import study as study_lib
from optuna_merge3 import workers

GRID = 0.05
GEN_KEY = "SeededNSGAIISampler:generation"


def _suggest(trial: optuna.Trial) -> dict[str, float]:
    return {k: trial.suggest_float(k, 0.0, 1.5, step=GRID) for k in ("weight/a", "weight/b")}


def _old_dedupe(trial: optuna.Trial, params: dict[str, float]) -> None:
    """main's ``prune_if_duplicate``: only COMPLETE trials count."""
    key = workers.genotype_key(params)
    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if other.number != trial.number and workers.genotype_key(other.params) == key:
            raise optuna.TrialPruned(f"same parameters as trial {other.number}")


def _worker(url: str, name: str, budget: int, population: int, seed: int, mode: str) -> None:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    storage = study_lib.open_storage(url, heartbeat_interval=5)
    sampler = study_lib.create_sampler("nsga2", n_objectives=2, seed=seed,
                                       population_size=population)
    study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    rng = random.Random(os.getpid())  # evaluation times differ between workers

    def evaluate(trial: optuna.Trial, params: dict[str, float]) -> tuple[float, float]:
        time.sleep(rng.uniform(0.05, 0.15))
        trial.set_user_attr("evaluated", True)
        a, b = params["weight/a"], params["weight/b"]
        return a - 0.3 * b * b, b - 0.3 * a * a

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if mode == "after":
            return workers.run_claimed(trial, _suggest, evaluate, budget=budget,
                                       say=lambda m: None)
        params = _suggest(trial)
        _old_dedupe(trial, params)
        workers.claim_budget_slot(trial, budget, say=lambda m: None)
        return evaluate(trial, params)

    study.optimize(objective, callbacks=[
        optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))])


def measure(url: str, n_workers: int, population: int, generations: int, mode: str) -> dict:
    name, budget = f"waste_{uuid.uuid4().hex[:8]}", population * generations
    optuna.create_study(study_name=name, storage=url, directions=["maximize"] * 2)
    ctx = mp.get_context("spawn")
    started = time.perf_counter()
    # one sampler seed for every worker, as `optuna-merge3 run` does (the config's seed)
    procs = [ctx.Process(target=_worker, args=(url, name, budget, population, 0, mode))
             for i in range(n_workers)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    seconds = time.perf_counter() - started
    trials = optuna.load_study(study_name=name, storage=url).trials
    optuna.delete_study(study_name=name, storage=url)
    evaluated = [t for t in trials if t.user_attrs.get("evaluated")]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = collections.Counter(workers.genotype_key(t.params) for t in evaluated)
    by_gen: dict[int, list[Any]] = collections.defaultdict(list)
    for t in complete:
        by_gen[t.system_attrs[GEN_KEY]].append(t)
    overfill = sum(max(0, len(ts) - population) for ts in by_gen.values())
    late = 0
    for g, ts in by_gen.items():
        nxt = [t.datetime_start for t in trials if t.system_attrs.get(GEN_KEY) == g + 1]
        if nxt:
            late += sum(t.datetime_complete > min(nxt) for t in ts)
    return {"mode": mode, "workers": n_workers, "population": population, "budget": budget,
            "complete": len(complete), "evaluations": len(evaluated),
            "duplicate_evals": sum(n - 1 for n in keys.values()),
            "generations": len(by_gen), "overfill": overfill, "late": late,
            "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--generations", type=int, default=4)
    parser.add_argument("--server", default=os.environ.get(
        "MERGE3_TEST_PG", "postgresql://postgres@127.0.0.1:5432"))
    args = parser.parse_args()
    import psycopg

    db = f"workers_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(f"{args.server}/postgres", autocommit=True) as con:
        con.execute(f"CREATE DATABASE {db}")
    url = f"{args.server}/{db}"
    rows = []
    try:
        for population in (8, 25):
            for n_workers in (2, 4, 8):
                for mode in ("before", "after"):
                    rows.append(measure(url, n_workers, population, args.generations, mode))
    finally:
        with psycopg.connect(f"{args.server}/postgres", autocommit=True) as con:
            con.execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    print(f"PostgreSQL, NSGA-II, {args.generations} generations per run, eval 50-150 ms; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs\n")
    print("| population | workers | dedupe | complete / budget | evaluations | duplicate evals "
          "(wasted) | generations | overfill | late (never parent candidates) | seconds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['population']} | {r['workers']} | {r['mode']} | {r['complete']} / "
              f"{r['budget']} | {r['evaluations']} | {r['duplicate_evals']} "
              f"({100 * r['duplicate_evals'] / r['evaluations']:.0f}%) | {r['generations']} | "
              f"{r['overfill']} | {r['late']} ({100 * r['late'] / r['complete']:.0f}%) | "
              f"{r['seconds']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
