"""The tiny world's evaluation tasks: items, their JSONL files, and scoring.

An answer is correct when its first word is the reference answer AND the task language's suffix
follows it ("7 è la risposta", "blue is the answer"): DESIGN.md section 4's criterion, which is what
makes the Italian math target need both the math skill and the Italian answer format.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from world_data import SUFFIX, Example, fact_examples, math_task_examples, trivia_examples

MAX_NEW_TOKENS = 6  # answer word + 3 suffix words + EOS, one spare


@dataclass(frozen=True)
class WorldTask:
    """One evaluation task of the world."""

    name: str
    lang: str  # language the answer must be written in (its suffix)
    description: str
    examples: list[Example]

    @property
    def item_ids(self) -> list[str]:
        return [f"{self.name}-{i:04d}" for i in range(len(self.examples))]

    @property
    def prompts(self) -> list[str]:
        return [ex.prompt() for ex in self.examples]

    @property
    def require_regex(self) -> str:
        """The answer's first word must be followed by the task language's suffix."""
        return r"^\s*\S+ " + SUFFIX[self.lang] + r"\b"  # suffixes hold no regex syntax

    def score(self, outputs: list[str]) -> np.ndarray:
        """Fallback scorer (first word == answer, suffix right after) -> bool array."""
        pattern = re.compile(self.require_regex)
        return np.array(
            [
                out.split()[:1] == [ex.answer] and bool(pattern.search(out))
                for ex, out in zip(self.examples, outputs, strict=True)
            ]
        )


def build_tasks(seed: int) -> dict[str, WorldTask]:
    """All tasks; the two 200-item math sets are drawn with ``seed`` (operands 0-9)."""
    return {
        t.name: t
        for t in [
            WorldTask(
                "math_it",
                "it",
                "Italian arithmetic word problems (operands 0-9) answered in Italian: the "
                "cross-lingual target no endpoint solves alone",
                math_task_examples("it", 200, seed),
            ),
            WorldTask(
                "math_en",
                "en",
                "English arithmetic word problems (operands 0-9): the math endpoint's skill",
                math_task_examples("en", 200, seed + 1),
            ),
            WorldTask(
                "qa_en",
                "en",
                "English general facts (colours, capitals, animal sounds, opposites): the base",
                fact_examples("en"),
            ),
            WorldTask(
                "qa_it",
                "it",
                "the same facts asked and answered in Italian: the Italian endpoint's skill",
                fact_examples("it"),
            ),
            WorldTask(
                "trivia_en",
                "en",
                "English trivia (tools, workplaces, animal homes) unseen by the base: the "
                "trivia endpoint's skill",
                trivia_examples(),
            ),
        ]
    }


def write_task(task: WorldTask, out_dir: Path) -> None:
    """``<task>.jsonl`` (id, prompt, answer) and ``<task>.json`` (the scoring / generation config)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{task.name}.jsonl", "w", encoding="utf-8") as fh:
        for item_id, ex in zip(task.item_ids, task.examples, strict=True):
            row = {"id": item_id, "prompt": ex.prompt(), "answer": ex.answer}
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    config = task_config(task)
    with open(out_dir / f"{task.name}.json", "w", encoding="utf-8") as fh:
        json.dump(config, fh, indent=2, ensure_ascii=False)
        fh.write("\n")


def task_config(task: WorldTask) -> dict:
    """The scoring / generation config of a task (read by ``optuna_merge3.evaluation``)."""
    numeric = task.name.startswith("math")
    return {
        "name": task.name,
        "description": task.description,
        "scorer": "number" if numeric else "exact_first_word",
        "scorer_options": {"position": "first"} if numeric else {},
        "require_regex": task.require_regex,
        "max_new_tokens": MAX_NEW_TOKENS,
        "stop": ["<eos>"],
        # not "language": an item language would trigger the evaluation package's fastText
        # check, which cannot identify four-word answers; the suffix regex checks language.
        "answer_language": task.lang,
    }
