"""lm-evaluation-harness tasks as fitness tasks, on the tiny world's live in-memory merges.

The shipped task YAMLs (studies/tiny_world/lm_eval/) run over the world's own JSONL. Per-item
correctness is compared three ways on the same live model and items: our two backends, lm-eval's
own ``simple_evaluate`` (``samples=``, ``log_samples=True``, a YAML that ``include``s the shipped
one), and the tiny world's native scoring of the same items (the YAMLs encode its criterion).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("lm_eval", reason="lm-eval (the `lm-eval` extra)")
torch = pytest.importorskip("torch")

from optuna_merge3 import evaluation  # noqa: E402
from optuna_merge3.evaluation import evaluate_lm_eval, load_lm_eval_task  # noqa: E402

STUDIES = Path(__file__).resolve().parents[2] / "studies"
WORLD = STUDIES / "tiny_world"
INCLUDE = WORLD / "lm_eval"
# Two items of every kind of answer: the best transfer merge of the grid (docs/tiny_world.md),
# then lang_it itself (the live model is rewritten in place between them).
MERGES = [{"weight/math_en": 0.75, "weight/lang_it": 0.5}, {"weight/math_en": 0.0,
                                                            "weight/lang_it": 1.0}]


def _task(name: str) -> evaluation.Task:
    return load_lm_eval_task(f"tiny_{name}", include=INCLUDE, task_name=name,
                             data_files={"test": WORLD / "tasks" / f"{name}.jsonl"})


@pytest.fixture(scope="module")
def live() -> tuple:
    """The tiny world's merger and ONE live model that each test rewrites in memory."""
    from optuna_merge3.merging import InMemoryMerger, MergeSpace

    torch.set_num_threads(1)
    merge = {"method": "task_arithmetic", "base": str(WORLD / "models" / "base"),
             "endpoints": {n: str(WORLD / "models" / n) for n in ("math_en", "lang_it")},
             "search": {"weight": [0.0, 1.5]}}
    merger = InMemoryMerger(merge["base"], merge["endpoints"], MergeSpace.from_config(merge))
    model = merger.load_model().eval()
    return merger, model, merger.load_tokenizer()


@pytest.fixture(scope="module")
def tasks() -> dict[str, evaluation.Task]:
    return {name: _task(name) for name in ("math_it", "qa_en")}


def _simple_evaluate(model, tokenizer, name: str, indices: list[int], tmp: Path) -> np.ndarray:
    """lm-eval's own run: a YAML that includes the shipped one and points at the local file."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    folder = tmp / f"yaml_{name}"
    folder.mkdir(exist_ok=True)
    (folder / "local.yaml").write_text(
        f"task: local_{name}\ninclude: {INCLUDE / f'tiny_{name}.yaml'}\ndataset_path: json\n"
        f"dataset_name: null\ndataset_kwargs:\n  data_files:\n"
        f"    test: {WORLD / 'tasks' / f'{name}.jsonl'}\n", encoding="utf-8")
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=7, device="cpu")
    out = simple_evaluate(lm, tasks=[f"local_{name}"], samples={f"local_{name}": indices},
                          log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(folder),
                                                   include_defaults=False))
    by_doc = {s["doc_id"]: s["exact_match"] for s in out["samples"][f"local_{name}"]}
    assert sorted(by_doc) == indices
    return np.array([by_doc[i] == 1.0 for i in indices])


def test_items_are_the_world_rows_with_the_yaml_generation(tasks) -> None:
    task = tasks["math_it"]
    native = evaluation.load_task(WORLD / "tasks" / "math_it.jsonl")
    assert [i.id for i in task.items] == [i.id for i in native.items]  # the reference CSV's ids
    assert [i.prompt for i in task.items] == [i.prompt for i in native.items]
    assert [i.answer for i in task.items] == [i.answer for i in native.items]
    assert task.scorer == "lm_eval" and task.generation == native.generation  # 6 tokens, <eos>
    assert evaluation.task_fingerprint(task) != evaluation.task_fingerprint(tasks["qa_en"])


@pytest.mark.parametrize("merge", MERGES, ids=["transfer_merge", "lang_it"])
def test_backends_simple_evaluate_and_native_scoring_agree_per_item(
    live, tasks, merge, tmp_path: Path
) -> None:
    merger, model, tokenizer = live
    merger.apply(merge, model)
    rng = np.random.default_rng(0)
    mixed = []
    for name, task in tasks.items():
        indices = sorted(rng.choice(len(task.items), size=40, replace=False).tolist())
        harness = evaluate_lm_eval(model, tokenizer, task, indices, batch_size=8,
                                   backend="harness")
        ours = evaluate_lm_eval(model, tokenizer, task, indices[::-1], batch_size=5,
                                backend="generate").correct[::-1]
        lm_eval_own = _simple_evaluate(model, tokenizer, name, indices, tmp_path)
        native = evaluation.evaluate(model, tokenizer,
                                     evaluation.load_task(WORLD / "tasks" / f"{name}.jsonl"),
                                     indices=indices).correct
        np.testing.assert_array_equal(harness.correct, lm_eval_own, err_msg=name)
        np.testing.assert_array_equal(ours, lm_eval_own, err_msg=name)
        np.testing.assert_array_equal(native, lm_eval_own, err_msg=name)
        # through evaluate(), as trials call it; a subset's items score as in the full task
        full = evaluation.evaluate(model, tokenizer, task).correct
        np.testing.assert_array_equal(full[indices], lm_eval_own, err_msg=name)
        mixed.append(0 < lm_eval_own.sum() < len(indices))
    assert any(mixed)  # some item right and some wrong: the comparison is not trivial


def test_metric_choice_and_bad_metric(tasks) -> None:
    with pytest.raises(ValueError, match=r"lm_eval_metric 'bleu' is not one of \['exact_match,"
                                         r"strict'\]"):
        load_lm_eval_task("tiny_qa_en", include=INCLUDE, metric="bleu",
                          data_files={"test": WORLD / "tasks" / "qa_en.jsonl"})
    same = load_lm_eval_task("tiny_qa_en", include=INCLUDE, metric="exact_match,strict",
                             data_files={"test": WORLD / "tasks" / "qa_en.jsonl"})
    assert same.meta["lm_eval_config"] == tasks["qa_en"].meta["lm_eval_config"]


def test_overrides_change_generation_and_fingerprint(tasks) -> None:
    longer = load_lm_eval_task("tiny_qa_en", include=INCLUDE, max_new_tokens=9, stop=["."],
                               data_files={"test": WORLD / "tasks" / "qa_en.jsonl"})
    assert longer.generation == evaluation.GenerationConfig(9, (".",))
    assert evaluation.task_fingerprint(longer) != evaluation.task_fingerprint(tasks["qa_en"])


def test_group_and_missing_inputs_are_clear_errors(tmp_path: Path) -> None:
    (tmp_path / "g.yaml").write_text("group: tiny_pair\ntask: [tiny_qa_en, tiny_math_it]\n")
    for p in INCLUDE.iterdir():
        (tmp_path / p.name).write_text(p.read_text())
    with pytest.raises(ValueError, match="'tiny_pair' is a group, not one YAML task"):
        load_lm_eval_task("tiny_pair", include=tmp_path)
    with pytest.raises(ValueError, match=r"data_files.test: file not found: .*nope.jsonl"):
        load_lm_eval_task("tiny_qa_en", include=INCLUDE, data_files={"test": tmp_path / "nope.jsonl"})
    with pytest.raises(ValueError, match="lm_eval_include: .* is not a folder"):
        load_lm_eval_task("tiny_qa_en", include=tmp_path / "none")


def test_missing_lm_eval_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    # Simulated absence (lm-eval is installed here): a None entry makes `import lm_eval` fail.
    monkeypatch.setitem(sys.modules, "lm_eval", None)
    with pytest.raises(ImportError, match=r"pip install 'optuna-merge3\[lm-eval\]'"):
        load_lm_eval_task("tiny_qa_en", include=INCLUDE)


@pytest.mark.slow
def test_lm_eval_study_runs_offline_through_the_cli(tmp_path: Path, monkeypatch) -> None:
    """studies/tiny_world_lmeval.toml end to end with every network connection refused; its
    trials see exactly the fitness of the native studies/tiny_world.toml study."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugin"))
    import optuna
    from plugin_helpers import dump_toml, run_cli

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib

    def refuse(*args, **kwargs):
        raise OSError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    raw = tomllib.loads((STUDIES / "tiny_world_lmeval.toml").read_text(encoding="utf-8"))
    raw["study"].update(out_dir=str(tmp_path / "run"), n_trials=3)
    merge = raw["merge"]  # paths made absolute so that the config can live in tmp_path
    merge["base"] = str(STUDIES / merge["base"])
    merge["endpoints"] = {k: str(STUDIES / v) for k, v in merge["endpoints"].items()}
    for task in raw["tasks"]:
        for key in ("lm_eval_include", "reference"):
            task[key] = str(STUDIES / task[key])
        task["data_files"] = {k: str(STUDIES / v) for k, v in task["data_files"].items()}
    config = tmp_path / "tiny_world_lmeval.toml"
    config.write_text(dump_toml(raw), encoding="utf-8")
    code, out, err = run_cli("run", config)
    assert code == 0, err
    assert "[estimate] math_it: d=2, endpoints math_en=0.0%, lang_it=14.0%" in out
    assert "[estimate] qa_en: d=2, endpoints math_en=54.2%, lang_it=0.0%" in out
    study = optuna.load_study(study_name="tiny_world_lmeval",
                              storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    complete = [t for t in study.trials if t.state.name == "COMPLETE"]
    assert len(complete) == 3 and all("subset_accuracy/math_it" in t.user_attrs for t in complete)
    # the native tiny_world.toml study (same seed, subsets, IRT fits) sees the same fitness
    from plugin_helpers import tiny_raw

    native = tmp_path / "native.toml"
    native.write_text(dump_toml(tiny_raw(tmp_path / "native", n_trials=3)), encoding="utf-8")
    code, _, err = run_cli("run", native)
    assert code == 0, err
    native_study = optuna.load_study(study_name="tiny",
                                     storage=f"sqlite:///{tmp_path / 'native' / 'study.db'}")
    assert [t.values for t in native_study.trials] == [t.values for t in study.trials]


def _mc_and_fewshot_tasks(folder: Path) -> Path:
    """Two more YAML kinds: multiple choice by log-likelihood (acc, acc_norm) over math_it with
    three other numbers as distractors, and 2-shot qa_en generation with lm-eval's default
    (random) few-shot sampler drawing from the test split."""
    import json

    rows = [json.loads(line) for line in (WORLD / "tasks" / "math_it.jsonl").open()][:120]
    rng = np.random.default_rng(1)
    with (folder / "qa_mc.jsonl").open("w") as fh:
        for r in rows:
            others = rng.choice([a for a in range(19) if str(a) != r["answer"]], 3, replace=False)
            choices = [str(a) for a in others]
            gold = int(rng.integers(4))
            choices.insert(gold, r["answer"])
            fh.write(json.dumps({**r, "choices": choices, "gold": gold}) + "\n")
    common = "test_split: test\ndoc_to_text: \"{{prompt}}\"\ndataset_path: json\n"
    (folder / "qa_mc.yaml").write_text(
        f"task: qa_mc\ndataset_kwargs:\n  data_files:\n    test: {folder}/qa_mc.jsonl\n"
        + common + "output_type: multiple_choice\ndoc_to_choice: \"{{choices}}\"\n"
        "doc_to_target: gold\nmetric_list:\n  - metric: acc\n  - metric: acc_norm\n")
    (folder / "qa_2shot.yaml").write_text(
        f"task: qa_2shot\ninclude: {INCLUDE / 'tiny_qa_en.yaml'}\n" + common
        + f"dataset_kwargs:\n  data_files:\n    test: {WORLD / 'tasks' / 'qa_en.jsonl'}\n"
        "dataset_name: null\nfewshot_split: test\nnum_fewshot: 2\n")
    return folder


@pytest.mark.parametrize("merge", [{"weight/math_en": 0.3, "weight/lang_it": 0.0}], ids=["near_base"])
def test_multiple_choice_and_few_shot_tasks_match_a_full_simple_evaluate(
    live, merge, tmp_path: Path
) -> None:
    """Every item equals lm-eval's own full run (no samples=): prompts with their random few-shot
    examples, and correctness, for both backends and for acc / acc_norm by log-likelihood."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    merger, model, tokenizer = live
    merger.apply(merge, model)
    folder = _mc_and_fewshot_tasks(tmp_path)
    out = simple_evaluate(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=16, device="cpu"),
                          tasks=["qa_mc", "qa_2shot"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(folder),
                                                   include_defaults=False))
    indices = sorted(np.random.default_rng(2).choice(120, 30, replace=False).tolist())
    for name, metric in (("qa_mc", "acc"), ("qa_mc", "acc_norm,none"), ("qa_2shot", None)):
        samples = {s["doc_id"]: s for s in out["samples"][name]}
        task = load_lm_eval_task(name, include=folder, metric=metric)
        key = (metric or "exact_match").partition(",")[0]
        expected = np.array([samples[i][key] == 1.0 for i in indices])
        assert [task.items[i].prompt for i in indices] == [samples[i]["arguments"][0][0]
                                                           for i in indices]
        for backend in ("harness", "generate"):
            got = evaluate_lm_eval(model, tokenizer, task, indices, batch_size=4, backend=backend)
            np.testing.assert_array_equal(got.correct, expected, err_msg=f"{name} {backend}")
        assert 0 < expected.sum() < len(indices), name  # neither all right nor all wrong
    assert task.items[0].prompt.count("Q:") == 3  # two examples, then the question


# A chat template in the tiny world's vocabulary: BOS, then the turns separated by spaces (the
# world's tokenizer has none; a chat endpoint's tokenizer ships one).
CHAT = "{{ bos_token }}{% for m in messages %}{{ m['content'] }} {% endfor %}"


def test_chat_template_prompts_and_correctness_match_simple_evaluate(live, tmp_path) -> None:
    """A chat endpoint: prompts rendered by the tokenizer's chat template (few-shot examples as
    turns) exactly as simple_evaluate(apply_chat_template=True) renders them, same correctness
    from both backends (the context starts with BOS: no second one is added)."""
    import copy

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    merger, model, tokenizer = live
    merger.apply({"weight/math_en": 0.3, "weight/lang_it": 0.0}, model)
    chat_tokenizer = copy.deepcopy(tokenizer)
    chat_tokenizer.chat_template = CHAT
    folder = _mc_and_fewshot_tasks(tmp_path)
    out = simple_evaluate(
        HFLM(pretrained=model, tokenizer=chat_tokenizer, batch_size=16, device="cpu"),
        tasks=["qa_2shot"], log_samples=True, bootstrap_iters=0, apply_chat_template=True,
        task_manager=TaskManager(include_path=str(folder), include_defaults=False))
    samples = {s["doc_id"]: s for s in out["samples"]["qa_2shot"]}
    task = load_lm_eval_task("qa_2shot", include=folder, chat_template_tokenizer=chat_tokenizer)
    plain = load_lm_eval_task("qa_2shot", include=folder)
    indices = list(range(0, 120, 4))
    assert task.use_chat_template and task.items[0].prompt.startswith("<bos>")
    assert [task.items[i].prompt for i in indices] == [samples[i]["arguments"][0][0]
                                                       for i in indices]
    assert evaluation.task_fingerprint(task) != evaluation.task_fingerprint(plain)
    expected = np.array([samples[i]["exact_match"] == 1.0 for i in indices])
    for backend in ("harness", "generate"):
        got = evaluate_lm_eval(model, chat_tokenizer, task, indices, batch_size=4, backend=backend)
        np.testing.assert_array_equal(got.correct, expected, err_msg=backend)
    assert 0 < expected.sum() < len(indices)
    with pytest.raises(ValueError, match="the tokenizer has no chat template"):
        load_lm_eval_task("qa_2shot", include=folder, chat_template_tokenizer=tokenizer)


def test_study_config_keys_signature_and_overrides(tmp_path: Path) -> None:
    """[[tasks]] lm_eval / lm_eval_include / data_files: resolved, hashed by content into the
    resume signature (path-free); max_new_tokens / stop / chat_template reach native tasks."""
    import json
    import shutil

    from optuna_merge3.config import StudyConfig, load_config
    from optuna_merge3.pipeline import load_task

    config = load_config(STUDIES / "tiny_world_lmeval.toml")
    task_config = config.tasks[0]
    assert task_config.path is None and task_config.lm_eval == "tiny_math_it"
    assert task_config.data_files == {"test": WORLD / "tasks" / "math_it.jsonl"}
    signature = config.signature()["tasks"][0]
    assert set(signature["lm_eval_include_sha"]) == {p.name for p in INCLUDE.iterdir()}
    assert set(signature["data_files_sha"]) == {"test"} and "items_sha" not in signature
    assert str(STUDIES) not in json.dumps(config.signature())
    edited = tmp_path / "lm_eval"
    shutil.copytree(INCLUDE, edited)
    yaml = edited / "tiny_math_it.yaml"
    yaml.write_text(yaml.read_text().replace("è la risposta", "è la risposta ?"))
    raw = json.loads(json.dumps(config.raw))
    raw["tasks"][0]["lm_eval_include"] = str(edited)
    changed = StudyConfig.from_dict(raw, STUDIES).signature()["tasks"][0]
    assert changed["lm_eval_include_sha"] != signature["lm_eval_include_sha"]

    raw = json.loads(json.dumps(config.raw))
    raw["tasks"][1] = {"name": "qa_en", "path": "tiny_world/tasks/qa_en.jsonl",
                       "reference": "tiny_world/reference/qa_en_responses.csv.gz",
                       "max_new_tokens": 40, "stop": ["?"], "chat_template": True}
    native = StudyConfig.from_dict(raw, STUDIES)
    task = load_task(native.tasks[1])
    assert task.generation == evaluation.GenerationConfig(40, ("?",)) and task.use_chat_template
    assert native.signature()["tasks"][1]["max_new_tokens"] == 40


@pytest.mark.slow
def test_a_built_in_task_on_local_files(live, tmp_path: Path) -> None:
    """lm-eval's own gsm8k YAML (5-shot from `train`, two filters), its hub dataset replaced by
    local files in GSM8K's format; lm-eval's built-in registry is built here (~15 s). The tiny
    model answers no GSM8K question, so the correctness check is weak here; prompts, target,
    stop sequences and metric names are the point."""
    import json

    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    rows = [{"question": f"anna has {a} apples and gets {b} more . how many ?",
             "answer": f"she has {a} + {b} = {a + b} apples .\n#### {a + b}"}
            for a, b in [(1, 2), (3, 4), (2, 2), (5, 1), (4, 4), (6, 3), (2, 7), (1, 1)]]
    for split, part in (("train", rows[:5]), ("test", rows[5:])):
        (tmp_path / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in part))
    files = {s: tmp_path / f"{s}.jsonl" for s in ("train", "test")}
    task = load_lm_eval_task("gsm8k", data_files=files, metric="exact_match,flexible-extract",
                             max_new_tokens=8)
    assert [i.id for i in task.items] == ["0", "1", "2"]  # no "id" field: lm-eval's doc_id
    assert task.items[0].answer == rows[5]["answer"]
    assert task.items[0].prompt.count("Question:") == 6  # 5 train examples, then the question
    assert task.generation == evaluation.GenerationConfig(8, ("Question:", "</s>", "<|im_end|>"))
    with pytest.raises(ValueError, match=r"'exact_match,strict-match', "
                                         r"'exact_match,flexible-extract'\]"):
        load_lm_eval_task("gsm8k", data_files=files, metric="acc")

    merger, model, tokenizer = live
    merger.apply({"weight/math_en": 1.0, "weight/lang_it": 0.0}, model)
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "local.yaml").write_text(
        f"task: gsm8k_local\ninclude: {Path(__import__('lm_eval').__file__).parent}"
        f"/tasks/gsm8k/gsm8k.yaml\ndataset_path: json\ndataset_name: null\n"
        f"dataset_kwargs:\n  data_files:\n    train: {files['train']}\n    test: {files['test']}\n"
        "generation_kwargs:\n  until: ['Question:', '</s>', '<|im_end|>']\n  do_sample: false\n"
        "  max_gen_toks: 8\n")
    out = simple_evaluate(HFLM(pretrained=model, tokenizer=tokenizer, batch_size=4, device="cpu"),
                          tasks=["gsm8k_local"], log_samples=True, bootstrap_iters=0,
                          task_manager=TaskManager(include_path=str(tmp_path / "yaml"),
                                                   include_defaults=False))
    samples = sorted((s for s in out["samples"]["gsm8k_local"] if s["filter"] ==
                      "flexible-extract"), key=lambda s: s["doc_id"])
    assert [i.prompt for i in task.items] == [s["arguments"][0][0] for s in samples]
    got = evaluate_lm_eval(model, tokenizer, task, backend="harness")
    assert got.correct.tolist() == [s["exact_match"] == 1.0 for s in samples]
