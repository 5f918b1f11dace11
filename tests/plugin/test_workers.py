"""Many workers on one study (real storages): genotype claims, stale trials, the soak test.

Worker processes run the real claim / budget / beat machinery around a sleep
(``cheap_workers``); the real CLI is killed in ``test_cli_signals.py`` and ``test_robustness.py``.
"""

from __future__ import annotations

import collections
import multiprocessing as mp
import random
import subprocess
import time
import uuid
from pathlib import Path

import optuna
import pytest
from cheap_workers import read_log, worker
from optuna.trial import TrialState

from optuna_merge3 import study as study_lib
from optuna_merge3 import workers

_CTX = mp.get_context("spawn")


@pytest.fixture(params=["sqlite", "journal", "postgres", "redis"])
def any_storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every storage the README offers for several workers (skips where a server is missing)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    if request.param == "journal":
        return str(tmp_path / "study.log")
    return request.getfixturevalue("postgres_url" if request.param == "postgres" else "redis_url")


def _start(url: str, name: str, budget: int, log: Path, **kw) -> mp.Process:
    proc = _CTX.Process(target=worker, args=(url, name, budget, str(log)), kwargs=kw)
    proc.start()
    return proc


def _trials(url: str, name: str) -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=study_lib.open_storage(url)).trials


def test_a_claimed_genotype_is_not_evaluated_by_a_second_trial(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    params = {"x": 0.25}
    first, second = study.ask(), study.ask()
    workers.claim_genotype(first, params)
    with pytest.raises(optuna.TrialPruned, match="same parameters as running trial 0"):
        workers.claim_genotype(second, params)
    study.tell(second, state=TrialState.PRUNED)
    study.tell(first, 1.0)
    third = study.ask()
    with pytest.raises(optuna.TrialPruned, match="same parameters as trial 0"):
        workers.claim_genotype(third, {"x": 0.25 + 1e-15})  # equal to 12 digits
    assert study.trials[1].user_attrs["duplicate_of"] == 0
    workers.claim_genotype(study.ask(), {"x": 0.5})  # another genotype is free


def test_two_claims_written_before_either_read_never_both_evaluate(tmp_path: Path) -> None:
    """The race itself: both trials record the claim, then both read; at most one goes on."""
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    a, b = study.ask(), study.ask()
    key = workers.genotype_key({"x": 0.5})
    for trial in (a, b):
        trial.storage.set_trial_system_attr(trial._trial_id, workers.CLAIM_KEY, key)
    outcomes = []
    for trial in (a, b):
        try:
            workers.claim_genotype(trial, {"x": 0.5})
            outcomes.append("evaluates")
        except optuna.TrialPruned:
            outcomes.append("pruned")
    assert outcomes.count("evaluates") <= 1


@pytest.mark.timeout(240)
def test_concurrent_workers_never_evaluate_a_genotype_twice(any_storage: str,
                                                             tmp_path: Path) -> None:
    """Four workers with the same random seed propose the same genotypes at the same moments."""
    name, budget, log = f"claims_{uuid.uuid4().hex[:8]}", 12, tmp_path / "evals.jsonl"
    optuna.create_study(study_name=name, storage=study_lib.open_storage(any_storage),
                        directions=["maximize"] * 2)
    procs = [_start(any_storage, name, budget, log, sampler="random", seed=0, sleep_s=0.05)
             for _ in range(4)]
    for proc in procs:
        proc.join(timeout=200)
        assert proc.exitcode == 0
    evaluated = collections.Counter(e["key"] for e in read_log(str(log)))
    trials = _trials(any_storage, name)
    assert [k for k, n in evaluated.items() if n > 1] == []
    assert sum(t.state == TrialState.COMPLETE for t in trials) == budget == len(evaluated)
    assert not [t for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the race was really run: proposals of the same genotype were turned away
    assert sum("duplicate_of" in t.user_attrs for t in trials) > 0


def test_a_dead_local_process_is_recognised_and_its_trial_requeued(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    trial = study.ask()
    trial.suggest_float("x", 0, 1)
    workers.record_worker(trial)
    assert workers.stale_trials(study) == []  # this process is alive
    dead = subprocess.Popen(["true"])
    dead.wait()
    record = dict(study.trials[0].system_attrs[workers.WORKER_KEY], pid=dead.pid)
    trial.storage.set_trial_system_attr(trial._trial_id, workers.WORKER_KEY, record)
    assert [t.number for t in workers.stale_trials(study)] == [0]
    assert workers.fail_and_requeue(study, workers.stale_trials(study)) == 1
    assert [t.state for t in study.trials] == [TrialState.FAIL, TrialState.WAITING]
    assert study.trials[1].params == study.trials[0].params


def test_a_trial_whose_beat_stopped_is_stale_from_any_host(tmp_path: Path) -> None:
    storage = study_lib.open_storage(tmp_path / "study.log")
    study = optuna.create_study(storage=storage)
    trial = study.ask()
    workers.record_worker(trial, beat_s=0.2)
    record = dict(study.trials[0].system_attrs[workers.WORKER_KEY], host="elsewhere")
    trial.storage.set_trial_system_attr(trial._trial_id, workers.WORKER_KEY, record)
    with workers.TrialBeat(trial, 0.2):
        time.sleep(0.8)
        assert workers.stale_trials(study) == []  # beating
    time.sleep(0.8)
    assert [t.number for t in workers.stale_trials(study)] == [0]  # the beat stopped


# -- the soak test -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.timeout(420)
@pytest.mark.parametrize("server", ["postgres", "redis"])
def test_soak_four_workers_killed_at_random_finish_exactly_the_budget(
    server: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """4 workers, 48 trials, NSGA-II population 8; every few trials a random worker is SIGKILLed
    and a new one started. Exactly 48 complete, no genotype completed twice, no complete trial
    lost or changed, nothing left RUNNING."""
    url = request.getfixturevalue("postgres_url" if server == "postgres" else "redis_url")
    name, budget, log = f"soak_{uuid.uuid4().hex[:8]}", 48, tmp_path / "evals.jsonl"
    optuna.create_study(study_name=name, storage=study_lib.open_storage(url),
                        directions=["maximize"] * 2)
    rng = random.Random(0)
    # heartbeat 3 s (grace 6 s): with 1 s a 2 s stall of the shared test machine made live
    # trials look stale; dead workers here are recognised by their pid at once anyway
    beat = {"sleep_s": 0.3, "heartbeat_s": 3}
    procs = [_start(url, name, budget, log, seed=i, **beat) for i in range(4)]
    seen: dict[int, tuple] = {}
    kills, next_kill, deadline = 0, rng.randint(2, 5), time.monotonic() + 360
    try:
        while time.monotonic() < deadline:
            complete = {t.number: (t.params, t.values) for t in _trials(url, name)
                        if t.state == TrialState.COMPLETE}
            assert all(complete.get(n) == v for n, v in seen.items()), "a complete trial changed"
            seen = complete
            if len(complete) >= budget or all(not p.is_alive() for p in procs):
                break
            assert all(p.exitcode in (None, 0) for p in procs), "a worker crashed"
            if len(complete) >= next_kill and len(complete) < budget - 2:
                victim = rng.randrange(len(procs))
                procs[victim].kill()  # SIGKILL: no cleanup at all
                procs[victim].join()
                kills += 1
                procs[victim] = _start(url, name, budget, log, seed=100 + kills, **beat)
                next_kill = len(complete) + rng.randint(2, 5)
            time.sleep(0.1)
        for proc in procs:
            proc.join(timeout=60)
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.kill()
    trials = _trials(url, name)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    keys = collections.Counter(workers.genotype_key(t.params) for t in complete)
    assert kills >= 6
    assert len(complete) == budget
    assert [k for k, n in keys.items() if n > 1] == []
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    assert all(trials[n].state == TrialState.COMPLETE and (trials[n].params, trials[n].values)
               == v for n, v in seen.items())
    finished = collections.Counter(e["key"] for e in read_log(str(log)))
    # an evaluation finished twice only when its worker was killed between the end of the
    # evaluation and the storage write (the retry then runs it again)
    assert sum(n - 1 for n in finished.values()) <= kills


def test_a_crowded_population_is_warned_about_once(tmp_path: Path) -> None:
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    said: list[str] = []
    warn = workers.CrowdWarning(population_size=8, say=said.append)
    trials = [study.ask() for _ in range(3)]
    for i, trial in enumerate(trials):  # three live workers on this host
        workers.record_worker(trial)
        record = dict(study.trials[i].system_attrs[workers.WORKER_KEY], pid=10_000 + i)
        trial.storage.set_trial_system_attr(trial._trial_id, workers.WORKER_KEY, record)
    warn(study, study.trials[0])
    warn(study, study.trials[0])
    assert len(said) == 1 and "3 workers share a population of 8" in said[0]
    assert "use at most 2 workers" in said[0]
    quiet: list[str] = []
    workers.CrowdWarning(population_size=25, say=quiet.append)(study, study.trials[0])
    assert quiet == []
