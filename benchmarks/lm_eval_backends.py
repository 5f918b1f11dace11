"""lm-eval task evaluation on the live model: lm-eval's HFLM vs our batched generation.

Both backends of ``optuna_merge3.evaluation.evaluate_lm_eval`` score the tiny world's lm-eval
tasks (studies/tiny_world/lm_eval/, over the world's JSONL) on one live model that the merger
rewrites in memory; side by side in one run, on the same merges and items:

- a trial's work: a subset of 20 items per task (as ``n_items = 20`` in the study), and
- the Estimate step's work: all items of the task.

The native evaluation of the same items with the world's own task files (no lm-eval) is the
peer that shows what lm-eval's request / filter / metric layer costs. Correctness of every item is
compared across the three.

Usage: nice -n 10 python benchmarks/lm_eval_backends.py [--repeats 3] [--threads 1]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from optuna_merge3 import evaluation
from optuna_merge3.evaluation import evaluate_lm_eval
from optuna_merge3.merging import InMemoryMerger, MergeSpace

WORLD = Path(__file__).resolve().parents[1] / "studies" / "tiny_world"
TASKS = ("math_it", "qa_en")
MERGES = [{"weight/math_en": 0.75, "weight/lang_it": 0.5},
          {"weight/math_en": 1.0, "weight/lang_it": 0.0},
          {"weight/math_en": 0.4, "weight/lang_it": 1.1}]


def _best(fn, repeats: int) -> tuple[float, np.ndarray]:
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--subset", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    merge = {"method": "task_arithmetic", "base": str(WORLD / "models" / "base"),
             "endpoints": {n: str(WORLD / "models" / n) for n in ("math_en", "lang_it")},
             "search": {"weight": [0.0, 1.5]}}
    merger = InMemoryMerger(merge["base"], merge["endpoints"], MergeSpace.from_config(merge))
    model = merger.load_model().eval()
    tokenizer = merger.load_tokenizer()
    t0 = time.perf_counter()
    lm_tasks = {n: evaluation.load_lm_eval_task(
        f"tiny_{n}", include=WORLD / "lm_eval", task_name=n,
        data_files={"test": WORLD / "tasks" / f"{n}.jsonl"}) for n in TASKS}
    load_s = time.perf_counter() - t0
    native = {n: evaluation.load_task(WORLD / "tasks" / f"{n}.jsonl") for n in TASKS}
    rng = np.random.default_rng(0)
    bs = args.batch_size
    runners = {
        "lm-eval HFLM (harness)": lambda t, idx: evaluate_lm_eval(
            model, tokenizer, lm_tasks[t], idx, bs, backend="harness").correct,
        "our generate + lm-eval filters/metric (generate)": lambda t, idx: evaluate_lm_eval(
            model, tokenizer, lm_tasks[t], idx, bs, backend="generate").correct,
        "native task files (no lm-eval)": lambda t, idx: evaluation.evaluate(
            model, tokenizer, native[t], idx, batch_size=bs).correct,
    }
    seconds = {(r, s): 0.0 for r in runners for s in ("subset", "full")}
    items = {"subset": 0, "full": 0}
    disagree = {r: 0 for r in runners}
    for params in MERGES:
        merger.apply(params, model)
        for name in TASKS:
            n = len(native[name].items)
            for scope, idx in (("subset", rng.choice(n, args.subset, replace=False).tolist()),
                               ("full", list(range(n)))):
                items[scope] += len(idx)
                results = {}
                for runner, fn in runners.items():
                    s, results[runner] = _best(lambda fn=fn, idx=idx, t=name: fn(t, idx), args.repeats)
                    seconds[(runner, scope)] += s
                reference = results["lm-eval HFLM (harness)"]
                for runner, correct in results.items():
                    disagree[runner] += int((correct != reference).sum())
    rows = [{"backend": r,
             "subset_ms_per_call": round(1000 * seconds[(r, "subset")] / (len(MERGES) * len(TASKS)), 1),
             "full_items_per_s": round(items["full"] / seconds[(r, "full")], 1),
             "items_disagreeing_with_harness": disagree[r]} for r in runners]
    harness = rows[0]
    print(f"# lm_eval_backends: tiny world tasks {', '.join(TASKS)}, {len(MERGES)} live merges")
    print(f"torch {torch.__version__}, lm-eval {_lm_eval_version()}, {args.threads} thread(s), "
          f"{platform.processor() or platform.machine()}, batch size {bs}, best of "
          f"{args.repeats}; CPU only. Task load (both lm-eval tasks, once): {load_s:.1f} s\n")
    print(f"| backend | trial subset ({args.subset} items / task): ms per call | ratio | "
          "full task: items/s | ratio | items disagreeing with harness |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['backend']} | {r['subset_ms_per_call']:.1f} | "
              f"{r['subset_ms_per_call'] / harness['subset_ms_per_call']:.2f} | "
              f"{r['full_items_per_s']:.0f} | "
              f"{r['full_items_per_s'] / harness['full_items_per_s']:.2f} | "
              f"{r['items_disagreeing_with_harness']} of {items['subset'] + items['full']} |")
    print(json.dumps({"benchmark": "lm_eval_backends", "device": "cpu", "threads": args.threads,
                      "batch_size": bs, "load_s": round(load_s, 2), "items": items,
                      "rows": rows}))


def _lm_eval_version() -> str:
    import lm_eval

    return getattr(lm_eval, "__version__", "?")


if __name__ == "__main__":
    main()
