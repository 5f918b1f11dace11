"""Bad inputs: each one a clear error (what is wrong and where), and an existing study intact.

Every case runs the real command (``optuna-merge3 run`` unless said otherwise, in process) with
a broken variant of the config of a finished tiny-world study (same study name, same SQLite
file), then checks the exit code, the message, and that the study's trials (numbers, states,
values, parameters, user attributes) are exactly as before.
"""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
import shutil
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from plugin_helpers import STUDIES, TinyStudy, copy_study, run_cli, write_config

WORLD = STUDIES / "tiny_world"


# -- fixtures: odd models and broken task / reference files ---------------------------------------
@pytest.fixture(scope="module")
def odd_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random tiny Llamas: ``ok/{base,math_en,lang_it}`` fit together; ``shape/lang_it`` has
    another MLP width and ``vocab/lang_it`` another vocabulary."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    root = tmp_path_factory.mktemp("odd_models")
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64,
                tie_word_embeddings=False)
    for seed, (path, overrides) in enumerate({
        "ok/base": {}, "ok/math_en": {}, "ok/lang_it": {},
        "shape/lang_it": {"intermediate_size": 48}, "vocab/lang_it": {"vocab_size": 100},
    }.items()):
        torch.manual_seed(seed)
        LlamaForCausalLM(LlamaConfig(**{**base, **overrides})).save_pretrained(root / path)
    return root


@pytest.fixture(scope="module")
def shared_study(tiny_run: TinyStudy, tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """One copy of the finished study for all cases: each case checks it is unchanged, so a
    case that changed it fails itself (and the next ones compare with the changed state)."""
    return copy_study(tiny_run, tmp_path_factory.mktemp("shared"))


def _task_copy(tmp: Path, name: str, edit: Callable[[list[str]], list[str]]) -> Path:
    """``tasks/<name>.jsonl`` (and its sidecar config) copied with its lines edited."""
    lines = (WORLD / "tasks" / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    path = tmp / "tasks" / f"{name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in edit(lines)), encoding="utf-8")
    shutil.copy(WORLD / "tasks" / f"{name}.json", path.with_suffix(".json"))
    return path


def _drop_answer(lines: list[str]) -> list[str]:
    row = json.loads(lines[2])
    del row["answer"]
    return lines[:2] + [json.dumps(row)] + lines[3:]


def _renamed_reference(tmp: Path) -> Path:
    """The math_it reference matrix with item ids that are not the task's."""
    with gzip.open(WORLD / "reference" / "math_it_responses.csv.gz", "rt", encoding="utf-8") as fh:
        text = fh.read()
    header, rest = text.split("\n", 1)
    header = ",".join(["model"] + [f"other-{i}" for i in range(len(header.split(",")) - 1)])
    path = tmp / "reference.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as fh:
        fh.write(header + "\n" + rest)
    return path


def _not_gzip(tmp: Path) -> Path:
    path = tmp / "reference.csv.gz"
    path.write_text("model,a\nm,1\n", encoding="utf-8")
    return path


def _models(raw: dict, odd: Path, lang_it: str) -> None:
    # a new study: resuming the existing one with other weights is refused before any model
    # is read (test_resume_content.py)
    raw["study"]["name"] = f"odd_{lang_it}"
    raw["merge"]["base"] = str(odd / "ok" / "base")
    raw["merge"]["endpoints"] = {"math_en": str(odd / "ok" / "math_en"),
                                 "lang_it": str(odd / lang_it / "lang_it")}


def _task(raw: dict, i: int, **values: object) -> None:
    raw["tasks"][i].update(values)


def _lm_eval_task(raw: dict, i: int, **values: object) -> None:
    """Task ``i`` as the tiny world's lm-eval task (studies/tiny_world_lmeval.toml) + ``values``."""
    name = raw["tasks"][i].pop("path") and raw["tasks"][i]["name"]
    raw["tasks"][i].update({"lm_eval": f"tiny_{name}", "lm_eval_include": str(WORLD / "lm_eval"),
                            "data_files": {"test": str(WORLD / "tasks" / f"{name}.jsonl")},
                            **values})


# Each case: edit(raw config dict, tmp folder, odd models) -> extra CLI args; then the message.
Edit = Callable[[dict, Path, Path], "list[str] | None"]
CASES: dict[str, tuple[Edit, str]] = {
    "unknown merge method": (
        lambda r, t, m: r["merge"].update(method="frankenmerge"),
        r"merge\.method: 'frankenmerge' is not one of \[.*'task_arithmetic'"),
    "task arithmetic without base": (
        lambda r, t, m: r["merge"].pop("base"),
        r"merge\.base: method 'task_arithmetic' needs a base model"),
    "endpoints of different shapes": (
        lambda r, t, m: _models(r, m, "shape"),
        r"shape mismatch: endpoint 'lang_it' tensor 'model\.layers\.0\.mlp\.\w+\.weight' has "
        r"shape \(\d+, \d+\), the base has"),
    "endpoints of different vocabularies": (
        lambda r, t, m: _models(r, m, "vocab"),
        r"vocab size mismatch: endpoint 'lang_it' tensor 'lm_head\.weight' has shape "
        r"\(100, 32\), the base has \(96, 32\)"),
    "endpoint path that does not exist": (
        lambda r, t, m: r["merge"]["endpoints"].update(lang_it=str(t / "nowhere" / "lang_it")),
        r"merge\.endpoints\.lang_it: model not found: .*nowhere/lang_it"),
    "density bound above 1": (
        lambda r, t, m: r["merge"].update(method="ties", search={"weight": [0.0, 1.0],
                                                                 "density": [0.2, 1.5]}),
        r"merge\.search\.density: \[0\.2, 1\.5\] is out of range; a density is a fraction of "
        r"the task vector in \[0, 1\]"),
    "fixed density above 1": (
        lambda r, t, m: r["merge"].update(method="ties", fixed={"density/math_en": 1.2}),
        r"merge\.fixed\.density/math_en: 1\.2 is out of range"),
    "lower bound above upper": (
        lambda r, t, m: r["merge"]["search"].update(weight=[1.5, 0.0]),
        r"merge\.search\.weight: need finite low <= high, got \[1\.5, 0\.0\]"),
    "misspelt merge parameter": (
        lambda r, t, m: r["merge"].update(search={"wieght": [0.0, 1.0]}),
        r"bad\.toml: merge\.search\.wieght: 'wieght' is not a parameter of task_arithmetic; "
        r"valid: \[.*'weight'\]"),
    "empty task file": (
        lambda r, t, m: _task(r, 0, path=str(_task_copy(t, "math_it", lambda lines: []))),
        r"task 'math_it': .*/math_it\.jsonl has no items"),
    "task line without a field": (
        lambda r, t, m: _task(r, 0, path=str(_task_copy(t, "math_it", _drop_answer))),
        r"/math_it\.jsonl:3: missing required field 'answer'"),
    "task line that is not JSON": (
        lambda r, t, m: _task(r, 1, path=str(_task_copy(
            t, "qa_en", lambda lines: lines[:4] + ['{"id": "q", "prompt": '] + lines[5:]))),
        r"/qa_en\.jsonl:5: invalid JSON"),
    "n_items larger than the task": (
        lambda r, t, m: _task(r, 1, n_items=500),
        r"task 'qa_en': n_items = 500 but .*/qa_en\.jsonl has only 120 items; lower n_items"),
    "reference ids that do not match the task": (
        lambda r, t, m: _task(r, 0, reference=str(_renamed_reference(t))),
        r"reference\.csv\.gz: no reference responses for 200 of 200 item\(s\) of task "
        r"'math_it' .*e\.g\. \['math_it-0000'"),
    "reference file that is not gzip": (
        lambda r, t, m: _task(r, 0, reference=str(_not_gzip(t))),
        r"reference\.csv\.gz: cannot read it as a CSV file: .*gzip"),
    "task file that does not exist": (
        lambda r, t, m: _task(r, 0, path=str(t / "missing.jsonl")),
        r"tasks\[0\]\.path: file not found: .*missing\.jsonl"),
    "task with both path and lm_eval": (
        lambda r, t, m: _task(r, 0, lm_eval="tiny_math_it"),
        r"tasks\[0\]: give exactly one of 'path' \(a JSONL / CSV task file\) or 'lm_eval'"),
    "lm_eval_include without lm_eval": (
        lambda r, t, m: _task(r, 0, lm_eval_include=str(WORLD / "lm_eval")),
        r"tasks\[0\]\.lm_eval_include: only valid with 'lm_eval'"),
    "lm-eval data file that does not exist": (
        lambda r, t, m: _lm_eval_task(r, 0, data_files={"test": str(t / "missing.jsonl")}),
        r"tasks\[0\]\.data_files\.test: file not found: .*missing\.jsonl"),
    "unknown lm-eval metric": (
        lambda r, t, m: _lm_eval_task(r, 1, lm_eval_metric="acc"),
        r"task 'qa_en': lm_eval_metric 'acc' is not one of "
        r"\['exact_match,strict'\]"),
    "unknown lm-eval backend": (
        lambda r, t, m: r.setdefault("evaluation", {}).update(lm_eval_backend="vllm"),
        r"evaluation\.lm_eval_backend: 'vllm' is not one of \['harness', 'generate'\]"),
    "max_new_tokens below 1": (
        lambda r, t, m: _task(r, 1, max_new_tokens=0),
        r"tasks\[1\]\.max_new_tokens: must be >= 1"),
    "resume with another generation budget": (
        lambda r, t, m: _task(r, 1, max_new_tokens=12),
        r"refusing to resume it\. changed: tasks\[1\]\.max_new_tokens"),
    "missing config key": (
        lambda r, t, m: r["study"].pop("name"),
        r"study\.name: required key is missing"),
    "unknown config key": (
        lambda r, t, m: r["study"].update(n_trails=5),
        r"study: unknown key\(s\) \['n_trails'\]; valid: \["),
    "unknown config table": (
        lambda r, t, m: r.update(samplers={"name": "tpe"}),
        r"unknown table\(s\) \['samplers'\]"),
    "value of the wrong type": (
        lambda r, t, m: r["study"].update(n_trials="ten"),
        r"study\.n_trials: expected int, got str 'ten'"),
    "unknown sampler": (
        lambda r, t, m: r["sampler"].update(name="pso"),
        r"sampler\.name: 'pso' is not one of \['nsga2', 'nsga3', 'cmaes'"),
    "CMA-ES with two objectives": (
        lambda r, t, m: r["sampler"].update(name="cmaes"),
        r"sampler\.name: 'cmaes' is single-objective but the config has 2 tasks"),
    "unreachable storage URL (option)": (
        lambda r, t, m: ["--storage", "postgresql://root:secret@127.0.0.1:1/x"],
        r"storage postgresql://root:\*\*\*@127\.0\.0\.1:1/x: cannot open it"),
    "unreachable storage URL (config)": (
        lambda r, t, m: r["study"].update(storage="postgresql://root@127.0.0.1:1/x"),
        r"storage postgresql://root@127\.0\.0\.1:1/x: cannot open it"),
    "storage that is not a URL": (
        lambda r, t, m: r["study"].update(storage="my-study.db"),
        r"storage 'my-study\.db': expected an RDB URL"),
    "resume with a changed search space": (
        lambda r, t, m: r["merge"]["search"].update(weight=[0.0, 2.0]),
        r"study 'tiny' exists with a different config; refusing to resume it\. changed: "
        r"merge\.search\.weight\[1\]: 1\.5 -> 2\.0"),
    "resume with a changed estimator": (
        lambda r, t, m: _task(r, 1, estimator="pirt"),
        r"refusing to resume it\. changed: tasks\[1\]\.estimator: \"gmpirt\" -> \"pirt\""),
    "resume with changed task items": (
        lambda r, t, m: _task(r, 0, path=str(_task_copy(t, "math_it", lambda lines: lines[:-1]))),
        r"refusing to resume it\. changed: tasks\[0\]\.items_sha: "),
    "resume with another task set": (
        lambda r, t, m: r.update(tasks=r["tasks"][:1]),
        r"refusing to resume it\. changed: (.*; )?tasks\[1\] removed \(was \"qa_en\"\)"),
    "unknown mask rng": (
        lambda r, t, m: r.setdefault("evaluation", {}).update(rng="philox"),
        r"evaluation\.rng: 'philox' is not one of \['counter', 'mergekit'\]"),
    "the deleted fused key": (
        lambda r, t, m: r.setdefault("evaluation", {}).update(fused=True),
        r"evaluation.*fused"),
    "resume with other DARE / DELLA masks": (
        lambda r, t, m: r.setdefault("evaluation", {}).update(rng="mergekit"),
        r"refusing to resume it\. changed: rng (removed|: )"),
    "resume with another endpoint": (
        lambda r, t, m: r["merge"]["endpoints"].update(
            lang_it=str(WORLD / "models" / "trivia_en")),
        r"changed: (.*; )?merge\.endpoints\.lang_it: \"lang_it\" -> \"trivia_en\""),
}


# -- cases generated from the config's declarations: every key gets a wrong type, and a value out
# of its range, outside its choices or off its pattern where it declares one ----------------------
_WRONG_TYPE = {int: "x", float: "x", str: 7, bool: "yes", dict: "x", list: "x"}


def _wrong_type(hint: object) -> object:
    import typing

    args = [a for a in typing.get_args(hint) if a is not type(None)]
    origin = typing.get_origin(hint)
    if origin in (dict, list):
        return _WRONG_TYPE[origin]
    if args:  # a union such as ``str | None``: a value its first member refuses
        return _wrong_type(args[0])
    return 7 if hint is Path else _WRONG_TYPE[hint]


def _declared_cases() -> dict[str, tuple[str, str, object]]:
    from optuna_merge3.config import declared_keys

    cases = {}
    for table, f, hint in declared_keys():
        meta = f.metadata
        bad = {"wrong type": _wrong_type(hint)}
        if meta["min"] is not None:
            bad["below min"] = meta["min"] - 1
        if meta["max"] is not None:
            bad["above max"] = meta["max"] + 1
        if meta["gt"] is not None:
            bad["not above gt"] = meta["gt"]
        if meta["choices"] is not None:
            bad["unknown choice"] = "bogus"
        if meta["pattern"] is not None:
            bad["off pattern"] = "a/b"
        for problem, value in bad.items():
            cases[f"{table}.{f.name}: {problem}"] = (table, f.name, value)
    return cases


DECLARED = _declared_cases()


def test_every_declared_key_gets_generated_cases() -> None:
    from optuna_merge3.config import declared_keys

    keys = {f"{table}.{f.name}" for table, f, _ in declared_keys()}
    assert {case.split(":")[0] for case in DECLARED} == keys
    assert len(keys) >= 30


@pytest.mark.parametrize("case", list(DECLARED))
def test_a_declared_key_with_a_bad_value_is_one_line_naming_file_key_and_value(
    case: str, shared_study: TinyStudy, tmp_path: Path
) -> None:
    table, key, value = DECLARED[case]
    raw = copy.deepcopy(shared_study.raw)
    if table == "tasks":
        raw["tasks"][1][key] = value
        name = f"tasks[1].{key}"
    else:
        raw.setdefault(table, {})[key] = value
        name = f"{table}.{key}"
    config = write_config(tmp_path / "bad.toml", raw)
    before = shared_study.snapshot()
    code, out, err = run_cli("run", config)
    assert code == 2, (out + err)[-2000:]
    line = err.strip()
    assert len(line.splitlines()) == 1, err
    assert line.startswith(f"optuna-merge3 run: error: {config}: {name}: "), err
    assert repr(value) in line or (isinstance(value, str) and value in line), err
    assert shared_study.snapshot() == before
    assert optuna.get_all_study_names(shared_study.storage) == [shared_study.name]


# -- cross-key and machine cases that no single declaration catches --------------------------------
def _same_model_twice(r: dict, t: Path, m: Path) -> None:
    r["merge"]["endpoints"]["again"] = r["merge"]["endpoints"]["math_en"]


CROSS_CASES: dict[str, tuple[Edit, str]] = {
    "n_dims = 0": (lambda r, t, m: r["irt"].update(n_dims=0), r"irt\.n_dims: must be >= 1, got 0"),
    "n_dims above the reference population": (
        lambda r, t, m: r["irt"].update(n_dims=200),
        r"irt\.n_dims: 200 latent dimensions but task 'math_it' has only 68 reference models"),
    "dtype float33": (lambda r, t, m: r["evaluation"].update(dtype="float33"),
                      r"evaluation\.dtype: 'float33' is not one of \['float32', 'bfloat16'"),
    "dtype float8": (lambda r, t, m: r["evaluation"].update(dtype="float8"),
                     r"evaluation\.dtype: 'float8' is not one of"),
    "quantization int3": (lambda r, t, m: r["evaluation"].update(quantization="int3"),
                          r"evaluation\.quantization: 'int3' is not one of \['nf4'\]"),
    "timeout_s = -1": (lambda r, t, m: r["study"].update(timeout_s=-1),
                       r"study\.timeout_s: must be > 0, got -1"),
    "lambda_constraint bogus": (lambda r, t, m: r["irt"].update(lambda_constraint="bogus"),
                                r"irt\.lambda_constraint: 'bogus' is not one of"),
    "the same endpoint twice": (_same_model_twice,
                                r"merge\.endpoints\.again: .* is the same model as "
                                r"merge\.endpoints\.math_en"),
    "the base listed as an endpoint": (
        lambda r, t, m: r["merge"]["endpoints"].update(lang_it=r["merge"]["base"]),
        r"merge\.endpoints\.lang_it: .* is the same model as merge\.base"),
}
if not __import__("torch").cuda.is_available():  # the case needs a machine without CUDA
    CROSS_CASES["device cuda without CUDA"] = (
        lambda r, t, m: r["evaluation"].update(device="cuda"),
        r"evaluation\.device: 'cuda' but this machine has 0 CUDA device\(s\)")
CASES.update(CROSS_CASES)


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_a_clear_error_and_the_study_is_intact(
    case: str, shared_study: TinyStudy, odd_models: Path, tmp_path: Path
) -> None:
    existing_study = shared_study
    edit, message = CASES[case]
    raw = copy.deepcopy(existing_study.raw)
    extra = edit(raw, tmp_path, odd_models)
    extra = extra if isinstance(extra, list) else []
    config = write_config(tmp_path / "bad.toml", raw)
    before = existing_study.snapshot()
    code, out, err = run_cli("run", config, *extra)
    assert code == 2, (out + err)[-2000:]
    assert err.startswith("optuna-merge3 run: error: ")
    assert len(err.strip().splitlines()) <= 3, err  # a message, not a traceback
    assert re.search(message, err), err
    assert existing_study.snapshot() == before


def test_malformed_toml_and_missing_file_are_clear(existing_study: TinyStudy,
                                                   tmp_path: Path) -> None:
    before = existing_study.snapshot()
    bad = tmp_path / "bad.toml"
    bad.write_text(existing_study.config_path.read_text().replace("[study]", "[study", 1))
    code, _, err = run_cli("run", bad)
    assert code == 2 and "bad.toml: not valid TOML: " in err and "line 1" in err
    code, _, err = run_cli("best", tmp_path / "nothing.toml")
    assert code == 2 and "nothing.toml: config file not found" in err
    assert existing_study.snapshot() == before


def test_read_only_commands_refuse_a_missing_study_or_trial(
    existing_study: TinyStudy, tmp_path: Path
) -> None:
    before = existing_study.snapshot()
    code, _, err = run_cli("export", existing_study.config_path, "99", "--out", tmp_path / "x")
    assert code == 2 and "study 'tiny' has no trial 99 (trials 0 to 3)" in err
    assert not (tmp_path / "x").exists()
    raw = copy.deepcopy(existing_study.raw)
    raw["study"]["name"] = "never-run"
    other = write_config(tmp_path / "other.toml", raw)
    for command in (["best", other, "--no-truth"], ["report", other], ["export", other, "0",
                                                                      "--out", tmp_path / "y"]):
        code, _, err = run_cli(*command)
        assert code == 2 and "study 'never-run' not found in sqlite:///" in err, err
    assert optuna.get_all_study_names(existing_study.storage) == ["tiny"]  # nothing created
    assert existing_study.snapshot() == before


# -- a trial that raises or returns NaN fails alone ---------------------------------------------
def test_a_raising_or_nan_trial_fails_with_its_message_and_the_study_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Merge3Objective with stand-ins for the model side: trial 1's merge raises, trial 2's
    estimate is NaN; both FAIL with the message in their user attributes, the others complete."""
    from optuna_merge3 import evaluation, irt
    from optuna_merge3.config import TaskConfig
    from optuna_merge3.objective import Merge3Objective
    from optuna_merge3.pipeline import FitnessSetup, TaskSetup

    calls = {"merge": 0, "estimate": 0}

    class Merger:
        def apply(self, params: dict, model: object, seed: int = 0) -> None:
            calls["merge"] += 1
            if calls["merge"] == 2:
                raise RuntimeError("CUDA out of memory (simulated)")

    class Space:
        def suggest(self, trial: optuna.Trial) -> dict[str, float]:
            return {"weight/a": trial.suggest_float("weight/a", 0.0, 1.0)}

    def estimate(*args: object, **kwargs: object) -> SimpleNamespace:
        calls["estimate"] += 1
        value = math.nan if calls["estimate"] == 2 else 0.5
        return SimpleNamespace(value=value, stderr=0.1, details={"lambda": [1.0]})

    monkeypatch.setattr(evaluation, "evaluate", lambda *a, **k: SimpleNamespace(
        correct=np.array([True, False]), answers=["1", "2"]))
    monkeypatch.setattr(irt, "estimate_accuracy", estimate)
    items = [SimpleNamespace(id=f"i{k}") for k in range(3)]
    task = TaskSetup(
        config=TaskConfig(name="t", path=tmp_path / "t.jsonl", reference=tmp_path / "r.csv",
                          n_items=2),
        task=SimpleNamespace(items=items), irt=None, subset=SimpleNamespace(indices=[0, 2]),
        endpoint_correct=np.zeros((1, 3), dtype=bool), endpoint_abilities=np.zeros((1, 1)),
    )
    model = SimpleNamespace(parameters=lambda: [])
    objective = Merge3Objective(Merger(), Space(), model, None, FitnessSetup(["a"], [task], 0.0),
                                budget=4)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=10,
                   callbacks=[optuna.study.MaxTrialsCallback(4, states=(TrialState.COMPLETE,))])
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL] + [
        TrialState.COMPLETE] * 3
    assert study.trials[1].user_attrs["error"] == "RuntimeError: CUDA out of memory (simulated)"
    assert "Traceback" in study.trials[1].user_attrs["traceback"]
    assert study.trials[2].user_attrs["error"] == "ValueError: estimator gmpirt returned nan"
    assert study.trials[3].user_attrs["subset_accuracy/t"] == 0.5
