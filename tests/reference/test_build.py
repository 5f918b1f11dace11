"""``reference build`` on the shipped tiny world: the population it evaluates, the correctness
cache that makes it resumable, that a small one (K = 8) already helps IRT on math_it, the CLI's
fit report, and its bad inputs. (K from 8 to 128 on both tasks: benchmarks/reference_build.py.)
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest

from optuna_merge3.config import load_config
from optuna_merge3.merging import MergeSpace
from optuna_merge3.pipeline import load_reference_responses
from optuna_merge3.reference import build_reference, irt_fit_report, random_genotypes
from optuna_merge3.runner import StudyRunner

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
from plugin_helpers import run_cli, tiny_raw, write_config  # noqa: E402

STUDIES = Path(__file__).resolve().parents[2] / "studies"
WORLD = STUDIES / "tiny_world"


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> StudyRunner:
    """The tiny world study (merger and live model loaded once), out_dir in a tmp folder."""
    config = load_config(STUDIES / "tiny_world.toml")
    return StudyRunner(dataclasses.replace(config, out_dir=tmp_path_factory.mktemp("b") / "out"))


def test_build_evaluates_the_population_and_resumes_from_the_cache(runner: StudyRunner,
                                                                   tmp_path: Path) -> None:
    config, calls = runner.config, []
    result = build_reference(config, "math_it", models=[WORLD / "models" / "trivia_en"],
                             random_merges=8, seed=0, out=tmp_path / "r.csv.gz", runner=runner,
                             on_model=lambda *a: calls.append(a))
    assert result.models[:4] == ["base", "math_en", "lang_it", "trivia_en"]
    assert [m.split("[")[0] for m in result.models[4:]] == [f"random_merge_00{i}" for i in range(8)]
    assert result.n_evaluated == 12 and [c[3] for c in calls] == [False] * 12
    assert [c[:2] for c in calls] == [(i, 12) for i in range(1, 13)]
    names, ids, values = load_reference_responses(tmp_path / "r.csv.gz")
    assert names == result.models and np.array_equal(values, result.values)
    # Independent check: build_world.py scored the same four models with its own scorer.
    shipped = load_reference_responses(WORLD / "reference" / "math_it_responses.csv.gz")
    assert ids == shipped[1]
    for name in ("base", "math_en", "lang_it", "trivia_en"):
        assert np.array_equal(values[names.index(name)], shipped[2][shipped[0].index(name)]), name
    genotypes = random_genotypes(MergeSpace.from_config(config.merge).distributions(), 8, 0)
    assert all(0.0 <= v <= 1.5 for g in genotypes for v in g.values())
    assert len({tuple(row) for row in values[4:]}) == 8  # eight different merges
    # 12 models are already a usable population for the study's estimator on its target task.
    report = irt_fit_report(values, config.irt.n_dims, endpoints=[1, 2], n_items=20)
    assert report.helps, report.lines()
    assert report.logloss_irt < 0.7 * report.logloss_item_mean
    assert report.mae_mid["gmpirt"] < report.mae_mid["naive"]
    calls.clear()
    again = build_reference(config, "math_it", models=[WORLD / "models" / "trivia_en"],
                            random_merges=8, seed=0, out=tmp_path / "r.csv.gz", overwrite=True,
                            runner=runner, on_model=lambda *a: calls.append(a))
    assert again.n_evaluated == 0 and [c[3] for c in calls] == [True] * 12  # resumed
    assert again.models == result.models and np.array_equal(again.values, result.values)


def test_cli_build_writes_the_task_reference_and_reports_the_fit(tmp_path: Path) -> None:
    raw = tiny_raw(tmp_path / "out")
    raw["tasks"][1].pop("reference")  # a task with no population yet
    config = write_config(tmp_path / "s.toml", raw)
    code, out, err = run_cli("reference", "build", config, "--task", "qa_en",
                             "--random-merges", "4", "--seed", "1")
    assert code == 0, err[-2000:]
    built = tmp_path / "out" / "reference" / "qa_en_responses.csv.gz"
    assert load_reference_responses(built)[2].shape == (7, 120)
    assert f'add to task \'qa_en\': reference = "{built}"' in out
    assert "7 models x 120 items (7 evaluated, 0 from the cache)" in out
    assert "IRT fit, 5-fold over 7 models x 120 items, d=2:" in out
    assert "mean abs. error: naive" in out and "gmpirt" in out


@pytest.mark.parametrize("kw, message", [
    ({"task_name": "gsm8k"}, r"unknown task 'gsm8k'; the config has \['math_it', 'qa_en'\]"),
    ({"random_merges": -1}, r"--random-merges must be >= 0, got -1"),
    ({"models": ["nowhere"]}, r"nowhere: not a Hugging Face model folder \(no config\.json\)"),
    ({"models": [WORLD / "models" / "math_en"]}, r"two population members are named 'math_en'"),
    ({"out": None}, r"math_it_responses\.csv\.gz exists; pass --out elsewhere, or --overwrite"),
])
def test_build_bad_input(kw: dict, message: str, runner: StudyRunner, tmp_path: Path) -> None:
    kw = {"task_name": "math_it", "out": tmp_path / "r.csv.gz", **kw}  # out None: the shipped
    before = (WORLD / "reference" / "math_it_responses.csv.gz").read_bytes()
    with pytest.raises(ValueError, match=message):
        build_reference(runner.config, runner=runner, **kw)
    assert (WORLD / "reference" / "math_it_responses.csv.gz").read_bytes() == before


@pytest.mark.parametrize("n_mid, warned", [(2, True), (6, False)])
def test_fit_report_says_why_when_most_models_sit_at_0_or_100(n_mid: int, warned: bool) -> None:
    from optuna_merge3.reference import FitReport

    report = FitReport(12, 120, 2, 5, 0.1, 0.4, 20,
                       {"naive": 0.01, "pirt": 0.02, "mpirt": 0.02, "gmpirt": 0.015}, "gmpirt",
                       {"naive": 0.06, "pirt": 0.05, "mpirt": 0.05, "gmpirt": 0.05}, n_mid, 10)
    text = "\n".join(report.lines())
    assert "does NOT help gmpirt" in text
    assert ("held-out models score below 5% or above 95%" in text) is warned
    if warned:
        assert "8 of 10 held-out models" in text
    helped = FitReport(12, 120, 2, 5, 0.1, 0.4, 20, {"naive": 0.03, "gmpirt": 0.02}, "gmpirt",
                       None, 0, 10)
    assert "below 5%" not in "\n".join(helped.lines())
