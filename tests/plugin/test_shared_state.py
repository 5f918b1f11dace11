"""Workers need nothing but the storage: a second machine (another, empty ``out_dir``) with only
the config and the models joins a study without fitting or evaluating anything again, and every
trial's artifacts are read back through the study's storage."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.artifacts import download_artifact, get_all_artifact_meta
from optuna.trial import TrialState
from plugin_helpers import TINY_RUN_TRIALS, TinyStudy, run_cli, write_config

from optuna_merge3.shared_state import StudyArtifactStore, has_estimate


def test_a_second_machine_joins_from_the_storage_alone(existing_study: TinyStudy,
                                                       tmp_path: Path) -> None:
    study = optuna.load_study(study_name=existing_study.name, storage=existing_study.storage)
    assert has_estimate(study)
    path, raw = existing_study.variant(tmp_path / "second.toml",
                                       out_dir=str(tmp_path / "second_machine"))
    config = write_config(path, raw)
    budget = TINY_RUN_TRIALS + 3
    code, out, err = run_cli("run", config, "--storage", existing_study.storage,
                             "--n-trials", str(budget))
    assert code == 0, err[-2000:]
    assert "read from the study storage" in out
    assert "fitting 2PL" not in out and "evaluating endpoint" not in out
    assert list((tmp_path / "second_machine").rglob("irt_*.npz")) == []  # no IRT fit here
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == budget
    store = StudyArtifactStore(study._storage, study._study_id)
    for trial in complete:
        (meta,) = get_all_artifact_meta(trial, storage=study._storage)
        target = tmp_path / f"answers_{trial.number}.json"
        download_artifact(artifact_store=store, artifact_id=meta.artifact_id, file_path=target)
        answers = json.loads(target.read_text())
        assert set(answers) == {"math_it", "qa_en"} and len(answers["math_it"]) == 20
