"""Task loading: JSONL / CSV schema, sidecar config, errors naming file, line and field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from optuna_merge3.evaluation import load_task


def _write(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_jsonl_with_sidecar_config(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "t.jsonl",
        [
            {"id": "a", "prompt": "Q: 1+1? A:", "answer": 2},
            {
                "id": "b",
                "prompt": "Q: x? A:",
                "answer": "B",
                "choices": ["1", "2"],
                "language": "de",
            },
        ],
    )
    (tmp_path / "t.json").write_text(
        json.dumps(
            {
                "scorer": "number",
                "scorer_options": {"position": "first"},
                "max_new_tokens": 5,
                "stop": ["\n"],
                "language": "it",
            }
        )
    )
    task = load_task(path)
    assert task.name == "t" and task.scorer == "number"
    assert task.generation.max_new_tokens == 5 and task.generation.stop == ("\n",)
    assert task.items[0].answer == "2" and task.items[0].language == "it"
    assert task.items[1].choices == ("1", "2") and task.items[1].language == "de"


def test_csv(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text('id,prompt,answer,choices\na,"Q: capital?",B,"Paris|Rome"\nb,Q2,C,\n')
    task = load_task(path, config={"scorer": "choice"})
    assert task.items[0].choices == ("Paris", "Rome")
    assert task.items[1].choices is None


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([{"id": "a", "prompt": "p", "answer": "1"}, "{not json"], r"t\.jsonl:2: invalid JSON"),
        ([{"id": "a", "answer": "1"}], r"t\.jsonl:1: missing required field 'prompt'"),
        ([{"id": "a", "prompt": "p"}], r"t\.jsonl:1: missing required field 'answer'"),
        ([{"id": "a", "prompt": "p", "answer": "1", "choices": "x"}], r":1: field 'choices'"),
        ([{"id": "a", "prompt": "p", "answer": "1"}] * 2, r"duplicate id 'a'"),
        (["[1, 2]"], r"t\.jsonl:1: expected a JSON object"),
    ],
)
def test_errors_name_file_line_and_field(tmp_path: Path, rows: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_task(_write(tmp_path / "t.jsonl", rows))


def test_csv_error_line(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("id,prompt,answer\na,p,1\nb,,2\n")
    with pytest.raises(ValueError, match=r"t\.csv:3: missing required field 'prompt'"):
        load_task(path)


def test_bad_config_lists_valid_choices(tmp_path: Path) -> None:
    path = _write(tmp_path / "t.jsonl", [{"id": "a", "prompt": "p", "answer": "1"}])
    with pytest.raises(ValueError, match="unknown scorer 'regex'; valid"):
        load_task(path, config={"scorer": "regex"})
    with pytest.raises(ValueError, match="unknown task config keys"):
        load_task(path, config={"scorrer": "number"})
    with pytest.raises(ValueError, match="valid"):
        load_task(tmp_path / "t.txt")


def test_task_from_a_real_datasets_dataset(tmp_path: Path) -> None:
    """GSM8K-shaped columns mapped onto items through the real `datasets` loader, offline."""
    datasets = pytest.importorskip("datasets", reason="the optional `datasets` package")
    from optuna_merge3.evaluation import load_hf_task, task_from_dataset

    rows = [{"question": f"Q: {i}+1? A:", "answer": f"#### {i + 1}"} for i in range(3)]
    data_file = _write(tmp_path / "gsm.jsonl", rows)
    task = load_hf_task(
        "json",
        "train",
        {"scorer": "number", "max_new_tokens": 8},
        columns={"prompt": "question"},
        data_files=str(data_file),
        cache_dir=str(tmp_path / "cache"),
    )
    assert [item.id for item in task.items] == ["0", "1", "2"]
    assert task.items[2].prompt == "Q: 2+1? A:" and task.items[2].answer == "#### 3"
    assert task.scorer == "number" and task.generation.max_new_tokens == 8
    same = task_from_dataset(datasets.Dataset.from_list(rows), columns={"prompt": "question"})
    assert [i.prompt for i in same.items] == [i.prompt for i in task.items]


def test_task_from_dataset_names_the_bad_row() -> None:
    from optuna_merge3.evaluation import task_from_dataset

    rows = [{"prompt": "ok", "answer": "1"}, {"prompt": "no answer"}]
    with pytest.raises(ValueError, match=r"row 1: missing required field 'answer'"):
        task_from_dataset(rows, name="mine")
    with pytest.raises(ValueError, match="unknown item fields"):
        task_from_dataset(rows, columns={"question": "prompt"})


def test_generation_defaults_per_scorer(tmp_path: Path) -> None:
    """A task file without max_new_tokens / stop gets its scorer's defaults, key by key."""
    from optuna_merge3.evaluation import GENERATION_DEFAULTS, GenerationConfig

    path = _write(tmp_path / "t.jsonl", [{"id": "a", "prompt": "Q: 1+1? A:", "answer": "2"}])
    number = load_task(path, config={"scorer": "number"})
    assert number.generation == GENERATION_DEFAULTS["number"]
    assert number.generation.max_new_tokens == 256 and "Question:" in number.generation.stop
    exact = load_task(path, config={"scorer": "exact", "stop": ["\n"]})
    assert exact.generation == GenerationConfig(32, ("\n",))
    own = load_task(path, config={"scorer": "number", "max_new_tokens": 8})
    assert own.generation == GenerationConfig(8, GENERATION_DEFAULTS["number"].stop)
