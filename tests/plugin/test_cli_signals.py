"""The real CLI stopped mid-trial: SIGTERM, Ctrl-C, kill -9 with the heartbeat off, ``repair``.

Each test runs ``optuna-merge3 run`` of the tiny world in a subprocess whose second trial hangs
(``HANG_IN_SECOND_TRIAL``), stops it, and checks what it printed and what the study holds.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from plugin_helpers import (
    HANG_IN_SECOND_TRIAL,
    REPO,
    TinyStudy,
    copy_estimate_cache,
    run_cli,
    sqlite_url,
    tiny_raw,
    write_config,
)


def _hanging_run(tmp_path: Path, tiny_run: TinyStudy, *args: str) -> tuple[Path, subprocess.Popen]:
    """Start the CLI on a fresh copy of the tiny study and wait until it hangs in trial 1."""
    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    config = write_config(tmp_path / "sig.toml", tiny_raw(out_dir, n_trials=3, name="sig"))
    marker = tmp_path / "marker"
    proc = subprocess.Popen(
        [sys.executable, "-c", HANG_IN_SECOND_TRIAL, str(marker), "run", str(config), *args],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"no hang reached: {proc.communicate()[1][-3000:]}")
        time.sleep(0.05)
    return config, proc


def _states(config_dir: Path) -> dict[int, TrialState]:
    study = optuna.load_study(study_name="sig", storage=sqlite_url(config_dir / "out"))
    return {t.number: t.state for t in study.trials}


@pytest.mark.timeout(240)
@pytest.mark.parametrize("sig, code, word", [(signal.SIGTERM, 0, "SIGTERM"),
                                             (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_mid_trial_fails_and_requeues_it_in_one_line(
    tiny_run: TinyStudy, tmp_path: Path, sig: int, code: int, word: str
) -> None:
    config, proc = _hanging_run(tmp_path, tiny_run)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in out + err
    last = err.strip().splitlines()[-1]
    assert last == (f"optuna-merge3 run: stopped by {word}; trial(s) [1] failed and re-queued "
                    "for the next run")
    # seed 0 done, trial 1 failed, seed 2 still queued, and the copy of trial 1 queued
    assert _states(tmp_path) == {0: TrialState.COMPLETE, 1: TrialState.FAIL,
                                 2: TrialState.WAITING, 3: TrialState.WAITING}
    code, _, err = run_cli("run", config)  # the next run evaluates the re-queued genotype
    assert code == 0, err[-2000:]
    study = optuna.load_study(study_name="sig", storage=sqlite_url(tmp_path / "out"))
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 3
    assert study.trials[1].params in [t.params for t in complete]


@pytest.mark.timeout(240)
def test_heartbeat_off_kill_and_rerun_finishes_on_sqlite(tiny_run: TinyStudy,
                                                        tmp_path: Path) -> None:
    """No heartbeat: the rerun recognises the killed worker by its pid on this host."""
    config, proc = _hanging_run(tmp_path, tiny_run, "--heartbeat", "0")
    proc.kill()
    proc.wait(timeout=30)
    assert _states(tmp_path)[1] == TrialState.RUNNING
    code, out, _ = run_cli("repair", config)
    assert "trial 1: RUNNING, host" in out and "dead (recognised)" in out
    code, out, err = run_cli("run", config, "--heartbeat", "0")
    assert code == 0, err[-2000:]
    states = _states(tmp_path)
    assert sum(s == TrialState.COMPLETE for s in states.values()) == 3
    assert states[1] == TrialState.FAIL and TrialState.RUNNING not in states.values()


def test_heartbeat_off_is_refused_on_postgres(tiny_run: TinyStudy, tmp_path: Path,
                                              postgres_url: str) -> None:
    config = write_config(tmp_path / "pg.toml", tiny_raw(tmp_path / "out", name="pg"))
    code, out, err = run_cli("run", config, "--storage", postgres_url, "--heartbeat", "0")
    assert code == 2
    assert "--heartbeat 0 on postgresql://" in err and "keep a heartbeat" in err


def test_repair_fails_and_requeues_a_running_trial_after_confirmation(
    existing_study: TinyStudy,
) -> None:
    """A trial left RUNNING (here: asked by this test, as if its worker had died)."""
    config = existing_study.config_path
    study = optuna.load_study(study_name=existing_study.name, storage=existing_study.storage)
    left = study.ask()
    left.suggest_float("weight/math_en", 0.0, 1.5)
    code, out, _ = run_cli("repair", config)  # not a terminal: nothing changes without --yes
    assert code == 1
    assert f"trial {left.number}: RUNNING, worker not recorded" in out
    assert f"repair {config} --yes" in out
    assert study.trials[left.number].state == TrialState.RUNNING
    code, out, _ = run_cli("repair", config, "--yes")
    assert code == 0 and "failed and re-queued 1 trial(s)" in out
    trials = study.trials
    assert trials[left.number].state == TrialState.FAIL
    assert trials[-1].state == TrialState.WAITING and trials[-1].params == left.params
    assert "no RUNNING trial; nothing to repair" in run_cli("repair", config)[1]


def test_version() -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        run_cli("--version")
    assert exit_.value.code == 0
    proc = subprocess.run([sys.executable, "-m", "optuna_merge3.cli", "--version"],
                          capture_output=True, text=True, cwd=REPO, check=True)
    assert proc.stdout.strip() == f"optuna-merge3 {version('optuna-merge3')}"
