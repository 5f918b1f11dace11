"""Answer scoring: numbers, multiple choice by generation, exact match; the ``SCORERS`` registry.

Number reading rules (documented in docs/evaluation.md):
- GSM8K ``#### 42`` wins over everything else.
- "1,000" and "1,000,000" are thousands separators; "3,5" (comma not followed by exactly three
  digits) is a decimal comma (Italian / German); "1.000.000" (two or more dot groups of three) is
  a dot thousands separator; a single "1.000" stays the decimal 1.0 (ambiguous: English reading).
- Signs, trailing units and periods ("42 apples.", "-3.5 kg") are ignored; comparison is numeric
  with a 1e-6 relative tolerance.
"""

from __future__ import annotations

import math
import re
import string
from collections.abc import Callable
from typing import Any

from ._task import TaskItem

_NUMBER = re.compile(
    r"(?<![\w.,])[-−]?(?:\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?"
    r"|\d+(?:[.,]\d+)?)(?![\d])"
)
_GSM8K = re.compile(r"####\s*([-−]?[\d.,]+)")


def _to_float(token: str) -> float | None:
    token = token.replace("−", "-").rstrip(".,")
    if re.fullmatch(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?", token):
        token = token.replace(",", "")
    elif re.fullmatch(r"-?\d{1,3}(?:\.\d{3}){2,}(?:,\d+)?", token):
        token = token.replace(".", "").replace(",", ".")
    elif re.fullmatch(r"-?\d+,\d+", token):
        token = token.replace(",", ".")
    try:
        return float(token)
    except ValueError:
        return None


def extract_numbers(text: str) -> list[float]:
    """All numbers in ``text`` in order, read with the rules of this module."""
    out = []
    for match in _NUMBER.finditer(text):
        value = _to_float(match.group(0))
        if value is not None:
            out.append(value)
    return out


def extract_number(text: str, position: str = "last") -> float | None:
    """The answer's number: GSM8K ``####`` marker first, else the first / last number."""
    if position not in ("last", "first"):
        raise ValueError(f"unknown position {position!r}; valid: ['first', 'last']")
    marker = _GSM8K.search(text)
    if marker:
        value = _to_float(marker.group(1))
        if value is not None:
            return value
    numbers = extract_numbers(text)
    if not numbers:
        return None
    return numbers[0] if position == "first" else numbers[-1]


def score_number(answer: str, item: TaskItem, position: str = "last") -> bool:
    """Numeric equality of the extracted number and the reference."""
    got = extract_number(answer, position)
    ref = extract_number(item.answer, "last")
    if got is None or ref is None:
        return False
    return math.isclose(got, ref, rel_tol=1e-6, abs_tol=1e-9)


_LETTER_PATTERNS = [
    r"(?:answer|antwort|risposta|respuesta|réponse|答え|正解)\s*(?:ist|is|è|est|es|:|は|：)?\s*:?\s*"
    r"[(\[]?([A-Z])\b[)\].]?",
    r"(?:^|\s)[(\[]([A-Z])[)\]]",
    r"^\s*([A-Z])(?:[).:]|\s*$|\s)",
    r"(?:option|choice|opzione|antwort|option)\s+([A-Z])\b",
]


def extract_choice(text: str, choices: tuple[str, ...] | None = None) -> int | None:
    """Index of the chosen option: a letter ("B", "(B)", "B)", "Answer: B", "the answer is b")
    or, failing that, the one choice whose text appears in the answer."""
    n = len(choices) if choices else 26
    letters = string.ascii_uppercase[:n]
    for pattern in _LETTER_PATTERNS:
        match = re.search(pattern, text, flags=re.IGNORECASE | re.MULTILINE)
        if match and match.group(1).upper() in letters:
            # a lone lowercase "a" at the start is the English article, not option A
            if pattern.startswith(r"^\s*([A-Z])") and match.group(1) == "a" and len(text) > 2:
                continue
            return letters.index(match.group(1).upper())
    if choices:
        norm = _normalize(text)
        hits = [i for i, c in enumerate(choices) if _normalize(c) and _normalize(c) in norm]
        if len(hits) == 1:
            return hits[0]
        if len(hits) > 1:  # prefer the longest matching choice when one contains the other
            longest = max(hits, key=lambda i: len(choices[i]))
            if all(_normalize(choices[i]) in _normalize(choices[longest]) for i in hits):
                return longest
    return None


def _reference_index(item: TaskItem) -> int:
    ref = item.answer.strip()
    if item.choices is None:
        raise ValueError(f"item {item.id!r}: a choice scorer needs 'choices'")
    if ref.isdigit():
        return int(ref)
    if len(ref) == 1 and ref.upper() in string.ascii_uppercase:
        return string.ascii_uppercase.index(ref.upper())
    for i, c in enumerate(item.choices):
        if _normalize(c) == _normalize(ref):
            return i
    raise ValueError(
        f"item {item.id!r}: answer {ref!r} is neither a letter, an index nor a choice's text"
    )


def score_choice(answer: str, item: TaskItem) -> bool:
    """Multiple choice by generation; reference = letter, 0-based index or the choice's text."""
    return extract_choice(answer, item.choices) == _reference_index(item)


def _normalize(text: str) -> str:
    text = text.casefold().strip()
    text = text.translate(str.maketrans("", "", string.punctuation + "。、！？「」"))
    return " ".join(text.split())


def score_exact(answer: str, item: TaskItem, position: str = "full") -> bool:
    """Case / punctuation / whitespace-insensitive equality; ``position="first"``: first word."""
    if position not in ("full", "first"):
        raise ValueError(f"unknown position {position!r}; valid: ['first', 'full']")
    got = _normalize(answer)
    if position == "first":
        got = " ".join(got.split()[:1])
    return got == _normalize(item.answer)


def _score_exact_first_word(answer: str, item: TaskItem) -> bool:
    return score_exact(answer, item, position="first")


def _loglik_placeholder(answer: str, item: TaskItem, **_: Any) -> bool:
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
"""Scorer name -> ``f(answer, item, **options) -> bool``. "loglik_choice" options: ``norm``
(bool, lm-eval acc_norm: log-likelihood divided by the choice's byte length)."""


def score_answer(
    answer: str,
    item: TaskItem,
    scorer: str,
    options: dict[str, Any] | None = None,
    require_regex: str | None = None,
    language_check: Callable[[str, str], bool] | None = None,
) -> bool:
    """Full correctness: scorer, then ``require_regex`` (searched), then the item language."""
    if scorer not in SCORERS:
        raise ValueError(f"unknown scorer {scorer!r}; valid: {sorted(SCORERS)}")
    options = dict(options or {})
    if scorer == "loglik_choice":
        options.pop("norm", None)
    if not SCORERS[scorer](answer, item, **options):
        return False
    if require_regex is not None and not re.search(require_regex, answer):
        return False
    if item.language is not None:
        if language_check is None:
            from ._langid import is_language

            language_check = is_language
        return language_check(answer, item.language)
    return True
