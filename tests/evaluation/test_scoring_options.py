"""Per-task scoring options (task config): answer_language, number_words, undecidable_language."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optuna_merge3.evaluation import load_task, task_fingerprint


def _task(tmp_path: Path, config: dict, rows: list[dict] | None = None):
    path = tmp_path / "t.jsonl"
    rows = rows or [{"id": "a", "prompt": "q", "answer": "1000"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    (tmp_path / "t.json").write_text(json.dumps(config), encoding="utf-8")
    return load_task(path)


@pytest.mark.parametrize(("language", "correct"), [("it", True), ("de", True), ("en", False)])
def test_answer_language_reads_group_marks(tmp_path: Path, language: str, correct: bool) -> None:
    task = _task(tmp_path, {"scorer": "number", "answer_language": language})
    assert task.score("Il prezzo è 1.000 euro.", task.items[0]) is correct


def test_item_language_also_sets_the_reading(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "q", "answer": "1000", "language": "it"}]
    task = _task(tmp_path, {"scorer": "number"}, rows)

    def italian(text: str, language: str) -> bool:  # stands in for fastText: the rule is N4
        return language == "it"

    assert task.score("Il prezzo è 1.000 euro.", task.items[0], italian)
    assert task.answer_language is None


def test_number_words_are_opt_in(tmp_path: Path) -> None:
    rows = [{"id": "a", "prompt": "q", "answer": "7"}]
    plain = _task(tmp_path, {"scorer": "number", "answer_language": "it"}, rows)
    assert not plain.score("La risposta è sette.", plain.items[0])
    opted = _task(
        tmp_path,
        {"scorer": "number", "answer_language": "it", "scorer_options": {"number_words": True}},
        rows,
    )
    assert opted.score("La risposta è sette.", opted.items[0])


@pytest.mark.parametrize(("policy", "correct"), [("accept", True), ("reject", False)])
def test_undecidable_language_policy(tmp_path: Path, policy: str, correct: bool) -> None:
    rows = [{"id": "a", "prompt": "q", "answer": "42", "language": "it"}]
    task = _task(tmp_path, {"scorer": "number", "undecidable_language": policy}, rows)
    assert task.undecidable_language == policy
    assert task.score("42", task.items[0]) is correct  # no prose: fastText is not asked


def test_bad_options_name_the_file_and_the_valid_values(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"t\.jsonl.*undecidable_language 'maybe'.*accept"):
        _task(tmp_path, {"scorer": "number", "undecidable_language": "maybe"})
    with pytest.raises(ValueError, match=r"t\.jsonl.*number_word.*'number'.*number_words"):
        _task(tmp_path, {"scorer": "number", "scorer_options": {"number_word": True}})
    with pytest.raises(ValueError, match=r"t\.jsonl.*scorer_options.*mapping"):
        _task(tmp_path, {"scorer": "number", "scorer_options": ["position"]})


def test_scoring_options_enter_the_task_fingerprint(tmp_path: Path) -> None:
    base = task_fingerprint(_task(tmp_path, {"scorer": "number"}))
    for extra in ({"answer_language": "it"}, {"undecidable_language": "reject"},
                  {"scorer_options": {"number_words": True}}):
        assert task_fingerprint(_task(tmp_path, {"scorer": "number", **extra})) != base
