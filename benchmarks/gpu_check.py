"""A short 7B study on one GPU: peak device memory, seconds per trial, trials per hour (issue 17).

Ready for the day a GPU is lent. It writes random-weight bf16 checkpoints with Mistral-7B's
shape (``--layers`` 32 = the full 7B: base + 3 endpoints are ~58 GB of disk; it refuses with the
numbers where the disk is smaller), a random-token task (``--items`` prompts of random words,
256 new tokens, nothing to answer right) with a random reference population, and runs the real
pipeline through ``StudyRunner``: memory plan, Extract + Estimate, then ``--trials`` NSGA-II
trials of 20 items each, for ties and for dare_ties, into an nf4 live model on ``cuda``.

Per method it reports ``torch.cuda.max_memory_allocated`` over the study (load, Estimate and
trials), the plan's predicted device footprint, the median seconds per trial split into merge /
generate / estimate (the trial's ``seconds/*`` user attributes) and trials per hour.

``--quick`` runs the same pipeline on CPU at a tiny shape (the tests run it so that it never
rots): there the memory column is the process's peak ``RssAnon`` (no CUDA), and nothing in it
says anything about a GPU.

The plan is made for a 24 GB GPU (``--device-memory-gb 24``) whatever the lent device has, so
the run also checks that the study fits an RTX 4090's budget; the measured peak is the truth.

Usage: python benchmarks/gpu_check.py [--root DIR] [--layers 32] [--trials 8]
       python benchmarks/gpu_check.py --quick
On a GPU machine with a 64 GB disk the full 32 layers (~54 GiB of checkpoints) may not fit: it
refuses with the numbers; ``--layers 24`` (~41 GiB) then keeps the 7B layer shape.
Prints a markdown table and ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import csv
import gc
import gzip
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from merge_scale import ENDPOINTS, GIB, MISTRAL, TINY, PeakSampler, make_checkpoints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER = ROOT / "studies" / "tiny_world" / "models" / "base"
METHODS = ("ties", "dare_ties")
# bitsandbytes' CPU 4-bit forward needs in_features divisible by its blocksize (64).
QUICK = {**TINY, "intermediate_size": 256}


def checkpoint_bytes(shape: dict[str, int], layers: int) -> int:
    h, kv = shape["hidden_size"], shape["hidden_size"] * shape["num_key_value_heads"] // \
        shape["num_attention_heads"]
    per_layer = 2 * h * h + 2 * kv * h + 3 * h * shape["intermediate_size"] + 2 * h
    return 2 * (2 * shape["vocab_size"] * h + h + layers * per_layer)


def make_world(root: Path, shape: dict[str, int], layers: int, n_items: int,
               max_new_tokens: int, seed: int = 0) -> tuple[str, dict[str, str], Path]:
    """Checkpoints (with the tiny world's word-level tokenizer), task and reference files."""
    need = 4 * checkpoint_bytes(shape, layers)
    free = shutil.disk_usage(root).free
    if need > 0.95 * free:
        raise SystemExit(f"{root}: base + 3 endpoints need {need / GIB:.1f} GiB, the disk has "
                         f"{free / GIB:.1f} GiB free; use fewer --layers")
    make_checkpoints(root, shape, [layers])
    models = root / f"L{layers}"
    for model in ("base", *ENDPOINTS):
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(TOKENIZER / name, models / model / name)
    rng = np.random.default_rng(seed)
    words = [w for w in json.loads((TOKENIZER / "tokenizer.json").read_text())["model"]["vocab"]
             if not w.startswith("<")]
    tasks = root / "tasks"
    tasks.mkdir(exist_ok=True)
    ids = [f"rnd-{i:04d}" for i in range(n_items)]
    with (tasks / "random.jsonl").open("w") as handle:
        for item in ids:
            prompt = " ".join(rng.choice(words, size=24))
            handle.write(json.dumps({"id": item, "prompt": prompt,
                                     "answer": str(int(rng.integers(100)))}) + "\n")
    (tasks / "random.json").write_text(json.dumps(
        {"name": "random", "scorer": "number", "max_new_tokens": max_new_tokens, "stop": []}))
    ability, difficulty = rng.normal(size=40), rng.normal(size=n_items)
    correct = rng.random((40, n_items)) < 1 / (1 + np.exp(difficulty - ability[:, None]))
    with gzip.open(tasks / "random_responses.csv.gz", "wt", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["model", *ids])
        writer.writerows([f"ref{m}", *map(int, row)] for m, row in enumerate(correct))
    return str(models / "base"), {e: str(models / e) for e in ENDPOINTS}, tasks


def study_config(root: Path, method: str, base: str, endpoints: dict[str, str], tasks: Path,
                 args: argparse.Namespace) -> Any:
    from optuna_merge3.config import StudyConfig

    raw = {
        "study": {"name": f"gpu_check_{method}", "out_dir": str(root / "runs" / method),
                  "n_trials": args.trials, "seed": 0},
        "sampler": {"name": "nsga2", "population_size": 4},
        "merge": {"method": method, "base": base, "endpoints": endpoints,
                  "search": {"weight": [0.0, 1.0], "density": [0.2, 0.8]},
                  "memory": args.memory,
                  **({"device_memory_gb": args.device_memory_gb} if args.device_memory_gb else {})},
        "irt": {"n_dims": 2},
        "evaluation": {"device": args.device, "dtype": "bfloat16", "quantization": "nf4",
                       "batch_size": args.batch_size, "threads": 0 if args.device != "cpu" else 1},
        "tasks": [{"name": "random", "path": str(tasks / "random.jsonl"),
                   "reference": str(tasks / "random_responses.csv.gz"), "n_items": 20}],
    }
    return StudyConfig.from_dict(raw, root)


def run_method(root: Path, method: str, world: tuple, args: argparse.Namespace) -> dict[str, Any]:
    import optuna
    import torch
    from optuna.trial import TrialState

    from optuna_merge3.runner import StudyRunner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cuda = args.device != "cpu"
    sampler = None if cuda else PeakSampler()
    if cuda:
        gc.collect()  # the previous method's live model and merger
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    else:
        sampler.reset()
    runner = StudyRunner(study_config(root, method, *world, args), progress=print)
    runner.check()
    plan = runner.memory_plan.chosen
    started = time.perf_counter()
    study = runner.run()
    wall = time.perf_counter() - started
    trials = [t for t in study.trials if t.state == TrialState.COMPLETE]
    seconds = [(t.datetime_complete - t.datetime_start).total_seconds() for t in trials]
    part = {k: statistics.median(t.user_attrs[f"seconds/{k}"] for t in trials)
            for k in ("merge", "generate", "estimate")}
    peak = torch.cuda.max_memory_allocated() / GIB if cuda else sampler.peak["RssAnon"]
    del runner
    return {"method": method, "device": args.device, "peak_gb": peak,
            "peak_kind": "cuda max_memory_allocated" if cuda else "host peak RssAnon (CPU run)",
            "plan_gb": plan.device_gb if cuda else plan.host_gb, "plan_mode": plan.label,
            "n_complete": len(trials), "s_per_trial": statistics.median(seconds),
            **{f"{k}_s": v for k, v in part.items()},
            "other_s": statistics.median(seconds) - sum(part.values()),
            "trials_per_hour": 3600 / statistics.median(seconds), "study_wall_s": wall}


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| method | device | plan mode | plan GB | peak GB (what) | complete trials | "
             "s / trial | merge s | generate s | estimate s | other s | trials / hour |",
             "|---|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['device']} | {r['plan_mode']} | {r['plan_gb']:.1f} | "
                     f"{r['peak_gb']:.2f} ({r['peak_kind']}) | {r['n_complete']} | "
                     f"{r['s_per_trial']:.1f} | {r['merge_s']:.2f} | {r['generate_s']:.1f} | "
                     f"{r['estimate_s']:.2f} | {r['other_s']:.2f} | "
                     f"{r['trials_per_hour']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape on CPU (tests)")
    parser.add_argument("--root", help="work folder (default: a temporary one, removed)")
    parser.add_argument("--layers", type=int, default=32)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--items", type=int, default=40, help="task items (20 per trial)")
    parser.add_argument("--batch-size", type=int, default=20)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--device-memory-gb", type=float, default=24.0,
                        help="[merge] device_memory_gb: plan for a 24 GB consumer GPU (0: the "
                             "device's own memory)")
    parser.add_argument("--memory", default="auto", choices=("auto", "resident", "stream"),
                        help="[merge] memory (--quick: stream, the path a 7B study takes)")
    args = parser.parse_args(argv)
    if args.quick:
        args.layers, args.device, new_tokens, shape = 2, "cpu", 8, QUICK
        args.memory = "stream"
    else:
        new_tokens, shape = 256, MISTRAL
        import torch

        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise SystemExit("no CUDA device: this check needs a GPU (--quick runs on CPU)")
    root = Path(args.root or tempfile.mkdtemp(prefix="gpu_check_"))
    root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    try:
        world = make_world(root, shape, args.layers, args.items, new_tokens)
        rows = [run_method(root, method, world, args) for method in METHODS]
    finally:
        if not args.root:
            shutil.rmtree(root, ignore_errors=True)
    print(markdown(rows))
    print(json.dumps({"benchmark": "gpu_check", "quick": args.quick, "layers": args.layers,
                      "max_new_tokens": new_tokens, "rows": rows,
                      "wall_s": time.perf_counter() - started}))


if __name__ == "__main__":
    main()
