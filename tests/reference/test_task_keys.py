"""Task keys ``irt_params`` (pre-fitted item parameters skip the fit) and ``align`` (a translated
task reuses a source-language population's items by position), through the real config loader
and pipeline on the shipped tiny world."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import numpy as np
import pytest

from optuna_merge3 import evaluation, irt, pipeline
from optuna_merge3.cli import main
from optuna_merge3.config import ConfigError, StudyConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

STUDIES = Path(__file__).resolve().parents[2] / "studies"
WORLD = STUDIES / "tiny_world"
RAW = tomllib.loads((STUDIES / "tiny_world.toml").read_text(encoding="utf-8"))


def _config(tmp: Path, **task: object) -> StudyConfig:
    """The tiny world study with one task, math_it, edited by ``task`` (None drops a key)."""
    raw = copy.deepcopy(RAW)
    raw["study"]["out_dir"] = str(tmp / "out")
    entry = {**raw["tasks"][0], **task}
    raw["tasks"] = [{k: v for k, v in entry.items() if v is not None}]
    return StudyConfig.from_dict(raw, STUDIES)


def _fit(reference: str) -> irt.IRTParams:
    _, ids, y = pipeline.load_reference_responses(WORLD / "reference" / reference)
    return irt.fit_irt(y, n_dims=2, item_ids=ids, random_state=0)[0]


def _fit_or_load(config: StudyConfig) -> irt.IRTParams:
    task = evaluation.load_task(config.tasks[0].path)
    (config.out_dir / "estimate").mkdir(parents=True, exist_ok=True)
    return pipeline._fit_or_load_irt(config, config.tasks[0], task, config.out_dir / "estimate",
                                     lambda _: None)


def test_irt_params_are_used_as_given_in_task_order_and_nothing_is_fitted(tmp_path: Path) -> None:
    params = _fit("math_it_responses.csv.gz")
    shuffled = params.subset(np.random.default_rng(0).permutation(params.n_items))
    shuffled.save(tmp_path / "math_it_irt.npz")
    config = _config(tmp_path, reference=None, irt_params=str(tmp_path / "math_it_irt.npz"))
    assert pipeline.check_inputs(config)
    loaded = _fit_or_load(config)
    assert loaded.item_ids == params.item_ids  # back in the task's order
    assert np.array_equal(loaded.alpha, params.alpha) and np.array_equal(loaded.beta, params.beta)
    assert loaded.meta["gp_b"] == params.meta["gp_b"]  # gp-IRT keeps its calibration
    assert not list((config.out_dir / "estimate").glob("irt_*"))  # no fit, no cache
    sig = config.signature()["tasks"][0]
    assert sig["irt_params_sha"] and "align" not in sig
    plain = _config(tmp_path).signature()["tasks"][0]  # studies made before the keys resume
    assert "irt_params_sha" not in plain and "align" not in plain


def test_align_position_reuses_a_source_language_population(tmp_path: Path) -> None:
    english = str(WORLD / "reference" / "math_en_responses.csv.gz")  # ids math_en-0000...
    with pytest.raises(ValueError, match=r"math_en_responses\.csv\.gz: no reference responses "
                                         r"for 200 of 200 item\(s\) of task 'math_it' .*set "
                                         r"align = 'position'"):
        pipeline.check_inputs(_config(tmp_path, reference=english))
    config = _config(tmp_path, reference=english, align="position")
    assert pipeline.check_inputs(config)
    params = _fit_or_load(config)
    task = evaluation.load_task(config.tasks[0].path)
    assert params.item_ids == [item.id for item in task.items]
    english_fit = irt.fit_irt(pipeline.load_reference_responses(english)[2], n_dims=2,
                              random_state=config.seed)[0]
    np.testing.assert_allclose(params.beta, english_fit.beta)  # row k = English item k
    assert config.signature()["tasks"][0]["align"] == "position"
    short = _config(tmp_path, path=str(WORLD / "tasks" / "qa_en.jsonl"), reference=english,
                    align="position")
    with pytest.raises(ValueError, match=r"align = 'position' needs as many items as task "
                                         r"'math_it' .*: it has 200, the task 120"):
        pipeline.check_inputs(short)


@pytest.mark.parametrize("edit, message", [
    ({"reference": "none.csv.gz"}, r"tasks\[0\]\.reference: file not found: .*none\.csv\.gz"),
    ({"align": "row"}, r"tasks\[0\]\.align: 'row' is not one of \['id', 'position'\]"),
    ({"irt_params": "nowhere.npz"}, r"tasks\[0\]\.irt_params: file not found: .*nowhere\.npz"),
])
def test_task_key_errors(edit: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        _config(tmp_path, **edit)


def test_missing_or_broken_inputs_say_what_to_do(tmp_path: Path) -> None:
    bare = _config(tmp_path, reference=None)  # loads: `reference build` works on such a task
    with pytest.raises(ValueError, match=r"task 'math_it': no reference population: set "
                                         r"reference = .*optuna-merge3 reference build CONFIG "
                                         r"--task math_it.* or irt_params = "):
        pipeline.check_inputs(bare)
    with pytest.raises(ValueError, match=r"none\.csv\.gz: reference responses not found; .*"
                                         r"optuna-merge3 reference build CONFIG --task NAME"):
        pipeline.load_reference_responses(tmp_path / "none.csv.gz")  # the Python API
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    broken = _config(tmp_path, irt_params=str(tmp_path / "bad.npz"))
    with pytest.raises(ValueError, match=r"bad\.npz: cannot read pre-fitted item parameters"):
        pipeline.check_inputs(broken)


@pytest.mark.slow
def test_estimate_runs_on_pre_fitted_parameters(tmp_path: Path, capsys) -> None:
    """End to end through the CLI: the study's Estimate step with irt_params and no reference."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
    from plugin_helpers import tiny_raw, write_config

    _fit("math_it_responses.csv.gz").save(tmp_path / "math_it_irt.npz")
    raw = tiny_raw(tmp_path / "out")
    raw["tasks"] = raw["tasks"][:1]
    raw["tasks"][0].pop("reference")
    raw["tasks"][0]["irt_params"] = str(tmp_path / "math_it_irt.npz")
    assert main(["estimate", str(write_config(tmp_path / "s.toml", raw))]) == 0
    out = capsys.readouterr().out
    assert "pre-fitted item parameters from" in out and '"irt_d": 2' in out
