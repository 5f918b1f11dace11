"""Items per second of ``optuna_merge3.evaluation.evaluate``: batched vs one-by-one, on CPU.

Model: the embedded tiny world's trained math endpoint (Llama, 0.58M parameters, fp32) on its 200-item
English math task; answers of every batch size are compared with one-by-one decoding. No GPU run
here: the larger-model GPU measurement of issue 4 runs only when CUDA is available.

Usage: python benchmarks/eval_speed.py [--repeats 3] [--threads 1]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch
import transformers

from optuna_merge3.evaluation import evaluate, load_task

WORLD = Path(__file__).resolve().parents[1] / "studies" / "tiny_world"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default=str(WORLD / "models" / "math_en"))
    parser.add_argument("--task", default=str(WORLD / "tasks" / "math_en.jsonl"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype="float32").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(args.model)
    task = load_task(args.task)
    n = len(task.items)
    rows = []
    reference = None
    for batch_size in (1, 8, 32, 200):
        best = float("inf")
        for _ in range(args.repeats):
            res = evaluate(model, tokenizer, task, batch_size=batch_size)
            best = min(best, res.seconds)
        if reference is None:
            reference = res.answers
        same = res.answers == reference
        rows.append(
            {
                "batch_size": batch_size,
                "seconds": round(best, 4),
                "items_per_s": round(n / best, 1),
                "accuracy": round(float(res.correct.mean()), 3),
                "same_as_one_by_one": same,
            }
        )
    print(f"# eval_speed: {Path(args.task).name}, {n} items, model {Path(args.model).name}")
    print(
        f"torch {torch.__version__}, transformers {transformers.__version__}, "
        f"{args.threads} thread(s), {platform.processor() or platform.machine()}, "
        f"best of {args.repeats}; CPU only (no GPU in this run)\n"
    )
    print("| batch size | seconds | items/s | speed-up | accuracy | same as 1-by-1 |")
    print("|---:|---:|---:|---:|---:|:---:|")
    base = rows[0]["seconds"]
    for r in rows:
        print(
            f"| {r['batch_size']} | {r['seconds']:.3f} | {r['items_per_s']:.1f} | "
            f"{base / r['seconds']:.1f}x | {r['accuracy']:.3f} | {r['same_as_one_by_one']} |"
        )
    print(
        json.dumps(
            {
                "benchmark": "eval_speed",
                "device": "cpu",
                "n_items": n,
                "threads": args.threads,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
