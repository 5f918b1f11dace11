"""Seconds per trial to a merged model ready to evaluate: ours vs MergeKit, on CPU (issue 3).

A random-init Llama (default: hidden 1024, 8 layers, intermediate 2816, vocab 32000, untied
lm_head: 168M parameters, the size of the issue's reference numbers) is written as safetensors in
a temporary directory: ``base`` (N(0, 0.02) weights, norms 1) and three endpoints ``ep<j>`` = base
+ N(0, 0.002) task vectors, all in bf16 (``--dtype float32`` for fp32). Three paths per method:

* (a) ours: ``InMemoryMerger.apply(params, model)`` writes the merge into a live transformers
  model (inputs resident on the device, nothing cached between trials; ``rng="mergekit"``).
  One warm-up trial, then the median of ``--trials``
  trials with different coefficients.
* (d), DARE / DELLA only: (a) with ``rng="counter"`` (hash masks, the merger's default). Its
  bit-identity is checked against ``merge_state_dicts`` given the same masks through the hook
  ``InMemoryMerger.mergekit_bernoulli``.
* (b) MergeKit 0.1.5's in-memory API: ``merge_state_dicts`` on the state dicts (loaded once) +
  ``model.load_state_dict``.
* (c) Mergenetic's path: MergeKit ``run_merge`` to disk + ``AutoModelForCausalLM.from_pretrained``.

Every (path, method) runs in its own subprocess so that its peak RSS (``VmHWM``; file pages of
the memory-mapped checkpoints count) is its own. The bandwidth bound of a trial is the bytes that
must move -- read every input once (base + endpoints), write the merged model once -- divided by
the copy bandwidth measured in this run (``dst.copy_(src)`` of a 512 MiB tensor: bytes read +
bytes written per second). All three paths use the same genotypes and DARE / DELLA seed, and the
merged weights are hashed to check that they are bit-identical across paths.

Usage: python benchmarks/merge_speed.py [--quick] [--threads 1] [--trials 3] [--mk-trials 1]
       [--methods ...] [--paths abcd]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

METHODS = ("task_arithmetic", "ties", "dare_ties", "slerp", "della")
ENDPOINTS = ("ep0", "ep1", "ep2")
# Searched coefficients: densities below 1 so that TIES / DARE / DELLA really sparsify.
SEARCH: dict[str, dict[str, list[float]]] = {
    "task_arithmetic": {"weight": [0.0, 1.0]},
    "ties": {"weight": [0.0, 1.0], "density": [0.2, 0.8]},
    "dare_ties": {"weight": [0.0, 1.0], "density": [0.2, 0.8]},
    "slerp": {"t": [0.0, 1.0]},
    "della": {"weight": [0.0, 1.0], "density": [0.3, 0.7]},
}
# Our paths: worker -> DARE / DELLA masks (``rng``); "d" runs for RANDOM_METHODS only.
OURS = {"a": "mergekit", "d": "counter"}
RANDOM_METHODS = ("dare_ties", "della")
GOALS = {"b_over_a": 5.0, "c_over_a": 20.0, "a_over_bound": 3.0}
DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


# -- setup ----------------------------------------------------------------------------------------
def llama_config(args: argparse.Namespace) -> Any:
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
        num_hidden_layers=args.layers, num_attention_heads=args.heads,
        num_key_value_heads=args.heads, max_position_embeddings=2048,
        tie_word_embeddings=False, dtype=args.dtype,
    )


def make_checkpoints(root: Path, args: argparse.Namespace) -> tuple[int, int]:
    """Write base + endpoints; return (parameters, bytes of one checkpoint)."""
    from safetensors.torch import save_file
    from transformers import LlamaForCausalLM

    config = llama_config(args)
    config.architectures = ["LlamaForCausalLM"]  # what save_pretrained of a model writes
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in LlamaForCausalLM(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    dtype = DTYPES[args.dtype]
    base = {k: torch.ones(s) if k.endswith("norm.weight") else 0.02 * torch.randn(s, generator=gen)
            for k, s in sorted(shapes.items())}
    for name in ("base", *ENDPOINTS):
        out = root / name
        out.mkdir(parents=True)
        config.save_pretrained(str(out))
        if name == "base":
            tensors = {k: v.to(dtype) for k, v in base.items()}
        else:
            tensors = {k: (v + 0.002 * torch.randn(v.shape, generator=gen)).to(dtype)
                       for k, v in base.items()}
        save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    n_params = sum(int(np.prod(s)) for s in shapes.values())
    return n_params, n_params * torch.finfo(dtype).bits // 8


def copy_bandwidth(n_bytes: int = 512 << 20, repeats: int = 7) -> float:
    """Bytes read + written per second by ``dst.copy_(src)`` (median of ``repeats``)."""
    src = torch.ones(n_bytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    dst.copy_(src)  # fault the pages in
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        dst.copy_(src)
        times.append(time.perf_counter() - start)
    return 2 * n_bytes / statistics.median(times)


def space_for(method: str) -> Any:
    from optuna_merge3.merging import MergeSpace

    endpoints = ENDPOINTS[:2] if method == "slerp" else ENDPOINTS
    return MergeSpace(method, list(endpoints), search=SEARCH[method], has_base=method != "slerp")


def genotype(space: Any, index: int) -> dict[str, float]:
    """Trial ``index``'s coefficients, drawn uniformly inside the bounds (same for every path)."""
    rng = np.random.default_rng(1000 + index)
    return {n: float(rng.uniform(d.low, d.high)) for n, d in space.distributions().items()}


# -- workers (one subprocess per path and method) -------------------------------------------------
def vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def weights_digest(model: Any) -> str:
    digest = hashlib.blake2b(digest_size=8)
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def paths_of(root: Path, method: str) -> tuple[str | None, dict[str, str]]:
    endpoints = ENDPOINTS[:2] if method == "slerp" else ENDPOINTS
    base = None if method == "slerp" else str(root / "base")
    return base, {e: str(root / e) for e in endpoints}


def worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    root, method, dtype = Path(args.root), args.method, DTYPES[args.dtype]
    space = space_for(method)
    base, endpoints = paths_of(root, method)
    n_trials = args.trials if args.worker in OURS else args.mk_trials
    started = time.perf_counter()
    if args.worker in OURS:
        from optuna_merge3.merging import InMemoryMerger

        merger = InMemoryMerger(base, endpoints, space, dtype=dtype, rng=OURS[args.worker])
        model = merger.load_model()
        setup = {"load_s": time.perf_counter() - started}
        trial = merger.apply  # apply(params, model, seed)
        warm = time.perf_counter()
        merger.apply(genotype(space, 0), model, seed=0)
        setup["warmup_trial_s"] = time.perf_counter() - warm
    else:
        from transformers import AutoModelForCausalLM

        if args.worker == "b":
            from mergekit.merge_methods.api import merge_state_dicts
            from safetensors.torch import load_file

            ids = dict(endpoints) | ({"base": base} if base else {})
            models = {i: load_file(str(Path(p) / "model.safetensors")) for i, p in ids.items()}
            model = AutoModelForCausalLM.from_pretrained(base or endpoints[ENDPOINTS[0]],
                                                         dtype=dtype).eval()

            by_path = {p: i for i, p in ids.items()}

            def mk_merge(params: dict[str, float], seed: int, **options: Any) -> dict[str, Any]:
                config = space.to_mergekit_config(params, base, endpoints, args.dtype)
                parameters: dict[str, Any] = dict(config.get("parameters", {}))
                for entry in config["models"]:
                    for key, value in entry.get("parameters", {}).items():
                        parameters.setdefault(key, {})[by_path[entry["model"]]] = value
                torch.manual_seed(seed)  # MergeKit draws DARE / DELLA masks from the global RNG
                with torch.no_grad():
                    return merge_state_dicts(models, method, parameters=parameters,
                                             base=by_path[config["base_model"]], **options)

            def trial(params: dict[str, float], live: Any, seed: int) -> dict[str, float]:
                t0 = time.perf_counter()
                merged = mk_merge(params, seed)
                t1 = time.perf_counter()
                live.load_state_dict(merged)
                return {"merge_s": t1 - t0, "write_s": time.perf_counter() - t1}
        else:
            from mergekit.config import MergeConfiguration
            from mergekit.merge import run_merge
            from mergekit.options import MergeOptions

            model = None
            out = Path(tempfile.mkdtemp(dir=root, prefix="run_merge_"))

            def trial(params: dict[str, float], live: Any, seed: int) -> dict[str, float]:
                nonlocal model
                config = space.to_mergekit_config(params, base, endpoints, args.dtype)
                options = MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False,
                                       random_seed=seed)
                t0 = time.perf_counter()
                run_merge(MergeConfiguration.model_validate(config), str(out), options)
                t1 = time.perf_counter()
                model = AutoModelForCausalLM.from_pretrained(str(out), dtype=dtype).eval()
                return {"merge_s": t1 - t0, "write_s": time.perf_counter() - t1}
        setup = {"load_s": time.perf_counter() - started}
    setup_hwm = vm_kib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM: peak of the trials alone
    totals, parts, digest = [], [], None
    for i in range(1, n_trials + 1):
        t0 = time.perf_counter()
        split = trial(genotype(space, i), model, seed=i)
        totals.append(time.perf_counter() - t0)
        parts.append(split)
        if i == 1:
            digest = weights_digest(model)
    result = {
        "path": args.worker, "method": method, "trials_s": totals,
        "median_s": statistics.median(totals),
        "merge_s": statistics.median(p["merge_s"] for p in parts),
        "write_s": statistics.median(p["write_s"] for p in parts),
        **setup, "peak_rss_gb": max(setup_hwm, vm_kib("VmHWM")) / 2**20,
        "trial_peak_rss_gb": vm_kib("VmHWM") / 2**20, "digest": digest,
    }
    if args.worker == "b":
        # Untimed check, after the peaks are read: merge_state_dicts packs same-shaped tensors
        # into batches (BatchOptions), which moves the float32 chunk boundaries inside e.g.
        # slerp's norms; run_merge merges one tensor at a time. Without packing it is the merge
        # that (a) and (c) compute.
        from mergekit.merge_methods.base import BatchOptions

        model.load_state_dict(mk_merge(genotype(space, 1), 1,
                                       batch_options=BatchOptions(max_groups=1)))
        result["digest_unbatched"] = weights_digest(model)
        if method in RANDOM_METHODS:
            # Our counter masks (path d) handed to MergeKit through the documented hook.
            from unittest import mock

            from optuna_merge3.merging import InMemoryMerger

            hook = InMemoryMerger(base, endpoints, space, dtype=dtype, stream=True,
                                  rng="counter").mergekit_bernoulli(genotype(space, 1), 1)
            with mock.patch("torch.bernoulli", hook):
                merged = mk_merge(genotype(space, 1), 1, batch_options=BatchOptions(max_groups=1))
            model.load_state_dict(merged)
            result["digest_counter"] = weights_digest(model)
    return result


def run_worker(args: argparse.Namespace, root: Path, path: str, method: str) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", path, "--method", method, "--root", str(root),
           "--dtype", args.dtype, "--threads", str(args.threads), "--trials", str(args.trials),
           "--mk-trials", str(args.mk_trials)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
               TRANSFORMERS_VERBOSITY="error", TQDM_DISABLE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"worker {path}/{method} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------
def _row(method: str, ours: str, r: dict[str, dict[str, Any]], bound: float) -> dict[str, Any]:
    """Ratios and bit-identity of our path ``ours`` against MergeKit's (b) and (c), if run.

    Path d (counter masks) is compared with (b) run with the same masks through the hook."""
    a = r[ours]["median_s"]
    b, c = (r[p]["median_s"] if p in r else None for p in "bc")
    digest = r[ours]["digest"]
    if ours == "a":
        eq_c = digest == r["c"]["digest"] if "c" in r else None
        eq_b = digest == r["b"]["digest"] if "b" in r else None
        eq_unbatched = digest == r["b"].get("digest_unbatched") if "b" in r else None
    else:
        eq_c = None
        eq_b = eq_unbatched = digest == r["b"].get("digest_counter") if "b" in r else None
    row = {"method": method, "path": ours, "a_s": a, "b_s": b, "c_s": c, "bound_s": bound,
           "b_over_a": b / a if b else None, "c_over_a": c / a if c else None,
           "a_over_bound": a / bound, "a_eq_c": eq_c, "a_eq_b": eq_b,
           "a_eq_b_unbatched": eq_unbatched}
    row["goals_met"] = (b is not None and c is not None
                        and row["b_over_a"] >= GOALS["b_over_a"]
                        and row["c_over_a"] >= GOALS["c_over_a"]
                        and row["a_over_bound"] <= GOALS["a_over_bound"])
    return row


def _cell(value: Any, spec: str = "", suffix: str = "") -> str:
    """A table cell: '-' for a path not run, yes / no for a bit-identity, else ``format``."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return format(value, spec) + suffix


def report(args: argparse.Namespace, n_params: int, ckpt_bytes: int, bandwidth: float,
           results: dict[str, dict[str, dict[str, Any]]], wall_s: float) -> None:
    gb = 1e9
    print(f"# merge_speed: random Llama, {n_params / 1e6:.0f}M parameters, {args.dtype} "
          f"safetensors, 3 endpoints (slerp: 2)")
    print(f"hidden {args.hidden}, {args.layers} layers, intermediate {args.intermediate}, "
          f"vocab {args.vocab}, untied lm_head; one checkpoint = {ckpt_bytes / gb:.3f} GB")
    print(f"torch {torch.__version__}, {args.threads} thread(s) per process "
          f"(torch.set_num_threads), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores shared with other jobs; CPU only")
    print(f"(a) ours: warm-up trial, then median of {args.trials} trials; (b), (c): "
          f"{args.mk_trials} trial(s) each (no warm-up; MergeKit keeps no state between trials)")
    print(f"copy bandwidth (read + write, 512 MiB dst.copy_(src), median of 7): "
          f"{bandwidth / gb:.2f} GB/s; bound = (inputs + 1) x checkpoint bytes / bandwidth\n")
    print("| method | (a) ours s | (b) merge_state_dicts s | (c) run_merge+load s | bound s "
          "| (b)/(a) | (c)/(a) | (a)/bound | a = c | a = b | goals |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|:---:|:---:|:---:|")
    rows = []
    for method in args.methods:
        r = results[method]
        n_inputs = 2 if method == "slerp" else 1 + len(ENDPOINTS)
        bound = (n_inputs + 1) * ckpt_bytes / bandwidth
        for ours in [p for p in OURS if p in r]:
            row = _row(method, ours, r, bound)
            rows.append(row)
            label = method if ours == "a" else f"{method}, rng=counter (d)"
            a_eq_b = _cell(row["a_eq_b"])
            if row["a_eq_b"] is False and row["a_eq_b_unbatched"]:
                a_eq_b = "no; yes unbatched"
            print(f"| {label} | {row['a_s']:.3f} | {_cell(row['b_s'], '.2f')} "
                  f"| {_cell(row['c_s'], '.2f')} | {bound:.3f} | {_cell(row['b_over_a'], '.1f', 'x')} "
                  f"| {_cell(row['c_over_a'], '.1f', 'x')} | {row['a_over_bound']:.1f}x "
                  f"| {_cell(row['a_eq_c'])} | {a_eq_b} "
                  f"| {'met' if row['goals_met'] else 'missed'} |")
    print(f"\nGoals (issue 3): (b)/(a) >= {GOALS['b_over_a']:g}, (c)/(a) >= "
          f"{GOALS['c_over_a']:g}, (a)/bound <= {GOALS['a_over_bound']:g}. a = c, a = b: the "
          "merged weights of trial 1 (same genotype, same seed) are bit-identical; "
          "'yes unbatched': (b) differs only through merge_state_dicts' packing of same-shaped "
          "tensors (float32 rounding), and with BatchOptions(max_groups=1) equals (a). Rows (d): "
          "ours with rng='counter' (hash masks); its a = b compares "
          "with MergeKit's merge_state_dicts given the same masks through "
          "InMemoryMerger.mergekit_bernoulli (unbatched); (b), (c) times are MergeKit's usual "
          "MT19937 draws.\n")
    print("| method | path | trials s | merge s | write/load s | setup s | warm-up s "
          "| peak RSS GB | trial peak RSS GB |")
    print("|---|:---:|---|---:|---:|---:|---:|---:|---:|")
    for method in args.methods:
        for p in results[method]:
            r = results[method][p]
            trials = ", ".join(f"{t:.3f}" for t in r["trials_s"])
            warm = f"{r['warmup_trial_s']:.2f}" if "warmup_trial_s" in r else "-"
            print(f"| {method} | {p} | {trials} | {r['merge_s']:.3f} | {r['write_s']:.3f} "
                  f"| {r['load_s']:.2f} | {warm} | {r['peak_rss_gb']:.2f} "
                  f"| {r['trial_peak_rss_gb']:.2f} |")
    print("\nsetup: (a) InMemoryMerger + load_model, (b) load_file of every input + "
          "from_pretrained, (c) none. Peak RSS: VmHWM of the worker process (mmapped file pages "
          "count); trial peak: VmHWM reset after setup.")
    print(f"total wall time {wall_s:.0f} s\n")
    print(json.dumps({
        "benchmark": "merge_speed", "device": "cpu", "threads": args.threads,
        "dtype": args.dtype, "n_params": n_params, "checkpoint_bytes": ckpt_bytes,
        "copy_bandwidth_gbs": round(bandwidth / gb, 3), "quick": args.quick,
        "rows": [{k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
                 for row in rows],
        "peak_rss_gb": {m: {p: round(results[m][p]["peak_rss_gb"], 3) for p in results[m]}
                        for m in args.methods},
        "all_goals_met": all(r["goals_met"] for r in rows),
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, for a smoke run")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--trials", type=int, default=3, help="timed trials of (a)")
    parser.add_argument("--mk-trials", type=int, default=1, help="timed trials of (b), (c)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bfloat16")
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--intermediate", type=int, default=2816)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--heads", type=int, default=16)
    parser.add_argument("--paths", default="abcd", help="paths to run (d: DARE / DELLA only)")
    parser.add_argument("--worker", choices=("a", "b", "c", "d"), help=argparse.SUPPRESS)
    parser.add_argument("--method", choices=METHODS, help=argparse.SUPPRESS)
    parser.add_argument("--root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.quick:
        args.hidden, args.layers, args.intermediate, args.vocab, args.heads = 256, 2, 704, 4000, 4
        args.trials = min(args.trials, 2)
    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="merge_speed_") as tmp:
        root = Path(tmp)
        n_params, ckpt_bytes = make_checkpoints(root, args)
        bandwidth = copy_bandwidth()
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for method in args.methods:
            paths = [p for p in args.paths if p != "d" or method in RANDOM_METHODS]
            results[method] = {p: run_worker(args, root, p, method) for p in paths}
            print(f"[{time.perf_counter() - started:.0f} s] {method}: " + ", ".join(
                f"{p} {results[method][p]['median_s']:.3f} s" for p in paths), file=sys.stderr)
    report(args, n_params, ckpt_bytes, bandwidth, results, time.perf_counter() - started)


if __name__ == "__main__":
    main()
