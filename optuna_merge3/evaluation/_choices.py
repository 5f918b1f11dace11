"""Which option a generated answer chooses (pure functions; rules C1-C9 of docs/evaluation.md).

Order: an answer statement ("the answer is C", "la risposta è B", "答えはB", or an answer that
opens with its letter) wins, the last one when there are several; otherwise the last explicit
mention ("(C)", "C)", "option C", a bare capital letter); otherwise the one choice whose text
appears in the answer.
"""

from __future__ import annotations

import re
import string

from ._conventions import CONVENTIONS, normalize_text

_LATIN = "A-Za-zÀ-ɏ"
# a letter is standalone when no Latin letter, digit or apostrophe touches it, and it is not an
# abbreviation's initial ("D.C.", "d. h.")
_ALONE_BEFORE = rf"(?<![{_LATIN}0-9'’.])"
_ALONE_AFTER = rf"(?![{_LATIN}0-9'’]|\.\s?[{_LATIN}]\.)"
_WRAP_OPEN = r"(?:\*\*|__|[(\[])*"
_WRAP_CLOSE = r"(?:\*\*|__|[)\]])*"
# "A", "E", "I", "O", "U", "Y" are also words (article, conjunction, pronoun) in some language
_WORD_LETTERS = "AEIOUY"
_FOLLOWED_BY_WORD = re.compile(r"\s+([^\W\d_]+)")

_STATEMENT = re.compile(
    "(?:"
    + "|".join(s for c in CONVENTIONS.values() for s in c.statements)
    + rf")\s*[:=]?\s*{_WRAP_OPEN}\s*(?P<letter>[A-Za-z]){_ALONE_AFTER}",
    flags=re.IGNORECASE,
)
_OPENING = re.compile(
    rf"^\s*(?P<open>{_WRAP_OPEN})(?P<letter>[A-Za-z]){_ALONE_AFTER}(?P<close>{_WRAP_CLOSE})"
    r"(?P<end>[.):]|\s*$|\s*\n|\s+[-–—]\s)?"
)
_OPTION = re.compile(
    r"(?<![^\W\d_])(?:"
    + "|".join(sorted({w for c in CONVENTIONS.values() for w in c.option_words}))
    + rf")\s*{_WRAP_OPEN}(?P<letter>[A-Za-z]){_ALONE_AFTER}",
    flags=re.IGNORECASE,
)
_WRAPPED = re.compile(r"[(\[](?P<letter>[A-Za-z])[)\]]")
_CLOSED = re.compile(rf"{_ALONE_BEFORE}(?P<letter>[A-Z])\)")
_BARE = re.compile(rf"{_ALONE_BEFORE}(?P<letter>[A-Z]){_ALONE_AFTER}")
_COPULAS = {w for c in CONVENTIONS.values() for w in c.copulas}


def _is_word(text: str, end: int, letter: str) -> bool:
    """"A plant", "I think", "è a Roma": a word-letter followed by a word is that word, not the
    option, unless it is a capital followed by a capitalised word or a copula ("A is correct")."""
    if letter.upper() not in _WORD_LETTERS:
        return False
    follow = _FOLLOWED_BY_WORD.match(text, end)
    if not follow:
        return False
    word = follow.group(1)
    return letter.islower() or (word[0].islower() and word not in _COPULAS)


def _stated_letter(text: str) -> str | None:
    """The letter of the last answer statement, or of an answer that opens with its letter."""
    stated = None
    opening = _OPENING.match(text)
    if opening:  # "(b) ...", "**B** ...", "B. ...", "B: ...", "B - ...", or "B" alone
        wrapped = opening.group("open") and opening.group("close")
        if wrapped or (opening.group("end") is not None and opening.group("letter").isupper()):
            stated = opening.group("letter")
    for match in _STATEMENT.finditer(text):
        letter = match.group("letter")
        if letter.islower() and _is_word(text, match.end(), letter):
            continue  # "the answer is a metal spoon"
        stated = letter
    return stated


def _mentioned_letter(text: str, letters: str) -> str | None:
    """The last explicit mention: "(C)", "C)", "option C", or a bare capital of the choices."""
    mentions: list[tuple[int, str]] = []
    for pattern in (_WRAPPED, _CLOSED, _OPTION):
        mentions += [(m.start("letter"), m.group("letter")) for m in pattern.finditer(text)]
    for match in _BARE.finditer(text):
        letter = match.group("letter")
        # a bare capital outside the choices ("Figure X", "I") is not a mention at all
        if letter in letters and not _is_word(text, match.end(), letter):
            mentions.append((match.start(), letter))
    return max(mentions)[1] if mentions else None


def normalize_answer(text: str) -> str:
    """Casefolded, without punctuation, single-spaced (exact match and choice-text match)."""
    text = normalize_text(text).casefold().strip()
    text = text.translate(str.maketrans("", "", string.punctuation + "。、！？「」«»“”‘’"))
    return " ".join(text.split())


def _choice_by_text(text: str, choices: tuple[str, ...]) -> int | None:
    norm = normalize_answer(text)
    hits = [i for i, c in enumerate(choices) if normalize_answer(c) and normalize_answer(c) in norm]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:  # the longest when one choice contains the others ("Rome" / "Rome, NY")
        longest = max(hits, key=lambda i: len(choices[i]))
        if all(normalize_answer(choices[i]) in normalize_answer(choices[longest]) for i in hits):
            return longest
    return None


def extract_choice(text: str, choices: tuple[str, ...] | None = None) -> int | None:
    """Index of the chosen option, or None (no choice found, or a letter outside the choices).

    Args:
        text: the generated answer.
        choices: the options' texts (``None``: letters A-Z, no text matching).
    """
    letters = string.ascii_uppercase[: len(choices) if choices else 26]
    text = normalize_text(text)
    letter = _stated_letter(text) or _mentioned_letter(text, letters)
    if letter is not None:
        letter = letter.upper()
        return letters.index(letter) if letter in letters else None
    return _choice_by_text(text, choices) if choices else None
