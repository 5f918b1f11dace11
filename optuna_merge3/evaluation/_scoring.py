"""Answer scoring: numbers, multiple choice by generation, exact match; the ``SCORERS`` registry.

Every rule is listed, one line each with an example, in docs/evaluation.md ("Scoring rules");
the per-language conventions are the table of ``_conventions.py``. Numbers: ``_numbers.py``;
choices: ``_choices.py``; language id: ``_langid.py``.
"""

from __future__ import annotations

import functools
import inspect
import re
import string
from collections.abc import Callable
from typing import Any

from ._choices import extract_choice, normalize_answer
from ._numbers import read_number, read_reference
from ._task import TaskItem

RULES_VERSION = 2
"""Bumped whenever a rule changes a judgement: it enters the task fingerprint (stale caches)."""


def extract_number(
    text: str, position: str = "last", language: str | None = None, number_words: bool = False
) -> float | None:
    """The answer's number as a float (see :func:`read_number` for the exact ``Decimal``)."""
    value = read_number(text, language, position, number_words)
    return None if value is None else float(value)


def score_number(
    answer: str,
    item: TaskItem,
    position: str = "last",
    number_words: bool = False,
    language: str | None = None,
) -> bool:
    """Exact decimal equality of the answer's number (read in ``language``) and the reference."""
    got = read_number(answer, language, position, number_words)
    ref = read_reference(item.answer, language)
    return got is not None and ref is not None and got == ref


def _reference_index(item: TaskItem) -> int:
    ref = item.answer.strip()
    if item.choices is None:
        raise ValueError(f"item {item.id!r}: a choice scorer needs 'choices'")
    if ref.isdigit():
        return int(ref)
    if len(ref) == 1 and ref.upper() in string.ascii_uppercase:
        return string.ascii_uppercase.index(ref.upper())
    for i, c in enumerate(item.choices):
        if normalize_answer(c) == normalize_answer(ref):
            return i
    raise ValueError(
        f"item {item.id!r}: answer {ref!r} is neither a letter, an index nor a choice's text"
    )


def score_choice(answer: str, item: TaskItem, language: str | None = None) -> bool:
    """Multiple choice by generation; reference = letter, 0-based index or the choice's text.
    ``language`` is unused: answer statements of every language are recognised."""
    return extract_choice(answer, item.choices) == _reference_index(item)


def score_exact(
    answer: str, item: TaskItem, position: str = "full", language: str | None = None
) -> bool:
    """Case / punctuation / whitespace-insensitive equality; ``position="first"``: first word."""
    if position not in ("full", "first"):
        raise ValueError(f"unknown position {position!r}; valid: ['first', 'full']")
    got = normalize_answer(answer)
    if position == "first":
        got = " ".join(got.split()[:1])
    return got == normalize_answer(item.answer)


def _score_exact_first_word(answer: str, item: TaskItem, language: str | None = None) -> bool:
    return score_exact(answer, item, position="first")


def _loglik_placeholder(
    answer: str, item: TaskItem, language: str | None = None, norm: bool = False
) -> bool:
    # Scored from the model's log-likelihoods inside ``evaluate``: ``answer`` is the chosen
    # option's letter written there, so this only compares indices.
    return extract_choice(answer, item.choices) == _reference_index(item)


SCORERS: dict[str, Callable[..., bool]] = {
    "number": score_number,
    "choice": score_choice,
    "exact": score_exact,
    "exact_first_word": _score_exact_first_word,
    "loglik_choice": _loglik_placeholder,
}
"""Scorer name -> ``f(answer, item, language=None, **options) -> bool``. Options: "number":
``position`` ("last" / "first"), ``number_words`` (bool, opt-in: "sette" counts as 7); "exact":
``position`` ("full" / "first"); "loglik_choice": ``norm`` (bool, lm-eval acc_norm)."""


@functools.cache
def _option_names(scorer: Callable[..., bool]) -> tuple[str, ...]:
    params = inspect.signature(scorer).parameters
    return tuple(p for p in params if p not in ("answer", "item", "language"))


def check_scorer_options(scorer: str, options: dict[str, Any], where: str) -> None:
    """Raise ``ValueError`` naming ``where`` for an unknown scorer or an option it does not take."""
    if scorer not in SCORERS:
        raise ValueError(f"{where}: unknown scorer {scorer!r}; valid: {sorted(SCORERS)}")
    valid = list(_option_names(SCORERS[scorer]))
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ValueError(
            f"{where}: unknown scorer_options {unknown} for scorer {scorer!r}; valid: {valid}"
        )


def score_answer(
    answer: str,
    item: TaskItem,
    scorer: str,
    options: dict[str, Any] | None = None,
    require_regex: str | None = None,
    language_check: Callable[[str, str], bool] | None = None,
    *,
    answer_language: str | None = None,
    undecidable_language: str = "accept",
) -> bool:
    """Full correctness: scorer, then ``require_regex`` (searched), then the item language.

    Args:
        answer: the generated text.
        item: the item; its ``language`` (if any) is read as the answer's language and checked
            with fastText.
        scorer: a name of :data:`SCORERS`; ``options`` are its keyword options.
        require_regex: a regex the answer must contain.
        language_check: ``f(text, language) -> bool`` replacing the fastText check.
        answer_language: the language whose conventions read the answer when the item has no
            ``language`` (the task's ``answer_language``); no fastText check.
        undecidable_language: "accept" or "reject" an answer with too little prose to identify.
    """
    check_scorer_options(scorer, dict(options or {}), "score_answer")
    language = item.language or answer_language
    if not SCORERS[scorer](answer, item, language=language, **dict(options or {})):
        return False
    if require_regex is not None and not re.search(require_regex, answer):
        return False
    if item.language is not None:
        if language_check is None:
            from ._langid import is_language

            return is_language(answer, item.language, undecidable=undecidable_language)
        return language_check(answer, item.language)
    return True
