"""Build the embedded tiny world: models, tasks, reference population, manifest.

    python studies/tiny_world/build_world.py            # full build (~10 min on 1 CPU thread)
    python studies/tiny_world/build_world.py --quick    # smoke run with few steps (not shipped)

Deterministic: every weight comes from an explicit seed (``torch.manual_seed`` for the initial
weights, ``np.random.default_rng`` for the training batches and the random merges) and training
runs on one thread so floating-point summation order never changes.

Outputs (under ``--out``, default this folder):
    models/{base,math_en,lang_it,trivia_en}/   HF format (safetensors, config, tokenizer)
    tasks/<task>.jsonl + tasks/<task>.json     items and their scoring / generation config
    reference/<task>_responses.csv.gz         correctness of the reference population (0/1)
    world.json                                manifest: models, tasks, accuracies, merge grid
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from world_data import MIXTURES  # noqa: E402
from world_eval import Scorer  # noqa: E402
from world_model import (  # noqa: E402
    build_model,
    build_tokenizer,
    linear,
    save_model,
    state_dict_copy,
    task_arithmetic,
    train,
)
from world_tasks import build_tasks, task_config, write_task  # noqa: E402

ENDPOINTS = ("math_en", "lang_it", "trivia_en")
# DESIGN.md section 4's recipe: base 1500 steps at 3e-3 on the full sequence, fine-tunes 300 steps
# at 1e-3 on the answer only.
BASE_STEPS, BASE_LR, BASE_WARMUP = 1500, 3e-3, 100
FT_STEPS, FT_LR, FT_WARMUP = 300, 1e-3, 30
GRID = [0.0, 0.25, 0.5, 0.75, 1.0, 1.25, 1.5]  # task-arithmetic weights of the 7x7 grid
TARGET = "math_it"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def train_world(
    tokenizer,
    world_seed: int,
    steps_scale: float,
    keep_checkpoints: bool,
    *,
    endpoints: tuple[str, ...] = ENDPOINTS,
    mixtures: dict | None = None,
    model_shape: dict | None = None,
) -> dict:
    """Base + one fine-tune per endpoint of one world seed -> name -> fp32 state dict.

    ``mixtures`` (name -> sampler, with ``"base"``) and ``model_shape`` (``build_model``
    keywords) default to this world's; the XL world passes its own.
    """
    mixtures = MIXTURES if mixtures is None else mixtures
    vocab = tokenizer.get_vocab()
    model = build_model(
        len(vocab), vocab["<pad>"], vocab["<bos>"], vocab["<eos>"], world_seed,
        **(model_shape or {}),
    )  # fmt: skip
    states: dict[str, dict] = {}
    base_steps = max(2, int(BASE_STEPS * steps_scale))
    ft_steps = max(2, int(FT_STEPS * steps_scale))

    def keep(prefix: str):
        def on_checkpoint(step: int, m) -> None:
            states[f"{prefix}_step{step}"] = state_dict_copy(m)

        return on_checkpoint if keep_checkpoints else None

    log(f"world {world_seed}: base, {base_steps} steps")
    train(
        model, tokenizer, mixtures["base"], steps=base_steps, lr=BASE_LR,
        warmup=min(BASE_WARMUP, base_steps // 2), seed=1000 * world_seed + 1,
        answer_only=False, checkpoint_every=base_steps // 5, on_checkpoint=keep("base"), log=log,
    )  # fmt: skip
    states["base"] = state_dict_copy(model)
    states.pop(f"base_step{base_steps}", None)
    for j, name in enumerate(endpoints):
        for data_seed in (0, 1) if keep_checkpoints else (0,):
            tag = name if data_seed == 0 else f"{name}_data{data_seed}"
            log(f"world {world_seed}: {tag}, {ft_steps} steps")
            model.load_state_dict(states["base"])
            train(
                model, tokenizer, mixtures[name], steps=ft_steps, lr=FT_LR,
                warmup=min(FT_WARMUP, ft_steps // 2),
                seed=1000 * world_seed + 100 * (j + 1) + data_seed, answer_only=True,
                checkpoint_every=ft_steps // 4 if data_seed == 0 else None,
                on_checkpoint=keep(name) if data_seed == 0 else None, log=log,
            )  # fmt: skip
            states[tag] = state_dict_copy(model)
            states.pop(f"{name}_step{ft_steps}", None)
    model.load_state_dict(states["base"])
    return {"model": model, "states": states}


def random_merges(
    states: dict,
    rng: np.random.Generator,
    n_ta: int,
    n_linear: int,
    endpoints: tuple[str, ...] = ENDPOINTS,
) -> dict:
    """Random task-arithmetic and linear merges of the endpoints (reference population).

    Task-arithmetic weights are a Dirichlet split of a total drawn in [0.5, 1.5] over a random
    pair or all three endpoints: uniform weights per endpoint put most merges where the summed
    task vectors wreck the model (every task at 0%), which tells IRT nothing about the items.
    """
    eps = [states[name] for name in endpoints]
    out = {}
    for i in range(n_ta):
        active = np.ones(len(endpoints), dtype=bool)
        if rng.random() < 0.5:  # a random pair of endpoints
            active[int(rng.integers(len(endpoints)))] = False
        w = np.zeros(len(endpoints))
        w[active] = rng.dirichlet(np.ones(int(active.sum()))) * rng.uniform(0.5, 1.5)
        out[f"merge_ta{i:02d}_" + "_".join(f"{v:.2f}" for v in w)] = task_arithmetic(
            states["base"], eps, w.tolist()
        )
    for i in range(n_linear):
        w = rng.dirichlet(np.ones(len(endpoints)))
        out[f"merge_lin{i:02d}_" + "_".join(f"{v:.2f}" for v in w)] = linear(eps, w.tolist())
    return out


def transfer_merges(states: dict, rng: np.random.Generator, n: int) -> dict:
    """Task-arithmetic merges of math_en and lang_it around the cross-lingual sweet spot."""
    eps = [states["math_en"], states["lang_it"]]
    out = {}
    for i in range(n):
        w = [float(rng.uniform(0.4, 1.0)), float(rng.uniform(0.3, 0.9))]
        name = f"merge_xl{i:02d}_{w[0]:.2f}_{w[1]:.2f}_0.00"
        out[name] = task_arithmetic(states["base"], eps, w)
    return out


def merge_grid(model, scorer: Scorer, states: dict, task: str = TARGET) -> dict:
    """Accuracy on ``task`` of base + w_math tv_math + w_it tv_it over GRID x GRID."""
    eps = [states["math_en"], states["lang_it"]]
    table = np.zeros((len(GRID), len(GRID)))
    for i, w_math in enumerate(GRID):
        for j, w_it in enumerate(GRID):
            model.load_state_dict(task_arithmetic(states["base"], eps, [w_math, w_it]))
            table[i, j] = scorer.score(model, [task])[task].mean()
    model.load_state_dict(states["base"])
    ends = {}
    for name in ("base", "math_en", "lang_it"):
        model.load_state_dict(states[name])
        ends[name] = float(scorer.score(model, [task])[task].mean())
    model.load_state_dict(states["base"])
    i, j = np.unravel_index(int(np.argmax(table)), table.shape)
    best_endpoint = max(ends["math_en"], ends["lang_it"])
    return {
        "task": task,
        "weights": GRID,
        "rows": "math_en weight",
        "cols": "lang_it weight",
        "accuracy": table.round(4).tolist(),
        "endpoints": ends,
        "best": {"math_en": GRID[i], "lang_it": GRID[j], "accuracy": float(table[i, j])},
        "gain_over_best_endpoint": float(table[i, j] - best_endpoint),
        "cells_10_points_above": int((table >= best_endpoint + 0.10).sum()),
    }


def write_responses(path: Path, item_ids: list[str], rows: dict[str, np.ndarray]) -> None:
    """models x items 0/1 CSV, gzipped with a fixed mtime so rebuilds are byte-identical."""
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        text = [["model", *item_ids]] + [
            [name, *(str(int(v)) for v in correct)] for name, correct in rows.items()
        ]
        import io

        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(text)
        gz.write(buf.getvalue().encode())


def build_args(argv: list[str] | None, doc: str, out: Path, quick: str) -> argparse.Namespace:
    """The build command line (``--out --seed --threads --quick``); sets threads and logging."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=out)
    parser.add_argument("--seed", type=int, default=0, help="world seed of the shipped models")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help=quick)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _quiet_transformers()
    return args


def save_shipped(world: dict, endpoints: tuple[str, ...], tokenizer, out: Path) -> list[str]:
    """Save base + endpoints under ``models/``; the live model is left holding the base."""
    model, states = world["model"], world["states"]
    shipped = ["base", *endpoints]
    for name in shipped:
        model.load_state_dict(states[name])
        save_model(model, tokenizer, out / "models" / name)
    model.load_state_dict(states["base"])
    log(f"saved {shipped}")
    return shipped


def task_scorer(tasks: dict, out: Path, tokenizer) -> Scorer:
    """Write ``tasks/<task>.jsonl`` + ``.json`` and return the scorer reading them."""
    for task in tasks.values():
        write_task(task, out / "tasks")
    scorer = Scorer(tasks, out / "tasks", tokenizer)
    log(f"{len(tokenizer)} tokens, tasks {[(n, len(t.examples)) for n, t in tasks.items()]}, "
        f"scoring with {scorer.backend}")  # fmt: skip
    return scorer


def main(argv: list[str] | None = None) -> None:
    t_start = time.time()
    args = build_args(argv, __doc__, HERE, "5%% of the steps (smoke test)")
    out: Path = args.out
    scale = 0.05 if args.quick else 1.0

    tokenizer = build_tokenizer()
    tasks = build_tasks(seed=12345)
    scorer = task_scorer(tasks, out, tokenizer)

    world = train_world(tokenizer, args.seed, scale, keep_checkpoints=True)
    model, states = world["model"], world["states"]
    shipped = save_shipped(world, ENDPOINTS, tokenizer, out)

    # A second world seed: its base and endpoints join the reference population and repeat the
    # cross-lingual grid (is the transfer a property of the recipe or of one seed?).
    world2 = train_world(tokenizer, args.seed + 1, scale, keep_checkpoints=False)
    rng = np.random.default_rng(args.seed + 7)
    population: dict[str, dict] = dict(states)
    population.update(random_merges(states, rng, n_ta=16, n_linear=4))
    for name, sd in world2["states"].items():
        population[f"world{args.seed + 1}_{name}"] = sd
    for name, sd in random_merges(world2["states"], rng, n_ta=12, n_linear=4).items():
        population[f"world{args.seed + 1}_{name}"] = sd
    # Like a public leaderboard holding models that can do Italian math, the other world
    # contributes math_en + lang_it merges from the region where they transfer: without them no
    # reference model solves the target's items with operands >= 5 and IRT learns nothing about
    # them. The shipped world's own endpoints are never merged in that region here.
    for name, sd in transfer_merges(world2["states"], rng, n=8).items():
        population[f"world{args.seed + 1}_{name}"] = sd

    correct = score_population(model, scorer, population, tasks, out)

    log("cross-lingual merge grids")
    grids = {f"world{args.seed}": merge_grid(model, scorer, states)}
    grids[f"world{args.seed + 1}"] = merge_grid(world2["model"], scorer, world2["states"])
    for key, grid in grids.items():
        log(f"{key}: endpoints {grid['endpoints']} best {grid['best']} "
            f"gain {grid['gain_over_best_endpoint']:+.3f}")  # fmt: skip

    manifest = {
        "description": "Embedded tiny world of optuna-merge3 (DESIGN.md section 4's recipe)",
        "seed": args.seed,
        "quick": args.quick,
        "models": model_entries(shipped, _training_summary),
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "tasks": task_entries(tasks),
        "accuracy": {
            name: {t: round(float(correct[name][t].mean()), 4) for t in tasks} for name in shipped
        },
        "reference_population": population_entry(population, correct, tasks),
        "merge_grid": grids,
        "scoring_backend": scorer.backend,
        "build_seconds": round(time.time() - t_start, 1),
        "threads": args.threads,
        "versions": versions(),
    }
    write_manifest(out, manifest)


def score_population(model, scorer: Scorer, population: dict, tasks: dict, out: Path) -> dict:
    """Score every reference model on every task; write ``reference/<task>_responses.csv.gz``."""
    log(f"scoring {len(population)} reference models on {len(tasks)} tasks")
    correct: dict[str, dict[str, np.ndarray]] = {}
    for name, sd in population.items():
        model.load_state_dict(sd)
        correct[name] = scorer.score(model)
    (out / "reference").mkdir(parents=True, exist_ok=True)
    for task_name, task in tasks.items():
        write_responses(
            out / "reference" / f"{task_name}_responses.csv.gz",
            task.item_ids,
            {name: c[task_name] for name, c in correct.items()},
        )
    return correct


def model_entries(shipped: list[str], training) -> dict:
    """The manifest's ``models`` table; ``training(name)`` describes how a model was trained."""
    return {
        name: {
            "path": f"models/{name}",
            "role": "base" if name == "base" else "endpoint",
            "training": training(name),
        }
        for name in shipped
    }


def task_entries(tasks: dict) -> dict:
    """The manifest's ``tasks`` table: files, size and scoring config of every task."""
    return {
        name: {
            "path": f"tasks/{name}.jsonl",
            "config": f"tasks/{name}.json",
            "n_items": len(task.examples),
            "reference": f"reference/{name}_responses.csv.gz",
            **{k: v for k, v in task_config(task).items() if k != "name"},
        }
        for name, task in tasks.items()
    }


def population_entry(population: dict, correct: dict, tasks: dict) -> dict:
    """The manifest's ``reference_population``: each model's kind and accuracies."""
    return {
        "n_models": len(population),
        "models": {name: _kind(name) for name in population},
        "accuracy": {
            name: {t: round(float(c[t].mean()), 4) for t in tasks} for name, c in correct.items()
        },
    }


def versions() -> dict:
    import tokenizers
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "numpy": np.__version__,
    }


def write_manifest(out: Path, manifest: dict) -> None:
    with open(out / "world.json", "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    log(f"done in {manifest['build_seconds']:.0f}s")


def _kind(name: str) -> str:
    """What a reference model is (lets users fit IRT on a chosen part of the population)."""
    prefix = "other_world_" if name.startswith("world") else ""
    name = name.split("_", 1)[1] if prefix else name
    if name.startswith("merge_"):
        return prefix + "merge"
    if "_step" in name:
        return prefix + ("base_checkpoint" if name.startswith("base") else "endpoint_checkpoint")
    if "_data" in name:
        return prefix + "endpoint_other_data_seed"
    return prefix + ("base" if name == "base" else "endpoint")


def _training_summary(name: str) -> str:
    if name == "base":
        return (
            f"{BASE_STEPS} steps, batch 64, AdamW lr {BASE_LR} cosine, full-sequence loss; 50% "
            "English QA, 15% Italian QA (half the facts), 20% English math (operands 0-4), "
            "15% Italian math answered in English (operands 0-4)"
        )
    data = {
        "math_en": "English math, operands 0-9",
        "lang_it": "70% Italian QA (all facts) + 30% Italian counting stories (no arithmetic)",
        "trivia_en": "English trivia (tools, workplaces, animal homes)",
    }[name]
    return f"from base, {FT_STEPS} steps, batch 64, lr {FT_LR}, answer-only loss; {data}"


def _quiet_transformers() -> None:
    """No per-file progress bars or warnings from transformers in the build log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


if __name__ == "__main__":
    main()
