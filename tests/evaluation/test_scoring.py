"""Table-driven scoring tests: realistic answers in English, Italian, German and Japanese."""

from __future__ import annotations

import pytest

from optuna_merge3.evaluation import SCORERS, TaskItem, extract_choice, extract_number, score_answer

NO_LANG = None

# (answer, reference, position, expected)
NUMBER_CASES = [
    ("#### 42", "42", "last", True),
    ("She has 5 + 3 = 8 apples.\n#### 8", "8", "last", True),
    ("Natalia sold 48/2 = 24 clips in May. 48 + 24 = 72\n#### 72", "72", "last", True),
    ("The answer is 1,000.", "1000", "last", True),  # peers read "000"
    ("The answer is 1,000.", "0", "last", False),
    ("Total: 1,234,567 dollars", "1234567", "last", True),
    ("It costs $18.", "18", "last", True),
    ("The result is -7.", "-7", "last", True),
    ("The temperature dropped to −3 degrees", "-3", "last", True),
    ("That is 3.5 kg of flour.", "3.5", "last", True),
    ("He ran 12 km.", "12", "last", True),
    ("42", "42.0", "last", True),
    ("0.50", "0.5", "last", True),
    ("John had 12 apples and gave away 5, so he has 7 left.", "7", "last", True),
    ("John had 12 apples and gave away 5, so he has 7 left.", "12", "last", False),
    (
        "Sure! Let me think step by step. 3 * 4 = 12. So the answer is 12. Hope this helps!",
        "12",
        "last",
        True,
    ),
    ("I don't know.", "3", "last", False),
    ("Il risultato è 3,5 litri.", "3.5", "last", True),  # Italian decimal comma
    ("Marco ha 5 mele e ne compra 3, quindi ne ha 8.", "8", "last", True),
    ("La risposta è 1.000.000 di euro", "1000000", "last", True),
    ("7 è la risposta", "7", "first", True),
    ("12 è la risposta", "12", "first", True),
    ("7 is the answer", "12", "first", False),
    ("Die Antwort ist 2,5 Meter.", "2.5", "last", True),
    ("Sie hat 4 Äpfel und kauft 6 dazu, also insgesamt 10 Äpfel.", "10", "last", True),
    ("Die Summe beträgt 1.250.000 Euro.", "1250000", "last", True),
    ("答えは 42 です。", "42", "last", True),
    ("りんごは 5 個あります。3 個食べたので、残りは 2 個です。", "2", "last", True),
    ("The answer is 72. #### 72", "72", "last", True),
    ("#### 1,080", "1080", "last", True),
    ("Step 1: 10 - 4 = 6. Step 2: 6 * 2 = 12.", "12", "last", True),
]


@pytest.mark.parametrize(("answer", "reference", "position", "expected"), NUMBER_CASES)
def test_number_scorer(answer: str, reference: str, position: str, expected: bool) -> None:
    item = TaskItem("i", "q", reference)
    assert score_answer(answer, item, "number", {"position": position}) is expected


CHOICES = ("Paris", "London", "Berlin", "Rome")
# (answer, reference, expected)
CHOICE_CASES = [
    ("B", "B", True),
    ("(B)", "B", True),
    ("B)", "B", True),
    ("B.", "B", True),
    ("Answer: B", "B", True),
    ("the answer is b", "B", True),
    ("The correct answer is (C) Berlin.", "C", True),
    ("I think the answer is London.", "B", True),
    ("Berlin", "2", True),
    ("Risposta: D", "D", True),
    ("La risposta corretta è Roma? No, la risposta è A", "A", True),
    ("Die Antwort ist C", "C", True),
    ("答え: A", "A", True),
    ("A", "B", False),
    ("a city in France", "A", False),  # the article "a" is not option A
    ("None of the options", "A", False),
    ("Paris", "Paris", True),
]


@pytest.mark.parametrize(("answer", "reference", "expected"), CHOICE_CASES)
def test_choice_scorer(answer: str, reference: str, expected: bool) -> None:
    item = TaskItem("i", "q", reference, choices=CHOICES)
    assert score_answer(answer, item, "choice") is expected


EXACT_CASES = [
    ("blue", "blue", "full", True),
    ("Blue.", "blue", "full", True),
    ("blue is the answer", "blue", "first", True),
    ("blu è la risposta", "blue", "first", False),
    ("Rome", "rome", "full", True),
]


@pytest.mark.parametrize(("answer", "reference", "position", "expected"), EXACT_CASES)
def test_exact_scorer(answer: str, reference: str, position: str, expected: bool) -> None:
    assert (
        score_answer(answer, TaskItem("i", "q", reference), "exact", {"position": position})
        is expected
    )


def test_require_regex_is_part_of_correctness() -> None:
    item = TaskItem("i", "q", "7")
    regex = r"^\s*\S+ è la risposta\b"
    assert score_answer("7 è la risposta", item, "number", {"position": "first"}, regex)
    assert not score_answer("7 is the answer", item, "number", {"position": "first"}, regex)


def test_language_check_uses_the_given_checker() -> None:
    item = TaskItem("i", "q", "7", language="it")
    calls = []

    def check(text: str, lang: str) -> bool:
        calls.append((text, lang))
        return lang == "it" and "risposta" in text

    assert score_answer("7 è la risposta", item, "number", language_check=check)
    assert not score_answer("7 is the answer", item, "number", language_check=check)
    assert calls[0] == ("7 è la risposta", "it")


def test_unknown_names_list_valid_choices() -> None:
    with pytest.raises(ValueError, match="valid"):
        score_answer("1", TaskItem("i", "q", "1"), "nope")
    with pytest.raises(ValueError, match="valid"):
        extract_number("1", position="middle")
    assert {"number", "choice", "exact", "loglik_choice"} <= set(SCORERS)


def test_extract_helpers() -> None:
    assert extract_number("1,000") == 1000
    assert extract_number("no number here") is None
    assert extract_choice("(B)", CHOICES) == 1
    assert extract_choice("nothing", CHOICES) is None


def test_enough_realistic_cases() -> None:
    assert len(NUMBER_CASES) + len(CHOICE_CASES) + len(EXACT_CASES) >= 40
