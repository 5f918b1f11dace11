"""Cross-lingual transfer in the tiny world: a task-arithmetic grid over the two endpoints.

    python studies/tiny_world/merge_grid.py [--task math_it] [--also qa_en]

Loads the SHIPPED base, ``math_en`` and ``lang_it`` models, merges them in memory as
``base + w_math (math_en - base) + w_it (lang_it - base)`` for every pair of weights of a 7x7 grid,
and prints the accuracy table on the Italian math target, the endpoints, and the best merge
against issue 6's bar (best merge >= 10 points above both endpoints).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from build_world import GRID  # noqa: E402
from world_eval import Scorer  # noqa: E402
from world_model import state_dict_copy, task_arithmetic  # noqa: E402
from world_tasks import build_tasks  # noqa: E402

BAR = 0.10  # issue 6, item 4


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--world", type=Path, default=HERE, help="folder of a built world")
    parser.add_argument("--task", default="math_it")
    parser.add_argument("--also", nargs="*", default=["qa_en"], help="tasks shown for the best")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    _quiet_transformers()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    t0 = time.time()
    models = args.world / "models"
    tokenizer = AutoTokenizer.from_pretrained(models / "base")
    model = AutoModelForCausalLM.from_pretrained(models / "base", dtype=torch.float32).eval()
    states = {"base": state_dict_copy(model)}
    for name in ("math_en", "lang_it"):
        states[name] = state_dict_copy(AutoModelForCausalLM.from_pretrained(models / name))
    tasks = build_tasks(seed=12345)
    scorer = Scorer(tasks, args.world / "tasks", tokenizer)

    def accuracy(state: dict, task: str) -> float:
        model.load_state_dict(state)
        return float(scorer.score(model, [task])[task].mean())

    ends = {name: accuracy(sd, args.task) for name, sd in states.items()}
    eps = [states["math_en"], states["lang_it"]]
    table = np.array(
        [[accuracy(task_arithmetic(states["base"], eps, [wm, wi]), args.task) for wi in GRID]
         for wm in GRID]
    )  # fmt: skip
    best_endpoint = max(ends["math_en"], ends["lang_it"])
    i, j = np.unravel_index(int(np.argmax(table)), table.shape)
    best_state = task_arithmetic(states["base"], eps, [GRID[i], GRID[j]])
    others = {t: accuracy(best_state, t) for t in args.also}
    others_ends = {t: {n: accuracy(sd, t) for n, sd in states.items()} for t in args.also}

    print(f"{args.task} accuracy (%) of base + w_math*tv(math_en) + w_it*tv(lang_it)")
    print(f"scoring: {scorer.backend}")
    print("w_math \\ w_it " + "".join(f"{w:>7.2f}" for w in GRID))
    for wm, row in zip(GRID, table, strict=True):
        print(f"{wm:>13.2f} " + "".join(f"{100 * v:>7.1f}" for v in row))
    print("endpoints: " + ", ".join(f"{n} {100 * v:.1f}" for n, v in ends.items()))
    gain = table[i, j] - best_endpoint
    print(
        f"best merge: w_math={GRID[i]} w_it={GRID[j]} -> {100 * table[i, j]:.1f}% "
        f"({100 * gain:+.1f} points over the best endpoint; bar +{100 * BAR:.0f}: "
        f"{'PASS' if gain >= BAR else 'FAIL'})"
    )
    print(f"cells >= {100 * BAR:.0f} points above the best endpoint: "
          f"{int((table >= best_endpoint + BAR).sum())} of {table.size}")  # fmt: skip
    for t in args.also:
        shown = ", ".join(f"{n} {100 * v:.1f}" for n, v in others_ends[t].items())
        print(f"{t}: best merge {100 * others[t]:.1f}% ({shown})")
    result = {
        "task": args.task,
        "endpoints": ends,
        "best": {"math_en": GRID[i], "lang_it": GRID[j], "accuracy": float(table[i, j])},
        "gain_over_best_endpoint": float(gain),
        "passes_bar": bool(gain >= BAR),
        "seconds": round(time.time() - t0, 1),
    }
    print(json.dumps(result))
    return result


def _quiet_transformers() -> None:
    """No per-file progress bars or warnings from transformers in the build log."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


if __name__ == "__main__":
    main()
