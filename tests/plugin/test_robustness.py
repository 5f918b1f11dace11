"""Killed workers: a trial left RUNNING by SIGKILL is failed, retried, and the budget still met.

On PostgreSQL a worker process and a second worker (a thread of the test process) share a study
with a cheap objective; on SQLite a real ``optuna-merge3 run`` of the tiny world (a subprocess) is
killed in the middle of a trial and the study resumed. Heartbeats of 1 s (grace period 2 s) keep
the tests short.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import FrozenTrial, TrialState
from plugin_helpers import (
    HANG_IN_SECOND_TRIAL,
    REPO,
    STUDIES,
    TinyStudy,
    copy_estimate_cache,
    copy_world,
    run_cli,
    sqlite_url,
    tiny_raw,
    write_config,
)

from optuna_merge3 import study as study_lib
from optuna_merge3 import workers


def _wait_for(path: Path, timeout_s: float, proc_alive) -> None:
    deadline = time.monotonic() + timeout_s
    while not path.exists():
        assert proc_alive(), "the worker exited before reaching the trial to kill"
        assert time.monotonic() < deadline, f"{path} did not appear in {timeout_s} s"
        time.sleep(0.02)


def _wait_for_heartbeat(url: str, study_name: str, number: int, timeout_s: float = 30) -> None:
    """Wait until trial ``number`` has recorded a heartbeat: a trial killed before its first
    heartbeat is never seen as stale by Optuna (it has no heartbeat row at all)."""
    import sqlalchemy

    query = sqlalchemy.text(
        "SELECT COUNT(*) FROM trial_heartbeats h JOIN trials t ON h.trial_id = t.trial_id "
        "JOIN studies s ON s.study_id = t.study_id WHERE s.study_name = :name AND t.number = :n"
    )
    engine = sqlalchemy.create_engine(url)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            with engine.connect() as con:
                if con.execute(query, {"name": study_name, "n": number}).scalar():
                    return
            assert time.monotonic() < deadline, f"trial {number} recorded no heartbeat"
            time.sleep(0.05)
    finally:
        engine.dispose()


def _retries_of(trials: list[FrozenTrial], number: int) -> list[FrozenTrial]:
    return [t for t in trials if t.system_attrs.get("failed_trial") == number]


def _assert_retried_and_budget_met(
    trials: list[FrozenTrial], killed: int, before: dict[int, list[float]], budget: int
) -> None:
    by_number = {t.number: t for t in trials}
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    assert not [t.number for t in trials if t.state in (TrialState.RUNNING, TrialState.WAITING)]
    # the killed trial failed and its retried copy (same parameters) completed
    assert by_number[killed].state == TrialState.FAIL
    retries = _retries_of(trials, killed)
    assert [r.state for r in retries] == [TrialState.COMPLETE]
    assert retries[0].params == by_number[killed].params
    # no complete trial from before the kill is lost or changed
    for number, values in before.items():
        assert by_number[number].state == TrialState.COMPLETE
        assert by_number[number].values == values


# -- PostgreSQL: two workers, one killed --------------------------------------------------------
def _pg_worker(url: str, name: str, budget: int, marker: str | None) -> None:
    """A worker; with ``marker`` it writes the marker in its third trial and hangs there."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = study_lib.open_storage(url, heartbeat_interval=1)
    study = optuna.load_study(study_name=name, storage=storage)
    done: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0.0, 1.0)
        workers.claim_budget_slot(trial, budget, poll_s=0.05)
        if marker is not None and len(done) == 2:
            tmp = Path(marker + ".tmp")
            tmp.write_text(json.dumps({"trial": trial.number, "done": done}))
            tmp.replace(marker)
            time.sleep(600)  # killed here, in the middle of the trial
        time.sleep(0.1)
        done.append(trial.number)
        return x

    study.optimize(
        objective,
        callbacks=[optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,))],
    )


@pytest.mark.timeout(180)
def test_worker_killed_mid_trial_on_postgres_is_retried_and_budget_met(
    pg_study: tuple[str, str], tmp_path: Path
) -> None:
    """Worker 1 (a process) hangs in its third trial and is SIGKILLed while worker 2 (a thread of
    this process) runs; worker 2 fails the stale trial, runs its retried copy and stops at
    exactly the budget."""
    url, name = pg_study
    budget = 8
    optuna.create_study(study_name=name, storage=url)  # once, before the workers
    marker = tmp_path / "victim.json"
    victim = mp.get_context("spawn").Process(
        target=_pg_worker, args=(url, name, budget, str(marker))
    )
    victim.start()
    survivor = threading.Thread(target=_pg_worker, args=(url, name, budget, None))
    try:
        _wait_for(marker, 60, victim.is_alive)
        _wait_for_heartbeat(url, name, json.loads(marker.read_text())["trial"])
        survivor.start()  # a live second worker while the first one dies
        time.sleep(0.2)
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(timeout=10)
        assert victim.exitcode == -signal.SIGKILL
        info = json.loads(marker.read_text())
        study = optuna.load_study(study_name=name, storage=url)
        assert study.trials[info["trial"]].state == TrialState.RUNNING  # left behind
        before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}
        assert set(info["done"]) <= set(before)
        survivor.join(timeout=60)
        assert not survivor.is_alive()
    finally:
        if victim.is_alive():
            victim.kill()
    trials = optuna.load_study(study_name=name, storage=url).trials
    _assert_retried_and_budget_met(trials, info["trial"], before, budget)


# -- SQLite: the real CLI, killed mid-trial, then resumed -----------------------------------------


@pytest.mark.timeout(300)
def test_cli_run_killed_mid_trial_on_sqlite_resumes_to_the_budget(
    tiny_run: TinyStudy, tmp_path: Path
) -> None:
    from optuna_merge3.runner import StudyRunner

    budget = 3
    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    config = write_config(tmp_path / "kill.toml", tiny_raw(out_dir, n_trials=budget, name="kill"))
    marker = tmp_path / "marker"
    log = tmp_path / "run.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-c", HANG_IN_SECOND_TRIAL, str(marker),
             "run", str(config), "--heartbeat", "1"],
            cwd=REPO, stdout=fh, stderr=subprocess.STDOUT,
        )
    try:
        try:
            _wait_for(marker, 120, lambda: proc.poll() is None)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; its output:\n{log.read_text()[-3000:]}") from None
        _wait_for_heartbeat(sqlite_url(out_dir), "kill", 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL
    study = optuna.load_study(study_name="kill", storage=sqlite_url(out_dir))
    states = {t.number: t.state for t in study.trials}
    # seed 0 done, seed 1 left RUNNING by the kill, seed 2 still queued
    assert states == {0: TrialState.COMPLETE, 1: TrialState.RUNNING, 2: TrialState.WAITING}
    before = {t.number: t.values for t in study.trials if t.state == TrialState.COMPLETE}

    # The second run of the same config: the stale trial is failed and retried, the rest sampled.
    runner = StudyRunner(config, heartbeat_interval=1)
    runner.run()
    trials = optuna.load_study(study_name="kill", storage=sqlite_url(out_dir)).trials
    _assert_retried_and_budget_met(trials, 1, before, budget)
    retry = _retries_of(trials, 1)[0]
    assert retry.user_attrs["seed"] == "endpoint:lang_it"  # the gen-0 seed is evaluated after all
    assert retry.user_attrs["role"] == "retry"
    assert "estimate/math_it" in retry.user_attrs


# -- a moved repository still resumes its studies -------------------------------------------------
def test_signature_has_no_absolute_paths_and_a_moved_repo_resumes(
    existing_study: TinyStudy, tmp_path: Path
) -> None:
    from optuna_merge3.config import StudyConfig, load_config
    from optuna_merge3.runner import StudyRunner

    original = load_config(STUDIES / "tiny_world.toml")
    moved = load_config(copy_world(tmp_path / "elsewhere" / "studies"))
    assert moved.merge.base != original.merge.base  # really other files
    assert moved.signature() == original.signature()
    assert str(REPO) not in json.dumps(original.signature())
    merge = original.signature()["merge"]
    assert merge["base"] == "base" and merge["endpoints"] == {"math_en": "math_en",
                                                              "lang_it": "lang_it"}

    # the moved config (same name and study folder) resumes the study made from the original
    raw = dict(moved.raw, study=dict(existing_study.raw["study"]))
    config = StudyConfig.from_dict(raw, moved.source.parent, source=moved.source)
    before = existing_study.snapshot()
    runner = StudyRunner(config)
    assert runner.check() is True
    assert runner.open_study().user_attrs[study_lib.SIGNATURE_KEY]["merge"] == merge
    assert existing_study.snapshot() == before


def test_a_signature_stored_with_absolute_paths_still_resumes(existing_study: TinyStudy) -> None:
    """Studies made before signatures were path-free (absolute model paths) resume too."""
    from optuna_merge3.runner import StudyRunner

    study = optuna.load_study(study_name=existing_study.name, storage=existing_study.storage)
    old = json.loads(json.dumps(study.user_attrs[study_lib.SIGNATURE_KEY]))
    old["merge"]["base"] = existing_study.raw["merge"]["base"]
    old["merge"]["endpoints"] = dict(existing_study.raw["merge"]["endpoints"])
    assert old["merge"]["base"].startswith("/")
    study.set_user_attr(study_lib.SIGNATURE_KEY, old)
    assert StudyRunner(existing_study.config_path).check() is True


def test_a_fresh_trial_leaves_the_last_slot_to_a_queued_retry() -> None:
    """A queued trial (a seed, or the retried copy of a killed one) runs before a newly sampled
    trial may take the last free slot of the budget."""
    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=1)
    fresh = study.ask()  # sampled: nothing is queued yet
    study.enqueue_trial({"x": 0.5})  # e.g. RetryHeartbeatStaleTrialCallback's copy
    workers.claim_budget_slot(fresh, budget=3, poll_s=0.01, timeout_s=1)  # room for both
    with pytest.raises(optuna.TrialPruned, match="goes to queued trial 2"):
        workers.claim_budget_slot(fresh, budget=2, poll_s=0.01, timeout_s=1)
    study.tell(fresh, state=TrialState.PRUNED)
    queued = study.ask()
    workers.claim_budget_slot(queued, budget=2, poll_s=0.01, timeout_s=1)  # it runs
    study.tell(queued, queued.suggest_float("x", 0, 1))
    assert queued.params == {"x": 0.5}
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 2




def test_once_the_budget_is_met_no_retry_is_left_waiting_and_no_dead_trial_running(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The soak test's end: a worker died before it recorded itself, and its trial is only
    recognised after the grace; the last trials complete meanwhile. The worker that finds the
    budget met fails the dead trial and retires its queued retry; a user's seed stays queued."""
    monkeypatch.setattr(workers, "_UNRECORDED_GRACE_S", 0.3)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}")
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    dead = study.ask()  # killed between ask and record_worker: no record, no heartbeat
    study.enqueue_trial({"x": 0.25})  # the user's seed
    last = study.ask()  # pops the seed
    study.tell(last, last.suggest_float("x", 0, 1))
    study.enqueue_trial({"x": 0.75})
    workers.record_worker(seed := study.ask())  # a live worker's queued trial, recorded
    study.tell(seed, state=TrialState.PRUNED)

    def objective(trial: optuna.Trial) -> float:  # the worker that finds the budget met
        workers.record_worker(trial)
        study.enqueue_trial({"x": 0.5}, user_attrs={"kept": True})  # stays for a larger budget
        workers.claim_budget_slot(trial, budget=3, poll_s=0.05, timeout_s=5)
        return 0.0

    study.optimize(objective, n_trials=1)
    trials = study.get_trials()
    over = trials[seed.number + 1]
    assert over.state == TrialState.PRUNED and over.user_attrs["budget"] == "exhausted"
    assert trials[dead.number].state == TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == dead.number]
    assert len(retries) == 1 and retries[0].state == TrialState.PRUNED
    assert retries[0].user_attrs["budget"] == "exhausted"
    assert [t.user_attrs for t in trials if t.state == TrialState.WAITING] == [{"kept": True}]
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]


def test_a_worker_whose_live_trial_another_failed_goes_on(
    existing_study: TinyStudy, monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a stall another worker takes a live trial's heartbeat for stale, fails it and
    queues its copy; Optuna then refuses to tell the trial. The worker says so and goes on: the
    copy runs and the budget is still met exactly."""
    from optuna_merge3.objective import Merge3Objective

    evaluate = Merge3Objective._evaluate_or_fail
    stolen: list[int] = []

    def evaluate_during_a_stall(self, trial, params):  # noqa: ANN001, ANN202
        values = evaluate(self, trial, params)
        frozen = trial.study._storage.get_trial(trial._trial_id)
        if not stolen and "failed_trial" not in frozen.system_attrs:  # once, on a fresh trial
            stolen.append(trial.number)
            assert workers.fail_and_requeue(trial.study, [frozen]) == 1  # "another worker"
        return values

    monkeypatch.setattr(Merge3Objective, "_evaluate_or_fail", evaluate_during_a_stall)
    code, out, err = run_cli("run", existing_study.config_path, "--n-trials", "6")
    assert code == 0, err[-3000:]
    assert f"trial {stolen[0]} was failed by another worker while it ran" in out + err
    trials = optuna.load_study(study_name=existing_study.name,
                               storage=existing_study.storage).trials
    assert trials[stolen[0]].state == TrialState.FAIL
    copy = next(t for t in trials if t.system_attrs.get("failed_trial") == stolen[0])
    assert copy.state in (TrialState.COMPLETE, TrialState.PRUNED)
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 6
