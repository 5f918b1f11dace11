"""Fast checks on the SHIPPED tiny world (studies/tiny_world): models, tasks, reference matrices.

These guard the artefacts other parts of the project (default study, headline benchmark,
notebooks) rely on; they do not rebuild the world (``build_world.py`` does, in ~10 minutes).
"""

from __future__ import annotations

import csv
import gzip
import json
import sys
from pathlib import Path

import numpy as np
import pytest

WORLD = Path(__file__).resolve().parents[1] / "studies" / "tiny_world"
MANIFEST = json.loads((WORLD / "world.json").read_text(encoding="utf-8"))
SHIPPED = list(MANIFEST["models"])
TASKS = list(MANIFEST["tasks"])
ENDPOINTS = [m for m in SHIPPED if m != "base"]


def _responses(task: str) -> tuple[list[str], list[str], np.ndarray]:
    with gzip.open(WORLD / MANIFEST["tasks"][task]["reference"], "rt", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    values = np.array([[int(v) for v in row[1:]] for row in rows[1:]])
    return [row[0] for row in rows[1:]], rows[0][1:], values


def _items(task: str) -> list[dict]:
    path = WORLD / MANIFEST["tasks"][task]["path"]
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def loaded() -> dict:
    """Tokenizer and every shipped model, loaded once with the standard Auto classes."""
    torch = pytest.importorskip("torch")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(WORLD / "models" / "base")
    models = {
        name: AutoModelForCausalLM.from_pretrained(WORLD / "models" / name).eval()
        for name in SHIPPED
    }
    return {"tokenizer": tokenizer, "models": models}


def test_manifest_lists_base_three_endpoints_and_the_target() -> None:
    assert SHIPPED[0] == "base" and len(ENDPOINTS) >= 3
    assert {"math_it", "qa_en"} <= set(TASKS) and len(TASKS) >= 3
    assert MANIFEST["tasks"]["math_it"]["n_items"] == 200
    assert MANIFEST["reference_population"]["n_models"] >= 30
    assert not MANIFEST["quick"], "the shipped world must come from a full build"


def test_shipped_size_is_under_20_mb() -> None:
    total = sum(p.stat().st_size for p in WORLD.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024, f"{total / 2**20:.1f} MiB"


def test_models_load_and_match_the_recipe(loaded: dict) -> None:
    for model in loaded["models"].values():
        cfg = model.config
        assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (128, 2, 4)
        assert cfg.intermediate_size == 512 and cfg.tie_word_embeddings
        assert cfg.vocab_size == len(loaded["tokenizer"])


def test_tokenizer_round_trips_every_prompt(loaded: dict) -> None:
    tok = loaded["tokenizer"]
    for task in TASKS:
        for item in _items(task):
            ids = tok(item["prompt"])["input_ids"]
            assert ids[0] == tok.bos_token_id and tok.unk_token_id not in ids
            assert tok.decode(ids, skip_special_tokens=True) == item["prompt"]
            assert tok.unk_token_id not in tok(item["answer"])["input_ids"]


def test_task_files_follow_the_schema() -> None:
    for task in TASKS:
        items = _items(task)
        assert len(items) == MANIFEST["tasks"][task]["n_items"]
        assert len({it["id"] for it in items}) == len(items)
        assert all({"id", "prompt", "answer"} <= set(it) for it in items)
        config = json.loads((WORLD / MANIFEST["tasks"][task]["config"]).read_text("utf-8"))
        assert {"scorer", "require_regex", "max_new_tokens", "stop"} <= set(config)


def test_tasks_load_with_the_evaluation_package() -> None:
    evaluation = pytest.importorskip("optuna_merge3.evaluation")
    for task in TASKS:
        loaded_task = evaluation.load_task(WORLD / MANIFEST["tasks"][task]["path"])
        assert len(loaded_task.items) == MANIFEST["tasks"][task]["n_items"]


def test_reference_matrices_have_the_right_shape_and_plausible_accuracies() -> None:
    n_models = MANIFEST["reference_population"]["n_models"]
    for task in TASKS:
        models, item_ids, values = _responses(task)
        assert values.shape == (n_models, MANIFEST["tasks"][task]["n_items"])
        assert item_ids == [it["id"] for it in _items(task)]
        assert set(np.unique(values)) <= {0, 1}
        assert set(SHIPPED) <= set(models)
        for name in SHIPPED:  # the shipped models' own full correctness is in the matrix
            row = values[models.index(name)]
            assert row.mean() == pytest.approx(MANIFEST["accuracy"][name][task], abs=1e-3)
        # a useful population for IRT: neither all-right nor all-wrong, items of varied difficulty
        acc = values.mean(axis=1)
        assert acc.max() - acc.min() > 0.3, task
        assert values.mean(axis=0).std() > 0.02, task  # trivia items: 0.03


def test_each_endpoint_is_best_at_its_own_skill() -> None:
    acc = MANIFEST["accuracy"]
    assert acc["math_en"]["math_en"] > 0.8 > acc["base"]["math_en"]
    assert acc["lang_it"]["qa_it"] > 0.9 > acc["base"]["qa_it"]
    assert acc["trivia_en"]["trivia_en"] > 0.9 > acc["base"]["trivia_en"]
    assert acc["base"]["qa_en"] > 0.9
    # the cross-lingual target: no endpoint solves it, the recorded grid's best merge does
    assert max(acc[m]["math_it"] for m in SHIPPED) < 0.3
    grid = MANIFEST["merge_grid"][f"world{MANIFEST['seed']}"]
    assert grid["gain_over_best_endpoint"] >= 0.10


def test_endpoints_differ_from_base(loaded: dict) -> None:
    base = loaded["models"]["base"].state_dict()
    for name in ENDPOINTS:
        other = loaded["models"][name].state_dict()
        delta = sum(float((other[k] - base[k]).float().norm()) for k in base)
        assert delta > 1.0, name


def test_quick_evaluation_reproduces_the_stored_correctness(loaded: dict) -> None:
    sys.path.insert(0, str(WORLD))
    from world_eval import Scorer
    from world_tasks import build_tasks

    tasks = build_tasks(seed=12345)
    for task in TASKS:  # the generator and the shipped files agree item by item
        assert [ex.prompt() for ex in tasks[task].examples] == [it["prompt"] for it in _items(task)]
    rng = np.random.default_rng(0)
    for task in ("math_it", "math_en", "qa_en"):
        models, _, values = _responses(task)
        idx = np.sort(rng.choice(len(tasks[task].examples), size=24, replace=False))
        tasks[task] = type(tasks[task])(
            task, tasks[task].lang, "", [tasks[task].examples[i] for i in idx]
        )
        scorer = Scorer({task: tasks[task]}, WORLD / "tasks", loaded["tokenizer"])
        for name in ("base", "math_en", "lang_it"):
            model = loaded["models"][name]
            if scorer.backend == "fallback":
                got = scorer.score(model, [task])[task]
            else:  # the evaluation package, on the same items of the shipped file
                from optuna_merge3 import evaluation

                full = evaluation.load_task(WORLD / MANIFEST["tasks"][task]["path"])
                result = evaluation.evaluate(model, loaded["tokenizer"], full, indices=idx)
                got = np.asarray(result.correct, dtype=bool)
            np.testing.assert_array_equal(got, values[models.index(name)][idx], err_msg=name)
