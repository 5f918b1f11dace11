"""What a user sees, through the real CLI: resume messages, hints that reach the same study,
read-only commands that create nothing, trial roles, the study note and Estimate artifact, the
report figure and the percent in every view."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState
from plugin_helpers import (
    REPO,
    TINY_RUN_TRIALS,
    TinyStudy,
    copy_estimate_cache,
    run_cli,
    tiny_raw,
    write_config,
)


def test_a_resume_with_the_budget_met_says_so_and_runs_nothing(existing_study: TinyStudy) -> None:
    before = existing_study.snapshot()
    code, out, err = run_cli("run", existing_study.config_path)
    assert code == 0, err[-2000:]
    assert (f"[evolve] {TINY_RUN_TRIALS}/{TINY_RUN_TRIALS} complete trials: the budget is met, "
            "nothing to run") in out
    assert "running" not in out and "trials completed" not in out
    assert existing_study.snapshot() == before


def test_hints_after_run_with_storage_reach_the_same_study(tiny_run: TinyStudy,
                                                           tmp_path: Path) -> None:
    out_dir = tmp_path / "out"
    copy_estimate_cache(tiny_run, out_dir)
    config = write_config(tmp_path / "s.toml", tiny_raw(out_dir, n_trials=3, name="elsewhere"))
    storage = f"sqlite:///{tmp_path / 'db' / 'other.db'}"
    code, out, err = run_cli("run", config, "--storage", storage)
    assert code == 0, err[-2000:]
    hints = [line for line in out.splitlines() if line.startswith(("Inspect:", "Export"))]
    assert len(hints) == 2 and all(f"{config} --storage {storage}" in h for h in hints), hints
    export = re.search(r"optuna-merge3 (export .*) --out merged/", out).group(1)
    argv = shlex.split(export.replace("TRIAL", "2")) + ["--out", str(tmp_path / "merged")]
    code, _, err = run_cli(*argv)  # the hint as printed, trial filled in
    assert code == 0, err
    assert not (out_dir / "study.db").exists()  # no second study next to the config's out_dir


@pytest.mark.parametrize("storage", [None, "journal"])
def test_read_only_commands_on_a_missing_study_create_nothing(
    storage: str | None, tmp_path: Path
) -> None:
    out_dir = tmp_path / "never"
    config = write_config(tmp_path / "never.toml", tiny_raw(out_dir, name="never-run"))
    extra = [] if storage is None else ["--storage", str(tmp_path / "j" / "study.log")]
    run_hint = f"`optuna-merge3 run {shlex.join([str(config), *extra])}` first"
    for command in (["best", "--no-truth"], ["report"], ["export", "0", "--out", tmp_path / "x"],
                    ["dashboard", "--port", "0"]):
        code, out, err = run_cli(command[0], config, *extra, *command[1:])
        assert code == 2, out + err
        assert "study 'never-run' not found in " in err and "(nothing was created)" in err, err
        assert run_hint in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["never.toml"]  # no folder, no file


def test_trial_roles_tell_seeds_searches_and_retries_apart() -> None:
    from optuna_merge3.study import trial_role

    def trial(user: dict, system: dict) -> optuna.trial.FrozenTrial:
        return optuna.trial.create_trial(value=0.0, user_attrs=user, system_attrs=system)

    assert trial_role(trial({"seed": "endpoint:math_en"}, {"fixed_params": {}})) == "endpoint"
    assert trial_role(trial({"seed": "uniform"}, {"fixed_params": {}})) == "uniform"
    assert trial_role(trial({}, {})) == "search"
    # a heartbeat retry copies the killed trial's user attrs, seed included
    assert trial_role(trial({"seed": "uniform", "role": "uniform"}, {"failed_trial": 2})) == "retry"


def test_a_retry_is_labelled_and_its_note_names_the_killed_trial() -> None:
    from optuna_dashboard._note import get_note_from_system_attrs

    from optuna_merge3.study import label_trial

    study = optuna.create_study()
    study.add_trial(optuna.trial.create_trial(  # what RetryHeartbeatStaleTrialCallback enqueues
        state=TrialState.WAITING, params={"x": 0.5},
        distributions={"x": optuna.distributions.FloatDistribution(0, 1)},
        user_attrs={"seed": "uniform", "role": "uniform"},
        system_attrs={"failed_trial": 3, "retry_history": [3]}))

    def objective(trial: optuna.Trial) -> float:
        label_trial(trial)
        return trial.suggest_float("x", 0, 1)

    study.optimize(objective, n_trials=2)
    assert [t.user_attrs["role"] for t in study.trials] == ["retry", "search"]
    attrs = study._storage.get_study_system_attrs(study._study_id)
    notes = [get_note_from_system_attrs(attrs, t._trial_id)["body"] for t in study.trials]
    assert notes == ["**Retry** of trial 3 (uniform seed): its worker stopped mid-trial, so the "
                     "same parameters run again.", ""]


def test_the_study_note_is_readable_markdown(tiny_run: TinyStudy) -> None:
    from optuna_dashboard._note import get_note_from_system_attrs

    study = optuna.load_study(study_name="tiny", storage=tiny_run.storage)
    system_attrs = study._storage.get_study_system_attrs(study._study_id)  # where save_note writes
    note = get_note_from_system_attrs(system_attrs, None)["body"]
    assert note.startswith("# tiny\n\nMERGE^3 evolutionary merging: **task_arithmetic** of "
                           "`math_en`, `lang_it` on base `base`, searched by **nsga2**")
    rows = {line.split("|")[1].strip(): line for line in note.splitlines()
            if line.startswith("| ") and "---" not in line}
    assert "| math_it | maximize | gmpirt | 20 | 200 | math_en 0.0%, lang_it 14.0% |" in note
    assert set(rows) == {"task", "math_it", "qa_en"}
    assert f"optuna-merge3 best {tiny_run.config_path}" in note
    assert note.rstrip().endswith("```") and "[merge]" in note
    assert "merge3:signature" in study.user_attrs  # the machine-readable part stays an attribute
    # the seeds say what they are in their trial note, at the top of their dashboard page
    trial_notes = [get_note_from_system_attrs(system_attrs, t._trial_id)["body"]
                   for t in study.trials]
    assert trial_notes[0].startswith("**Endpoint `math_en`**, as it is: a generation-0 seed")
    assert trial_notes[1].startswith("**Endpoint `lang_it`**")
    assert trial_notes[2].startswith("**Uniform merge** (every endpoint with the same weight)")
    assert set(trial_notes[3:]) == {""}  # sampled trials keep an empty note for the user


def test_the_estimate_artifact_matches_what_the_trials_used(tiny_run: TinyStudy) -> None:
    from optuna.artifacts import get_all_artifact_meta

    from optuna_merge3.shared_state import StudyArtifactStore

    study = optuna.load_study(study_name="tiny", storage=tiny_run.storage)
    store = StudyArtifactStore(study._storage, study._study_id)  # artifacts live in the storage
    (meta,) = get_all_artifact_meta(study)
    assert meta.filename == "estimate.json" and meta.mimetype == "application/json"
    with store.open_reader(meta.artifact_id) as fh:
        summary = json.load(fh)
    trial = study.get_trials(states=(TrialState.COMPLETE,))[0]
    (answers_meta,) = get_all_artifact_meta(trial, storage=study._storage)
    with store.open_reader(answers_meta.artifact_id) as fh:
        answers = json.load(fh)
    for task in ("math_it", "qa_en"):
        entry = summary[task]
        assert entry["subset_item_ids"] == [a["id"] for a in answers[task]]
        assert entry["subset_method"] == "random" and entry["estimator"] == "gmpirt"
        assert len(entry["subset_weights"]) == 20
        assert pytest.approx(sum(entry["subset_weights"])) == 1.0
        fit = entry["irt_fit"]
        assert fit["n_models"] == 68 and fit["d"] == 2 and isinstance(fit["converged"], bool)
        assert {"iterations", "neg_log_posterior", "fingerprint", "cache_key"} <= set(fit)
        assert all(len(v) == 2 for v in entry["endpoint_ability"].values())
    assert summary["qa_en"]["endpoint_accuracy"] == {"math_en": 0.5417, "lang_it": 0.0}


def test_the_report_figure_has_a_staircase_front_a_colourbar_and_legends(
    tiny_run: TinyStudy
) -> None:
    import matplotlib.pyplot as plt

    from optuna_merge3.report import report_figure
    from optuna_merge3.runner import StudyRunner

    runner = StudyRunner(tiny_run.config_path)
    study = runner.open_study(create=False)
    fig = report_figure(study, runner.summary(with_truth=True), ["math_it", "qa_en"])
    try:
        search, full, colourbar = fig.axes  # the colourbar axes is added last
        assert colourbar.get_ylabel() == "trial number"
        (front,) = [line for line in search.get_lines() if line.get_label() == "Pareto front"]
        assert front.get_drawstyle() == "steps-pre"  # maximized x: the step sits at each point
        xs, ys = front.get_xdata(), front.get_ydata()
        best = sorted(study.best_trials, key=lambda t: t.values[0])
        assert list(xs) == pytest.approx([100 * t.values[0] for t in best])
        assert list(ys) == pytest.approx([100 * t.values[1] for t in best])
        assert search.get_xlabel() == "math_it: estimated accuracy (%)"
        legend = [t.get_text() for t in full.get_legend().get_texts()]
        assert legend[0] in ("Pareto-front trial", "endpoint") and "endpoint" in legend
        assert "uniform merge" in legend
        notes = " | ".join(t.get_text() for t in full.texts)
        assert "endpoint math_en (trial 0)" in notes and "uniform merge (trial 2)" in notes
        assert "trial 0 (endpoint" not in notes  # a seed on the front is drawn once
        assert full.get_xlabel() == "math_it: accuracy on all items (%)"
    finally:
        plt.close(fig)


def test_a_single_task_report_shows_the_history_and_labelled_bars() -> None:
    import matplotlib.pyplot as plt

    from optuna_merge3.report import report_figure
    from optuna_merge3.runner import TrialSummary

    study = optuna.create_study(direction="maximize")
    for value, seed in [(0.2, "endpoint:a"), (0.1, "endpoint:b"), (0.3, "uniform"), (0.25, None),
                        (0.4, None)]:
        study.add_trial(optuna.trial.create_trial(
            value=value, user_attrs={"seed": seed} if seed else {}))
    rows = [TrialSummary("trial 4", {}, [0.4], [0.45], 4),
            TrialSummary("endpoint a (trial 0)", {}, [0.2], [0.22], 0, "endpoint"),
            TrialSummary("uniform merge (trial 2)", {}, [0.3], [0.33], 2, "uniform")]
    fig = report_figure(study, rows, ["math"])
    try:
        history, bars = fig.axes
        (best,) = [line for line in history.get_lines() if line.get_label() == "best so far"]
        assert list(best.get_ydata()) == pytest.approx([20, 20, 30, 30, 40])
        assert best.get_drawstyle() == "steps-post"
        legend = [t.get_text() for t in history.get_legend().get_texts()]
        assert legend == ["trial", "best so far", "endpoint (seed trial)",
                          "uniform merge (seed trial)"]
        assert [p.get_width() for p in bars.patches] == pytest.approx([45, 22, 33])
        assert [t.get_text() for t in bars.get_yticklabels()] == [r.label for r in rows]
        assert [t.get_text() for t in bars.get_legend().get_texts()] == [
            "best trial", "endpoint", "uniform merge"]
        assert bars.get_xlabel() == "math: accuracy on all items (%)"
    finally:
        plt.close(fig)


def test_the_progress_line_shows_percent_like_the_tables() -> None:
    from optuna_merge3.report import results_table
    from optuna_merge3.runner import TrialSummary, _ProgressBar

    bar = _ProgressBar(4, 0)
    trial = optuna.trial.create_trial(values=[0.275, 0.5])
    trial.number = 2
    bar(None, trial)
    assert bar.bar.postfix == "#2: 27.5%, 50.0%"
    bar.close()
    table = results_table([TrialSummary("trial 2", {}, trial.values, None)], ["a", "b"])
    assert table.splitlines()[-1] == "| trial 2 | 27.5 | 50.0 |  |  |"


def test_skip_reasons_are_shown_by_default(tmp_path: Path) -> None:
    test = tmp_path / "test_skips.py"
    test.write_text("import pytest\n\n\ndef test_x():\n    pytest.skip('no GPU here')\n")
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-c", str(REPO / "pyproject.toml"),
         "--rootdir", str(tmp_path), "-p", "no:cacheprovider", str(test)],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )
    assert "SKIPPED [1] test_skips.py:5: no GPU here" in result.stdout, result.stdout
