"""Build the XL tiny world: 4-layer models, 3 skill endpoints, 1,000-item targets, 104 references.

    python studies/tiny_world_xl/build_xl.py            # full build (~15-20 min on 1 CPU thread)
    python studies/tiny_world_xl/build_xl.py --quick    # smoke run: few steps, 40-item targets

Same machinery as ``studies/tiny_world/build_world.py`` (imported, not copied): the same training
loop, seeds, scorer and file formats, with the XL data of ``xl_data.py`` and a deeper model
(4 layers, MLP 256: one layer block per gene of a per-block search). Deterministic (explicit
seeds, one thread): two builds give the same bytes (``tests/test_tiny_world_xl.py`` builds the
quick variant twice).

Outputs (under ``--out``, default this folder): ``models/{base,add_en,mul_en,lang_it}/``,
``tasks/``, ``reference/<task>_responses.csv.gz`` and ``world.json``, as in the tiny world.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tiny_world"))
sys.path.insert(0, str(HERE))

from build_world import (  # noqa: E402
    FT_LR,
    FT_STEPS,
    build_args,
    log,
    model_entries,
    population_entry,
    random_merges,
    save_shipped,
    score_population,
    task_entries,
    task_scorer,
    train_world,
    versions,
    write_manifest,
)
from world_model import build_tokenizer, task_arithmetic  # noqa: E402
from xl_data import ENDPOINTS, MIXTURES, N_TARGET_ITEMS, TRAINING, build_tasks, xl_words  # noqa: E402

SHAPE = {"num_hidden_layers": 4, "intermediate_size": 256}
TASK_SEED = 22345


def blockwise_merges(
    states: dict, rng: np.random.Generator, n: int, low: float, high: float, tag: str
) -> dict:
    """Task-arithmetic merges with one weight per endpoint per layer, each in [low, high].

    The reference population's per-block merges: without them no reference model has the
    layer-dependent mixtures a per-block search visits.
    """
    eps = [states[name] for name in ENDPOINTS]
    layers = SHAPE["num_hidden_layers"]
    out = {}
    for i in range(n):
        w = rng.uniform(low, high, size=(len(ENDPOINTS), layers))
        if rng.random() < 0.3:  # sometimes one endpoint left out entirely
            w[int(rng.integers(len(ENDPOINTS)))] = 0.0
        name = f"merge_{tag}{i:02d}_" + "_".join(f"{v:.2f}" for v in w.mean(axis=1))
        out[name] = task_arithmetic(states["base"], eps, w.tolist())
    return out


def main(argv: list[str] | None = None) -> None:
    t_start = time.time()
    args = build_args(argv, __doc__, HERE, "1%% of the steps, 40-item targets")
    out: Path = args.out
    scale = 0.01 if args.quick else 1.0
    # the quick variant keeps every kind of reference model, fewer of each
    count = (lambda k: max(1, k // 8)) if args.quick else (lambda k: k)

    tokenizer = build_tokenizer(xl_words())
    scorer = task_scorer(
        build_tasks(TASK_SEED, 40 if args.quick else N_TARGET_ITEMS), out, tokenizer
    )
    tasks = scorer.tasks
    shape = {"endpoints": ENDPOINTS, "mixtures": MIXTURES, "model_shape": SHAPE}

    world = train_world(tokenizer, args.seed, scale, keep_checkpoints=True, **shape)
    model, states = world["model"], world["states"]
    shipped = save_shipped(world, ENDPOINTS, tokenizer, out)

    # A second world seed plays the public leaderboard's other models: its base, endpoints,
    # random merges and merges in the region where Italian math transfers (never the shipped
    # endpoints' own sweet spot).
    world2 = train_world(tokenizer, args.seed + 1, scale, keep_checkpoints=False, **shape)
    rng = np.random.default_rng(args.seed + 7)
    population: dict[str, dict] = dict(states)
    population.update(random_merges(states, rng, count(16), count(4), ENDPOINTS))
    population.update(blockwise_merges(states, rng, count(16), 0.0, 1.0, "block"))
    other = f"world{args.seed + 1}_"
    population.update({other + k: sd for k, sd in world2["states"].items()})
    merges2 = random_merges(world2["states"], rng, count(16), count(4), ENDPOINTS)
    merges2.update(blockwise_merges(world2["states"], rng, count(12), 0.0, 1.0, "block"))
    merges2.update(blockwise_merges(world2["states"], rng, count(12), 0.3, 0.9, "xl"))
    population.update({other + k: sd for k, sd in merges2.items()})

    correct = score_population(model, scorer, population, tasks, out)
    accuracy = {n: {t: round(float(correct[n][t].mean()), 4) for t in tasks} for n in shipped}
    for name in shipped:
        log(f"{name}: {accuracy[name]}")
    manifest = {
        "description": "XL tiny world of optuna-merge3 (issue 16): 3 skills, 1,000-item targets",
        "seed": args.seed,
        "quick": args.quick,
        "models": model_entries(
            shipped,
            lambda name: (
                TRAINING[name]
                + ("" if name == "base" else f"; from base, {FT_STEPS} steps, lr {FT_LR}")
            ),
        ),
        "model_shape": SHAPE,
        "n_parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": len(tokenizer),
        "tasks": task_entries(tasks),
        "accuracy": accuracy,
        "reference_population": population_entry(population, correct, tasks),
        "scoring_backend": scorer.backend,
        "build_seconds": round(time.time() - t_start, 1),
        "threads": args.threads,
        "versions": versions(),
    }
    write_manifest(out, manifest)


if __name__ == "__main__":
    main()
