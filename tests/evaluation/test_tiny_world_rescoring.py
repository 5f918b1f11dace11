"""The tiny world's tasks keep their scores under the current scoring rules.

The shipped reference matrices (studies/tiny_world/reference) hold every shipped model's 0/1
correctness on every item, scored when the world was built. Here the shipped models answer every
item again (every third item here, to stay fast; benchmarks/scoring_agreement.py rescores all
2840 judgements) and the answers are rescored with this package: a scoring change that moves a
judgement fails. The canonical answers ("8 è la risposta") of every item must score correct.
"""

from __future__ import annotations

import csv
import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from optuna_merge3 import evaluation

WORLD = Path(__file__).resolve().parents[2] / "studies" / "tiny_world"
MANIFEST = json.loads((WORLD / "world.json").read_text(encoding="utf-8"))


def _stored(task: str) -> dict[str, np.ndarray]:
    with gzip.open(WORLD / MANIFEST["tasks"][task]["reference"], "rt", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return {row[0]: np.array([int(v) for v in row[1:]], dtype=bool) for row in rows[1:]}


def _task(name: str) -> evaluation.Task:
    return evaluation.load_task(WORLD / MANIFEST["tasks"][name]["path"])


@pytest.mark.parametrize("name", list(MANIFEST["tasks"]))
def test_canonical_answers_score_correct(name: str) -> None:
    task = _task(name)
    suffix = re.sub(r"^\^\\s\*\\S\+ |\\b$", "", task.require_regex)  # "è la risposta"
    for item in task.items:
        good = f"{item.answer} {suffix}"
        assert evaluation.score_answer(
            good, item, task.scorer, task.scorer_options, task.require_regex,
            answer_language=task.answer_language,
        ), (name, item.id, good)


def test_shipped_models_keep_their_stored_scores() -> None:
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(WORLD / "models" / "base")
    tasks = {name: _task(name) for name in MANIFEST["tasks"]}
    for model_name in MANIFEST["models"]:
        model = AutoModelForCausalLM.from_pretrained(WORLD / "models" / model_name).eval()
        for name, task in tasks.items():
            every_third = np.arange(0, len(task.items), 3)
            got = evaluation.evaluate(model, tokenizer, task, every_third, batch_size=256).correct
            np.testing.assert_array_equal(
                got, _stored(name)[model_name][every_third], err_msg=f"{model_name} on {name}"
            )
