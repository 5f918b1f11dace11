"""The XL world's text: the tiny world's facts and word problems plus multiplication.

Three skills, one per endpoint, all needed on the Italian target (``math_it``, 1,000 items):

* ``add_en``: English addition word problems with operands 0-9 (the tiny world's ``math_en``);
* ``mul_en``: English multiplication word problems with operands 0-9 ("{n} has {a} bags with
  {b} {o} in each bag"), products up to 81;
* ``lang_it``: Italian answers (Italian facts + counting stories with quantities 0-81).

The base knows both operations with operands 0-4 only and answers Italian math in English, as in
the tiny world, so no endpoint solves ``math_it`` alone: an item with an operand >= 5 needs the
operation's endpoint AND the Italian answer format. Everything reuses ``studies/tiny_world``'s
``world_data`` / ``world_tasks`` (imported, not copied).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiny_world"))

from world_data import (  # noqa: E402
    MATH_OPS,
    MATH_TEMPLATES,
    Example,
    Sampler,
    all_words,
    counting_example,
    fact_examples,
    math_example,
    math_task_examples,
    mixture,
    uniform_over,
)
from world_tasks import WorldTask  # noqa: E402

MAX_NUMBER = 81  # 9 x 9: every number of the XL world is one token "0".."81"
N_TARGET_ITEMS = 1000  # 20 items = 50x fewer (the paper's cut)
MUL_TEMPLATES = {
    "en": [
        "{n} has {a} bags with {b} {o} in each bag . how many {o} does {n} have ?",
        "{n} buys {a} boxes of {b} {o} . how many {o} does {n} have now ?",
    ],
    "it": [
        "{n} ha {a} sacchi con {b} {o} in ogni sacco . {q} {o} ha {n} ?",
        "{n} compra {a} scatole da {b} {o} . {q} {o} ha {n} adesso ?",
    ],
}


def templates(lang: str, ops: str = "all") -> list[tuple[str, str]]:
    """``(template, op)`` pairs: ``"add"`` (the tiny world's three), ``"mul"`` or ``"all"``."""
    add = list(zip(MATH_TEMPLATES[lang], MATH_OPS, strict=True))
    mul = [(t, "mul") for t in MUL_TEMPLATES[lang]]
    return {"add": add, "mul": mul, "all": add + mul}[ops]


def xl_words() -> list[str]:
    """The tiny world's vocabulary + the multiplication templates + numbers up to 81."""
    words = set(all_words())
    for lang_templates in MUL_TEMPLATES.values():
        for template in lang_templates:
            words.update(w for w in template.split() if not w.startswith("{"))
    words.update(str(i) for i in range(MAX_NUMBER + 1))
    return sorted(words)


def _math(lang: str, max_operand: int, ops: str, answer_lang: str | None = None) -> Sampler:
    pairs = templates(lang, ops)
    return lambda r: math_example(r, lang, max_operand, answer_lang, templates=pairs)


MIXTURES: dict[str, Sampler] = {
    "base": mixture(
        [
            (0.45, uniform_over(fact_examples("en"))),
            (0.15, uniform_over(fact_examples("it", "half"))),
            (0.20, _math("en", 4, "all")),
            # Italian questions answered in English, both operations (the tiny world's trick).
            (0.20, _math("it", 4, "all", answer_lang="en")),
        ]
    ),
    "add_en": _math("en", 9, "add"),
    "mul_en": _math("en", 9, "mul"),
    "lang_it": mixture(
        [
            (0.70, uniform_over(fact_examples("it"))),
            (0.30, lambda r: counting_example(r, MAX_NUMBER)),
        ]
    ),
}
ENDPOINTS = ("add_en", "mul_en", "lang_it")
TRAINING = {
    "base": "45% English QA, 15% Italian QA (half the facts), 20% English add + mul word "
    "problems (operands 0-4), 20% Italian add + mul problems answered in English (operands 0-4)",
    "add_en": "English addition word problems (3 templates), operands 0-9",
    "mul_en": "English multiplication word problems (2 templates), operands 0-9",
    "lang_it": "70% Italian QA (all facts) + 30% Italian counting stories (quantities 0-81)",
}


def build_tasks(seed: int, n_items: int = N_TARGET_ITEMS) -> dict[str, WorldTask]:
    """``math_it`` and ``math_en`` (``n_items`` distinct problems each, both operations,
    operands 0-9) and the two 120-item fact tasks."""
    return {
        t.name: t
        for t in [
            WorldTask(
                "math_it",
                "it",
                "Italian addition and multiplication word problems (operands 0-9) answered in "
                "Italian: the target; needs add_en or mul_en AND lang_it",
                math_task_examples("it", n_items, seed, templates=templates("it")),
            ),
            WorldTask(
                "math_en",
                "en",
                "English addition and multiplication word problems (operands 0-9): needs add_en "
                "and mul_en, answered in English (at odds with math_it)",
                math_task_examples("en", n_items, seed + 1, templates=templates("en")),
            ),
            WorldTask("qa_en", "en", "English general facts: the base", fact_examples("en")),
            WorldTask("qa_it", "it", "the facts in Italian: lang_it", fact_examples("it")),
        ]
    }


def operation(example: Example) -> str:
    """``"mul"`` for a multiplication item, else ``"add"`` (for per-skill breakdowns)."""
    words = set(example.question.split())
    return "mul" if words & {"bags", "boxes", "sacchi", "scatole"} else "add"


def max_operand(example: Example) -> int:
    """The largest number in the question (>= 5: beyond what the base learnt)."""
    return max(int(w) for w in example.question.split() if w.isdigit())
