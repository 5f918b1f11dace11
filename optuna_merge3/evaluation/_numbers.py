"""Reading the numbers of an answer the way its language writes them (pure functions).

Rules N1-N12 of docs/evaluation.md. Values are ``Decimal`` so that "3.50" equals "3.5" exactly
and no float rounding decides a 0/1 judgement.
"""

from __future__ import annotations

import re
from decimal import Decimal

from ._conventions import Convention, convention, is_cjk, normalize_text

_CURRENCY = "$€£¥₹"
_MARKS = ".,\u00a0\u202f\u2009"
_TOKEN = re.compile(
    rf"(?P<sign>[-+])?(?P<currency>[{_CURRENCY}] ?)?(?P<body>[0-9]+(?:[{_MARKS}][0-9]+)*)"
)
_MARK = re.compile(f"([{_MARKS}])")
_SPACE_GROUPED = re.compile(r"(?<![0-9])[0-9]{1,3}(?: [0-9]{3})+(?![0-9])")
_GSM8K = re.compile(rf"####\s*(?=[-+{_CURRENCY}0-9])")
_PLAIN = re.compile(r"-?[0-9]+(?:\.[0-9]+)?")


def _valid_groups(runs: list[str]) -> bool:
    """"1", "000", "000": a 1-3 digit head without a leading zero, then groups of exactly 3."""
    head, groups = runs[0], runs[1:]
    return 1 <= len(head) <= 3 and head[0] != "0" and all(len(g) == 3 for g in groups)


def _decimal_index(runs: list[str], marks: list[str], conv: Convention) -> int | None:
    """Index in ``marks`` of the decimal mark, or None (every mark groups)."""
    last = marks[-1]
    if last not in ".,":
        return None  # spaces never mark decimals
    if marks.count(last) > 1:
        return None  # "1.000.000": a repeated mark groups, in any language
    if any(m in ".," for m in marks[:-1]):
        return len(marks) - 1  # "1.234,5" / "1,234.5": the later mark is the decimal one
    if last == conv.decimal:
        return len(marks) - 1
    if last in conv.groups and _valid_groups(runs):
        return None  # "1.000" in Italian, "1,000" in English
    return len(marks) - 1  # a mark that cannot group here is a decimal ("3.5" in Italian)


def _read_body(body: str, conv: Convention) -> list[Decimal]:
    """The value of "1.234,5" (or the values of a list such as "3,4,5")."""
    parts = _MARK.split(body)
    runs, marks = parts[0::2], parts[1::2]
    if not marks:
        return [Decimal(body)]
    decimal = _decimal_index(runs, marks, conv)
    integer_runs = runs if decimal is None else runs[:-1]
    if len(integer_runs) > 1 and not _valid_groups(integer_runs):
        return [Decimal(r) for r in runs]  # not one number: "3,4,5", "1.2.3"
    text = "".join(integer_runs) + ("" if decimal is None else "." + runs[-1])
    return [Decimal(text)]


def _glued_to_letter(text: str, start: int) -> bool:
    """"CO2", "H2O", "x2": digits right after a (non-CJK) letter are part of a word."""
    return start > 0 and text[start - 1].isalpha() and not is_cjk(text[start - 1])


def _is_operator(text: str, at: int) -> bool:
    """"10-3", "x-1", "(2)-1": a "-" right after an operand subtracts; elsewhere it is a sign."""
    return at > 0 and (text[at - 1] in "0123456789)]" or _glued_to_letter(text, at))


def _digit_numbers(text: str, conv: Convention) -> list[tuple[int, Decimal]]:
    found = []
    for match in _TOKEN.finditer(text):
        start = match.start("currency") if match.group("currency") else match.start("body")
        if not match.group("currency") and _glued_to_letter(text, start):
            continue
        values = _read_body(match.group("body"), conv)
        if match.group("sign") == "-" and not _is_operator(text, match.start()):
            values[0] = -values[0]
        found.extend((match.start("body"), v) for v in values)
    return found


def _word_numbers(text: str, conv: Convention) -> list[tuple[int, Decimal]]:
    words = (conv.number_words or convention("en").number_words).split()
    longest_first = sorted(map(re.escape, words), key=len, reverse=True)  # "dix-sept" > "dix"
    pattern = r"(?<![^\W\d_])(" + "|".join(longest_first) + r")(?![^\W\d_-])"
    return [
        (m.start(), Decimal(words.index(m.group(1).lower())))
        for m in re.finditer(pattern, text, flags=re.IGNORECASE)
    ]


def _prepared(text: str, conv: Convention) -> str:
    text = normalize_text(text)
    if " " in conv.groups:  # "1 000 000" -> narrow no-break spaces, read as one number
        text = _SPACE_GROUPED.sub(lambda m: m.group(0).replace(" ", "\u202f"), text)
    return text


def read_numbers(
    text: str, language: str | None = None, number_words: bool = False
) -> list[Decimal]:
    """Every number of ``text`` in order, read with ``language``'s conventions."""
    conv = convention(language)
    text = _prepared(text, conv)
    found = _digit_numbers(text, conv)
    if number_words:
        found = sorted(found + _word_numbers(text, conv), key=lambda pair: pair[0])
    return [value for _, value in found]


def read_number(
    text: str, language: str | None = None, position: str = "last", number_words: bool = False
) -> Decimal | None:
    """The answer's number: a GSM8K ``#### N`` marker wins, else the first / last number."""
    if position not in ("last", "first"):
        raise ValueError(f"unknown position {position!r}; valid: ['first', 'last']")
    conv = convention(language)
    prepared = _prepared(text, conv)
    marker = _GSM8K.search(prepared)
    if marker:
        after = _digit_numbers(prepared[marker.end() :], conv)
        if after:
            return after[0][1]
    numbers = read_numbers(text, language, number_words)
    if not numbers:
        return None
    return numbers[0] if position == "first" else numbers[-1]


def read_reference(reference: str, language: str | None = None) -> Decimal | None:
    """A reference number: plain "-12.5" as written, anything else read like an answer."""
    reference = reference.strip()
    if _PLAIN.fullmatch(reference):
        return Decimal(reference)
    return read_number(reference, language)
