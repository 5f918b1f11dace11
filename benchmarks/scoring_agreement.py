"""Agreement with a careful human grader: this project vs Mergenetic-style vs lm-eval's GSM8K filters.

The table is tests/evaluation/scoring_cases.py (442 cases, 10 languages, each tagged with a rule of
docs/evaluation.md). Scorers, side by side on every case:

- **this project**: ``score_answer`` (numbers and choices read in the case's language) and
  ``is_language`` (fastText after stripping, undecidable -> the policy, "accept" and "reject").
- **before**: this project's scorer before the multilingual rules (commit ``BEFORE``, loaded
  from git), to measure what changed.
- **Mergenetic-style**: numbers: the last ``\\d+`` compared as a string with the reference
  (``FGMathEvaluator._extract_answer``); choices: the first standalone capital letter
  (``\\b[A-Z]\\b``); language: fastText on the raw text (newlines as spaces), "UNK" (accepted)
  below probability 0.3, re-identified without the first word below 0.5
  (``LanguageDetector._get_language``).
- **lm-eval GSM8K**: the installed lm_eval's own ``RegexFilter`` with the two filters of its
  ``tasks/gsm8k/gsm8k.yaml`` (strict-match, flexible-extract; read from the file), then its
  ``exact_match_hf_evaluate`` with the YAML's ``regexes_to_ignore`` / ``ignore_case``. Numbers only.

Then the tiny world's shipped models answer every item of every task and the answers are rescored:
the judgements must equal the stored reference matrices.

Usage: python benchmarks/scoring_agreement.py > benchmarks/results/scoring_agreement.md
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "evaluation"))

from scoring_cases import CASES, CHOICES, Case, expected, judge  # noqa: E402

from optuna_merge3.evaluation import detect_language  # noqa: E402
from optuna_merge3.evaluation._langid import _load, default_model_path  # noqa: E402

BEFORE = "390aeca1e2e65e161c7276d159bb20b422d62add"


def before_scorer() -> object | None:
    """``score_answer`` of commit BEFORE (its _scoring / _langid modules as siblings of today's
    _task), or None without git."""
    modules = {}
    for name in ("_langid", "_scoring"):
        try:
            source = subprocess.run(
                ["git", "-C", str(ROOT), "show", f"{BEFORE}:optuna_merge3/evaluation/{name}.py"],
                capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return None
        full = f"optuna_merge3.evaluation.{name}_before"
        source = source.replace("from ._langid import", "from ._langid_before import")
        spec = importlib.util.spec_from_loader(full, loader=None)
        module = importlib.util.module_from_spec(spec)
        module.__package__ = "optuna_merge3.evaluation"
        sys.modules[full] = module
        exec(compile(source, f"{BEFORE[:7]}:{name}.py", "exec"), module.__dict__)
        modules[name] = module
    return modules


def before_judge(modules: dict, case: Case) -> bool:
    from optuna_merge3.evaluation import TaskItem

    if case.kind == "language":
        return modules["_langid"].is_language(case.answer, case.lang)
    choices = CHOICES[case.lang] if case.kind == "choice" else None
    item = TaskItem("case", "q", case.reference, choices=choices)
    return modules["_scoring"].score_answer(case.answer, item, case.kind, case.options or None)


def mergenetic_number(case: Case) -> bool:
    found = re.findall(r"\d+", case.answer)
    return (found[-1] if found else "None") == case.reference


def mergenetic_choice(case: Case) -> bool:
    found = re.search(r"\b[A-Z]\b", case.answer)
    return bool(found) and found.group(0) == case.reference


def mergenetic_language(case: Case) -> bool:
    model = _load(str(default_model_path()))
    text = case.answer.replace("\n", " ")
    labels, probs = model.predict(text)
    if probs[0] < 0.3:
        return True  # "UNK" is accepted
    if probs[0] < 0.5:
        labels, _ = model.predict(" ".join(text.split()[1:]))
    return labels[0] == f"__label__{case.lang}"


def lm_eval_scorers() -> dict[str, object]:
    """The GSM8K filters and metric of the installed lm_eval, configured from its own YAML."""
    import lm_eval
    import yaml
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters.extraction import RegexFilter

    path = Path(lm_eval.__file__).parent / "tasks" / "gsm8k" / "gsm8k.yaml"
    spec = yaml.safe_load(path.read_text("utf-8"))
    metric = {k: v for k, v in spec["metric_list"][0].items() if k in
              ("regexes_to_ignore", "ignore_case", "ignore_punctuation")}
    scorers = {}
    for entry in spec["filter_list"]:
        regex = entry["filter"][0]
        flt = RegexFilter(regex["regex_pattern"], regex.get("group_select", 0))

        def score(case: Case, flt: RegexFilter = flt) -> bool:
            prediction = flt.apply([[case.answer]], [{}])[0][0]  # then take_first
            return exact_match_hf_evaluate([prediction], [case.reference], **metric)[
                "exact_match"] == 1.0

        scorers[f"lm-eval {entry['name']}"] = score
    return scorers


def _pct(values: list[bool]) -> str:
    return f"{100 * np.mean(values):.0f}% ({sum(values)}/{len(values)})" if values else "—"


def agreement_tables() -> tuple[list[str], list[tuple[Case, str, bool]]]:
    lm_eval = lm_eval_scorers()
    before = before_scorer()
    peers = {"Mergenetic-style": None, **lm_eval}
    per_rule: dict[str, dict[str, list[bool]]] = defaultdict(lambda: defaultdict(list))
    ours_wrong = []
    for case in CASES:
        row = per_rule[case.rule]
        if before is not None and not case.options.get("number_words"):
            try:
                row["before"].append(before_judge(before, case) == expected(case))
            except TypeError:  # an option the old scorer did not have
                pass
        if case.kind == "language":
            for policy in ("accept", "reject"):
                ok = judge(case, policy) == expected(case, policy)
                row[f"this project ({policy})"].append(ok)
                if not ok:
                    ours_wrong.append((case, policy, judge(case, policy)))
            row["Mergenetic-style"].append(mergenetic_language(case) == expected(case))
            if case.expected is not None:  # raw vs stripped fastText label (decidable cases)
                want = case.expected
                row["fastText raw"].append((detect_language(case.answer, strip=False)[0]
                                            == case.lang) == want)
                row["fastText stripped"].append((detect_language(case.answer)[0]
                                                 == case.lang) == want)
            continue
        got = judge(case)
        row["this project"].append(got == case.expected)
        if got != case.expected:
            ours_wrong.append((case, "", got))
        if case.kind == "number":
            row["Mergenetic-style"].append(mergenetic_number(case) == case.expected)
            for name, score in lm_eval.items():
                row[name].append(score(case) == case.expected)
        else:
            row["Mergenetic-style"].append(mergenetic_choice(case) == case.expected)

    lines = []
    for kind, columns in (
        ("number", ["this project", "before", *peers]),
        ("choice", ["this project", "before", "Mergenetic-style"]),
        ("language", ["this project (accept)", "this project (reject)", "before",
                      "Mergenetic-style",
                      "fastText raw", "fastText stripped"]),
    ):
        rules = sorted({c.rule for c in CASES if c.kind == kind}, key=lambda r: int(r[1:]))
        langs = lambda r: ", ".join(sorted({c.lang for c in CASES if c.rule == r}))  # noqa: E731
        lines += [f"\n### {kind} cases: agreement with the grader\n",
                  "| rule | cases | languages | " + " | ".join(columns) + " |",
                  "|---|---|---|" + "---|" * len(columns)]
        total: dict[str, list[bool]] = defaultdict(list)
        for rule in rules:
            n = sum(1 for c in CASES if c.rule == rule)
            cells = [_pct(per_rule[rule][col]) for col in columns]
            for col in columns:
                total[col] += per_rule[rule][col]
            lines.append(f"| {rule} | {n} | {langs(rule)} | " + " | ".join(cells) + " |")
        n_kind = sum(1 for c in CASES if c.kind == kind)
        lines.append(f"| **all** | {n_kind} | | "
                     + " | ".join(f"**{_pct(total[c])}**" for c in columns) + " |")
    return lines, ours_wrong


def tiny_world_rescoring() -> list[str]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from optuna_merge3 import evaluation

    torch.set_num_threads(1)
    world = ROOT / "studies" / "tiny_world"
    manifest = json.loads((world / "world.json").read_text("utf-8"))
    tokenizer = AutoTokenizer.from_pretrained(world / "models" / "base")
    lines = ["| model | task | items | stored accuracy | rescored accuracy | changed |",
             "|---|---|---|---|---|---|"]
    changed_total = judged = 0
    for model_name in manifest["models"]:
        model = AutoModelForCausalLM.from_pretrained(world / "models" / model_name).eval()
        for name, meta in manifest["tasks"].items():
            with gzip.open(world / meta["reference"], "rt", encoding="utf-8") as fh:
                rows = {r[0]: np.array([int(v) for v in r[1:]], bool) for r in list(csv.reader(fh))[1:]}
            task = evaluation.load_task(world / meta["path"])
            got = evaluation.evaluate(model, tokenizer, task, batch_size=256).correct
            stored = rows[model_name]
            changed = int((got != stored).sum())
            changed_total += changed
            judged += len(got)
            lines.append(f"| {model_name} | {name} | {len(got)} | {100 * stored.mean():.1f}% | "
                         f"{100 * got.mean():.1f}% | {changed} |")
    lines.append(f"| **all** | | {judged} | | | **{changed_total}** |")
    return lines


def main() -> None:
    import lm_eval

    tables, wrong = agreement_tables()
    n_langs = len({c.lang for c in CASES})
    print("# Scoring agreement with a careful human grader\n")
    print(f"`python benchmarks/scoring_agreement.py` (lm_eval {lm_eval.__version__}); "
          f"{len(CASES)} cases in {n_langs} languages from `tests/evaluation/scoring_cases.py`, "
          "each tagged with its rule of docs/evaluation.md (N numbers, C choices, L language). "
          "A cell is the share of cases where the scorer's 0/1 judgement equals the grader's. "
          "lm-eval has no generation-based letter or language rule in its GSM8K task, so it "
          "appears only for numbers. Language cases: `accept` / `reject` are this project's two "
          "undecidable-text policies (an undecidable case counts as agreeing when the policy's "
          "verdict is that policy); `fastText raw` / `fastText stripped` is whether the top "
          "label is the required language, on the decidable cases only, before / after "
          "`strip_for_langid`.")
    print("\n".join(tables))
    print("\n## Every remaining disagreement of this project\n")
    print("| rule | lang | policy | answer | reference | this project | grader | why |")
    print("|---|---|---|---|---|---|---|---|")
    for case, policy, got in wrong:
        answer = case.answer.replace("\n", "\\n").replace("|", "\\|")
        print(f"| {case.rule} | {case.lang} | {policy or '—'} | `{answer}` | {case.reference} | "
              f"{int(got)} | {int(expected(case, policy or 'accept'))} | "
              f"{case.note or 'UNEXPLAINED'} |")
    print("\n## Tiny world: every shipped model's answers rescored\n")
    print("\n".join(tiny_world_rescoring()))


if __name__ == "__main__":
    main()
