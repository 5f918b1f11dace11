"""optuna-dashboard, served the way ``optuna-merge3 dashboard`` serves it, on a finished study:
its HTTP API shows the metric names, the Pareto front, user attributes, artifacts and the note."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator

import optuna
import pytest
from plugin_helpers import TinyStudy

from optuna_merge3.cli import dashboard_server
from optuna_merge3.runner import StudyRunner


@pytest.fixture
def dashboard(tiny_run: TinyStudy) -> Iterator[str]:
    """The base URL of a dashboard server on a free port, stopped afterwards."""
    server = dashboard_server(StudyRunner(tiny_run.config_path), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def _get(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.headers.get("Content-Type", ""), response.read()


def test_dashboard_api_shows_metrics_front_attrs_artifacts_and_note(
    dashboard: str, tiny_run: TinyStudy
) -> None:
    study = optuna.load_study(study_name="tiny", storage=tiny_run.storage)
    status, _, body = _get(f"{dashboard}/api/studies")
    assert status == 200
    listed = {s["study_name"]: s for s in json.loads(body)["study_summaries"]}
    assert listed["tiny"]["directions"] == ["maximize", "maximize"]

    status, _, body = _get(f"{dashboard}/api/studies/{listed['tiny']['study_id']}")
    detail = json.loads(body)
    assert detail["name"] == "tiny"
    assert detail["objective_names"] == ["math_it (gmpirt)", "qa_en (gmpirt)"]
    assert sorted(t["number"] for t in detail["best_trials"]) == sorted(
        t.number for t in study.best_trials)
    note = detail["note"]["body"]
    assert note.startswith("# tiny\n") and "## Objectives" in note and "`role`" in note
    assert "```toml\n" in note and "[merge]" in note  # the config, readable, at the end
    study_attrs = {a["key"] for a in detail["user_attrs"]}
    assert {"merge3:signature", "merge3:seeded"} <= study_attrs

    trials = {t["number"]: t for t in detail["trials"]}
    assert len(trials) == len(study.trials)
    for number, trial in trials.items():
        attrs = {a["key"]: a["value"] for a in trial["user_attrs"]}
        for key in ("estimate/math_it", "estimate/qa_en", "subset_accuracy/math_it",
                    "lambda/qa_en", "items_evaluated", "seconds/merge", "flops_estimated"):
            assert key in attrs, (number, key)
        assert float(attrs["estimate/math_it"]) == pytest.approx(study.trials[number].values[0])
        (artifact,) = trial["artifacts"]
        assert artifact["filename"] == "answers.json"
        assert artifact["mimetype"] == "application/json"
        status, ctype, payload = _get(
            f"{dashboard}/artifacts/{listed['tiny']['study_id']}/{trial['trial_id']}/"
            f"{artifact['artifact_id']}")
        assert status == 200 and ctype.startswith("application/json")
        answers = json.loads(payload)
        assert [len(answers[t]) for t in ("math_it", "qa_en")] == [20, 20]
        assert {"id", "answer", "correct"} == set(answers["math_it"][0])
        correct = sum(a["correct"] for a in answers["math_it"]) / 20
        assert correct == pytest.approx(float(attrs["subset_accuracy/math_it"]))

    (estimate,) = detail["artifacts"]  # the study-level Estimate artifact
    assert estimate["filename"] == "estimate.json"
    status, ctype, payload = _get(
        f"{dashboard}/artifacts/{listed['tiny']['study_id']}/{estimate['artifact_id']}")
    assert status == 200 and ctype.startswith("application/json")
    summary = json.loads(payload)
    assert set(summary) == {"math_it", "qa_en"}
    assert len(summary["math_it"]["subset_item_ids"]) == 20
    assert summary["math_it"]["irt_fit"]["n_models"] == 68
    assert set(summary["qa_en"]["endpoint_ability"]) == {"math_en", "lang_it"}
    roles = {n: {a["key"]: a["value"] for a in t["user_attrs"]}["role"] for n, t in trials.items()}
    assert [roles[n] for n in (0, 1, 2)] == ["endpoint", "endpoint", "uniform"]

    status, ctype, body = _get(f"{dashboard}/dashboard")
    assert status == 200 and ctype.startswith("text/html") and b"<html" in body.lower()
