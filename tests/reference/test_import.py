"""Importers of public per-item formats: each fixture gives the expected matrix, each bad file a
one-line error naming the file and the problem.

The fixtures under ``fixtures/`` follow the public formats: the lm-eval ones are real lm-eval
0.4.13 output (``fixtures/lm_eval/make_samples.py``), the others are written by
``fixtures/make_fixtures.py`` with the columns of the public files (see its docstring).
"""

from __future__ import annotations

import gzip
import json
import math
import pickle
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from optuna_merge3 import evaluation
from optuna_merge3.cli import main
from optuna_merge3.pipeline import load_reference_responses
from optuna_merge3.reference import import_responses, write_responses

FIX = Path(__file__).resolve().parent / "fixtures"
LM = FIX / "lm_eval"
MATH_EN = LM / "tiny-world__math_en" / "samples_tiny_math_en_2026-12-02T07-11-20.737481.jsonl"
LANG_IT = LM / "tiny-world__lang_it" / "samples_tiny_math_en_2026-12-02T07-11-48.859479.jsonl"
DETAILS = sorted((FIX / "leaderboard_details").rglob("*.parquet"))
MB = FIX / "metabench"
SHARED = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "leaderboard" / "metabench"
NAN = math.nan


@pytest.fixture(autouse=True)
def _errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every ValueError an importer raises here must be one line (what the CLI prints)."""
    import optuna_merge3.reference._import as imp

    real = imp.import_responses

    def checked(*args, **kwargs):
        try:
            return real(*args, **kwargs)
        except ValueError as exc:
            assert "\n" not in str(exc), str(exc)
            raise

    monkeypatch.setattr(sys.modules[__name__], "import_responses", checked)


def _rows(matrix) -> dict[str, list[float]]:
    return {m: matrix.values[k].tolist() for k, m in enumerate(matrix.models)}


def _same(a: dict[str, list[float]], b: dict[str, list[float]]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k], equal_nan=True) for k in a)


# -- lm-eval --log_samples ---------------------------------------------------------------------
def test_lm_eval_samples_give_lm_evals_own_per_item_metric() -> None:
    m = import_responses("lm-eval-samples", [MATH_EN, LANG_IT], filter_name="first-number")
    assert m.models == ["tiny-world/math_en", "tiny-world/lang_it"]  # results_<date>.json
    assert m.item_ids == [str(k) for k in range(8)]
    assert _same(_rows(m), {"tiny-world/math_en": [1.0] * 8,
                            "tiny-world/lang_it": [0, 0, 0, 0, 0, 1, 0, 0]})
    for path, row in zip((MATH_EN, LANG_IT), m.values, strict=True):  # lm-eval's aggregate
        results = json.loads(next(path.parent.glob("results_*.json")).read_text())
        assert row.mean() == results["results"]["tiny_math_en"]["exact_match,first-number"]
    whole = import_responses("lm-eval-samples", [LANG_IT], filter_name="whole")
    assert whole.values.tolist() == [[0.0] * 8]
    same = import_responses("lm-eval-samples", [LANG_IT], metric="exact_match,first-number")
    assert same.values.tolist() == m.values[1:].tolist()  # lm-eval's "<metric>,<filter>" key


def test_lm_eval_item_ids_from_the_doc_and_task_order(tmp_path: Path) -> None:
    lines = (Path("studies/tiny_world/tasks/math_en.jsonl")).read_text().splitlines()[:8]
    (tmp_path / "t.jsonl").write_text("\n".join(reversed(lines)) + "\n")
    task = evaluation.load_task(tmp_path / "t.jsonl")
    m = import_responses("lm-eval-samples", [f"mine={LANG_IT}"], filter_name="first-number",
                         item_key="doc.id", task=task)
    assert m.models == ["mine"]
    assert m.item_ids == [f"math_en-{k:04d}" for k in range(7, -1, -1)]
    assert m.values.tolist() == [[0, 0, 1, 0, 0, 0, 0, 0]]


def _copy(src: Path, folder: Path, name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for f in src.parent.iterdir():
        shutil.copy(f, folder / f.name)
    path = folder / src.name
    return path.rename(folder / name) if name else path


@pytest.mark.parametrize("case", ["several filters", "unknown metric", "same model twice",
                                  "another task", "not JSON", "not samples", "task items",
                                  "unknown doc field"])
def test_lm_eval_bad_input_is_one_line_naming_the_file(case: str, tmp_path: Path) -> None:
    kw: dict = {"filter_name": "first-number"}
    files: list = [MATH_EN]
    if case == "several filters":
        kw, expected = {}, rf"{MATH_EN}: samples of several filters \['first-number', 'whole'\]"
    elif case == "unknown metric":
        kw["metric"], expected = "acc", rf"{MATH_EN}: no metric 'acc'; it has \['exact_match'\]"
    elif case == "same model twice":  # a second run of the same model (another folder)
        files.append(_copy(MATH_EN, tmp_path / "rerun"))
        expected = (r"rerun/samples_tiny_math_en_.*\.jsonl: model 'tiny-world/math_en' appears "
                    r"twice: .*tiny-world__math_en/samples_.* also answers item '0'")
    elif case == "another task":
        other = _copy(LANG_IT, tmp_path / "x", "samples_gsm8k_2026-12-02T07-11-48.859479.jsonl")
        files.append(other)
        expected = rf"{other}: task 'gsm8k', but {MATH_EN} holds task 'tiny_math_en'"
    elif case == "not JSON":
        bad = tmp_path / "samples_t_1.jsonl"
        bad.write_text(MATH_EN.read_text().splitlines()[0] + "\n{\"doc_id\": 1,\n")
        files, expected = [bad], rf"{bad}:2: invalid JSON"
    elif case == "not samples":
        bad = tmp_path / "samples_t_1.jsonl"
        bad.write_text('{"id": 1, "acc": 1}\n')
        files, expected = [bad], rf"{bad}:1: not an lm-eval --log_samples line \(no 'doc_id'\)"
    elif case == "task items":
        kw["task"] = evaluation.load_task("studies/tiny_world/tasks/math_en.jsonl")
        expected = (rf"{MATH_EN}: 8 item id\(s\) are not items of task 'math_en', e\.g\. "
                    r"\['0', '1', '2'\] \(its ids look like \['math_en-0000'")
    else:
        kw["item_key"], expected = "doc.question", rf"{MATH_EN}:1: no item id 'doc\.question'"
    with pytest.raises(ValueError, match=expected) as info:
        import_responses("lm-eval-samples", files, **kw)
    assert "\n" not in str(info.value)


# -- Open LLM Leaderboard details --------------------------------------------------------------
def test_leaderboard_details_both_layouts() -> None:
    m = import_responses("leaderboard-details", DETAILS, metric="acc_norm")
    assert m.models == ["tiny-org/model-a", "tiny-org/model-b"]  # from details_<org>__<model>
    assert m.item_ids == ["1", "2", "3", "4"]  # 1-based rows, as metabench numbers them
    assert _same(_rows(m), {"tiny-org/model-a": [1, 1, 0, 1], "tiny-org/model-b": [0, 1, 1, 0]})
    acc = import_responses("leaderboard-details", DETAILS, metric="acc")
    assert acc.values.tolist() == [[1, 0, 1, 1], [0, 0, 1, 0]]


def test_leaderboard_details_bad_files(tmp_path: Path) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    with pytest.raises(ValueError, match=r"several 0/1 per-item metrics \['acc', 'acc_norm'\]; "
                                         "choose one with --metric"):
        import_responses("leaderboard-details", DETAILS[:1])
    rows = pq.read_table(DETAILS[0]).to_pylist()
    for row in rows:
        row["metrics"] = {"mc1": 1.0, "mc2": 0.37}
    odd = tmp_path / "details_t_1.json"
    odd.write_text(json.dumps(rows))
    assert import_responses("leaderboard-details", [odd]).values.tolist() == [[1.0] * 4]  # mc1
    with pytest.raises(ValueError, match=rf"{odd}: row 1: mc2 = 0\.37 is not 0 or 1"):
        import_responses("leaderboard-details", [odd], metric="mc2")
    broken = tmp_path / "details_t_1.parquet"
    broken.write_bytes(b"PAR1 not really")
    with pytest.raises(ValueError, match=rf"{broken}: cannot read it as parquet"):
        import_responses("leaderboard-details", [broken])
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps([{"example": "q", "full_prompt": "p"}]))
    with pytest.raises(ValueError, match=rf"{bare}: no per-item metrics"):
        import_responses("leaderboard-details", [bare])
    with pytest.raises(ValueError, match=rf"{MATH_EN}: an lm-eval samples file"):
        import_responses("leaderboard-details", [MATH_EN.with_suffix(".jsonl")])


# -- metabench ---------------------------------------------------------------------------------
def test_metabench_v1_and_v2_join_on_the_model_with_na() -> None:
    m = import_responses("metabench", [MB / "arc_v1_responses_train.csv.gz",
                                       MB / "arc_v2_responses_train.csv.gz"])
    assert m.item_ids == ["660", "1067", "1028", "12", "913"]
    assert _same(_rows(m), {"org/alpha": [1, 0, NAN, 1, 1], "org/beta": [0, 0, 1, NAN, 0],
                            "org/gamma": [1, 1, 1, NAN, NAN]})
    assert "3 models x 5 items, 73.3% of the cells observed" in m.summary()
    long = import_responses("metabench", [MB / "arc.csv"])
    assert _same(_rows(long), {"org/alpha": [1, 0, 1], "org/delta": [0, 1, 0]})


def test_metabench_bad_files(tmp_path: Path) -> None:
    v1 = MB / "arc_v1_responses_train.csv.gz"
    with pytest.raises(ValueError, match=rf"{v1}: model 'org/alpha' appears twice in the input"):
        import_responses("metabench", [v1, v1])
    text = gzip.decompress(v1.read_bytes()).decode()
    bad = tmp_path / "bad.csv"
    bad.write_text(text.replace('"org/beta",0,0,1', '"org/beta",0,2,1'))
    with pytest.raises(ValueError, match=rf"{bad}: line 3, item '1067': '2' is not 0, 1 or NA"):
        import_responses("metabench", [bad])
    bad.write_text("name,a,b\nx,1,0\n")
    with pytest.raises(ValueError, match=rf"{bad}: not a metabench CSV: expected a header "):
        import_responses("metabench", [bad])
    bad.write_text(text + '"org/beta",1,1,1\n')
    with pytest.raises(ValueError, match=rf"{bad}: line 5: model 'org/beta' appears twice"):
        import_responses("metabench", [bad])


def test_the_loader_reads_metabench_na_cells_and_the_writer_round_trips(tmp_path: Path) -> None:
    models, items, values = load_reference_responses(MB / "arc_v1_responses_train.csv.gz")
    assert models == ["org/alpha", "org/beta", "org/gamma"] and items == ["660", "1067", "1028"]
    assert np.isnan(values[0, 2]) and np.nansum(values) == 5
    out = write_responses(tmp_path / "r.csv.gz", models, items, values)
    again = load_reference_responses(out)
    assert again[:2] == (models, items) and np.array_equal(again[2], values, equal_nan=True)
    assert out.read_bytes() == write_responses(tmp_path / "s.csv.gz", models, items,
                                               values).read_bytes()  # deterministic bytes


# -- tinyBenchmarks-style matrix ---------------------------------------------------------------
def test_tinybenchmarks_pickle_and_npz() -> None:
    m = import_responses("matrix", [FIX / "tinybenchmarks" / "lb.pickle"],
                         scenario="harness_arc_challenge_25")
    assert m.models == ["tiny-org/model-a", "tiny-org/model-b", "tiny-org/model-c"]
    assert m.item_ids == ["1", "2", "3", "4"]
    assert m.values.tolist() == [[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 1, 0]]
    npz = import_responses("matrix", [FIX / "tinybenchmarks" / "arc.npz"])
    assert npz.item_ids == ["q1", "q2", "q3", "q4"] and np.array_equal(npz.values, m.values)


class _Evil:
    def __reduce__(self):  # what a malicious pickle does
        return (print, ("pwned",))


def test_matrix_bad_files(tmp_path: Path) -> None:
    lb = FIX / "tinybenchmarks" / "lb.pickle"
    with pytest.raises(ValueError, match=rf"{lb}: choose a scenario with --scenario; it has "
                                         r"\['harness_arc_challenge_25', 'harness_gsm8k_5'\]"):
        import_responses("matrix", [lb])
    evil = tmp_path / "lb.pickle"
    evil.write_bytes(pickle.dumps({"models": [_Evil()], "data": {}}))
    with pytest.raises(ValueError, match=rf"{evil}: cannot read it as a tinyBenchmarks pickle: "
                                         "refusing to load builtins.print"):
        import_responses("matrix", [evil])
    soft = tmp_path / "mc2.npz"
    np.savez(soft, correctness=np.array([[0.37, 1.0]]), models=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=rf"{soft}: correctness\[0, 0\] = 0\.37 is not 0 or 1"):
        import_responses("matrix", [soft])
    np.savez(soft, correctness=np.ones((2, 3)), models=np.array(["a", "b"]))
    with pytest.raises(ValueError, match=r"must be \(items, models\) = \(\?, 2\), got shape"):
        import_responses("matrix", [soft])


# -- CLI and the real metabench data -----------------------------------------------------------
def test_cli_import_prints_the_summary_and_fails_in_one_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "arc.csv.gz"
    code = main(["reference", "import", "--format", "metabench", str(MB / "arc.csv"),
                 "--out", str(out)])
    printed = capsys.readouterr()
    assert code == 0 and "2 models x 3 items, 100.0% of the cells observed" in printed.out
    assert load_reference_responses(out)[0] == ["org/alpha", "org/delta"]
    code = main(["reference", "import", "--format", "lm-eval-samples", str(MATH_EN),
                 "--out", str(tmp_path / "x.csv")])
    err = capsys.readouterr().err
    assert code == 2 and not (tmp_path / "x.csv").exists()
    assert err.strip().count("\n") == 0 and "samples of several filters" in err
    code = main(["reference", "import", "--format", "metabench", str(MB / "arc.csv"), "--task",
                 "studies/tiny_world/tasks/math_en.jsonl", "--out", str(tmp_path / "y.csv")])
    err = capsys.readouterr().err
    assert code == 2 and "3 item id(s) are not items of task 'math_en'" in err


def test_cli_import_fit_report(tmp_path: Path, capsys) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real leaderboard data not found at {SHARED}")
    lines = gzip.decompress((SHARED / "arc_v1_responses_train.csv.gz").read_bytes()).decode()
    (tmp_path / "arc300.csv").write_text("\n".join(lines.splitlines()[:301]) + "\n")
    assert main(["reference", "import", "--format", "metabench", str(tmp_path / "arc300.csv"),
                 "--out", str(tmp_path / "t.csv.gz"), "--fit-report", "2"]) == 0
    out = capsys.readouterr().out
    assert "IRT fit, 5-fold over 300 models x 100 items, d=2:" in out
    assert "-> IRT helps (pirt beats the naive mean)" in out  # 300 real models are enough


def test_real_metabench_arc_v1_v2(tmp_path: Path) -> None:
    if not SHARED.is_dir():
        pytest.skip(f"real leaderboard data not found at {SHARED}")
    m = import_responses("metabench", [SHARED / "arc_v1_responses_train.csv.gz",
                                       SHARED / "arc_v2_responses_train.csv.gz"])
    v1 = load_reference_responses(SHARED / "arc_v1_responses_train.csv.gz")
    v2 = load_reference_responses(SHARED / "arc_v2_responses_train.csv.gz")
    only1, only2 = set(v1[0]) - set(v2[0]), set(v2[0]) - set(v1[0])
    assert m.values.shape == (len(set(v1[0]) | set(v2[0])), 245)  # joined on the model
    assert np.isnan(m.values).sum() == len(only1) * 145 + len(only2) * 100  # NaN, not dropped
    assert np.array_equal(m.values[: len(v1[0]), :100], v1[2])
