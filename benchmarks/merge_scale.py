"""Memory and time of a streamed merge against depth, at Mistral-7B's layer shape (issue 17).

Random-weight bf16 checkpoints with Mistral-7B's layer shape (hidden 4096, intermediate 14336,
32 heads, 8 KV heads, vocab 32000, untied lm_head) and L layers are written under ``--root``:
``base`` (N(0, 0.02), norms 1) and three endpoints ``ep<j>`` = base + N(0, 0.002). Shards are
written once per layer and linked into one sharded checkpoint per depth, so L = 1, 2, 4 share
their files. For ties, dare_ties and task_arithmetic (densities 0.5, weights 0.3-0.7):

* ours: ``InMemoryMerger(..., dtype=bfloat16, stream=True).apply`` into a live full-precision
  (``fp``, bf16) or bitsandbytes ``nf4`` model, ``--trials`` trials after the model is loaded;
* MergeKit 0.1.5's ``run_merge`` (its lazy per-tensor safetensors loader, ``low_cpu_memory``)
  to a temporary folder + ``from_pretrained`` of the result (fp and nf4), same genotype.

Every case runs in a fresh subprocess that samples ``RssAnon`` / ``RssFile`` of
``/proc/self/status`` every 5 ms; peaks are taken over the trials (ours: after the live model is
loaded; MergeKit: over ``run_merge``). ``beyond_live_gb`` = peak anonymous memory minus the live
model's own bytes (it includes the interpreter + torch + transformers baseline, ~0.4 GB). A least
squares line against L extrapolates memory and seconds to 32 layers (Mistral-7B's depth).

Usage: nice -n 10 python benchmarks/merge_scale.py [--quick] [--root DIR] [--layers 1 2 4]
       [--methods ...] [--lives fp nf4] [--trials 1] [--keep] [--jobs 1] [--cases FILE.jsonl]
(``--jobs 2`` runs two cases at once: their memory peaks stay their own, their seconds share
the CPU; ``--cases`` makes a long run resumable.)
Prints a markdown table, writes ``merge_scale.png`` next to ``--out`` and ends with ONE JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

METHODS = ("task_arithmetic", "dare_ties", "ties")
LIVES = ("fp", "nf4")
ENDPOINTS = ("ep0", "ep1", "ep2")
MISTRAL = {"hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
           "num_key_value_heads": 8, "vocab_size": 32000}
TINY = {"hidden_size": 64, "intermediate_size": 224, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512}
GIB = 2**30


# -- checkpoints ----------------------------------------------------------------------------------
def mistral_config(shape: dict[str, int], layers: int) -> Any:
    from transformers import MistralConfig

    config = MistralConfig(**shape, num_hidden_layers=layers, tie_word_embeddings=False,
                           max_position_embeddings=4096, dtype="bfloat16")
    config.architectures = ["MistralForCausalLM"]
    return config


def tensor_shapes(config: Any) -> dict[str, tuple[int, ...]]:
    import torch
    from transformers import MistralForCausalLM

    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in MistralForCausalLM(config).state_dict().items()}


def _shard_of(name: str) -> str:
    parts = name.split(".")
    return f"layer{parts[2]}" if name.startswith("model.layers.") else "outer"


def make_checkpoints(root: Path, shape: dict[str, int], depths: list[int]) -> None:
    """Shards per layer (base + endpoints), then one sharded checkpoint per depth of links."""
    import torch
    from safetensors.torch import save_file

    deepest = max(depths)
    shapes = tensor_shapes(mistral_config(shape, deepest))
    shards: dict[str, list[str]] = {}
    for name in sorted(shapes):
        shards.setdefault(_shard_of(name), []).append(name)
    gen = torch.Generator().manual_seed(0)
    store = root / "shards"
    store.mkdir(parents=True, exist_ok=True)
    for shard, names in shards.items():  # one shard at a time: memory stays at a layer
        base = {n: torch.ones(shapes[n]) if n.endswith("norm.weight")
                else 0.02 * torch.randn(shapes[n], generator=gen) for n in names}
        for model in ("base", *ENDPOINTS):
            tensors = {n: (v if model == "base" else v + 0.002 * torch.randn(v.shape, generator=gen))
                       .to(torch.bfloat16) for n, v in base.items()}
            save_file(tensors, str(store / f"{model}-{shard}.safetensors"),
                      metadata={"format": "pt"})
            del tensors
        del base
    for layers in depths:
        config = mistral_config(shape, layers)
        wanted = tensor_shapes(config)
        for model in ("base", *ENDPOINTS):
            out = root / f"L{layers}" / model
            out.mkdir(parents=True, exist_ok=True)
            config.save_pretrained(str(out))
            weight_map = {n: f"{model}-{_shard_of(n)}.safetensors" for n in sorted(wanted)}
            for file in set(weight_map.values()):
                link = out / file
                if not link.exists():
                    link.symlink_to(store / file)
            index = {"metadata": {}, "weight_map": weight_map}
            (out / "model.safetensors.index.json").write_text(json.dumps(index))


def paths_of(root: Path, layers: int) -> tuple[str, dict[str, str]]:
    folder = root / f"L{layers}"
    return str(folder / "base"), {e: str(folder / e) for e in ENDPOINTS}


def space_for(method: str) -> Any:
    from optuna_merge3.merging import MergeSpace

    fixed = {"density": 0.5} if method != "task_arithmetic" else {}
    return MergeSpace(method, list(ENDPOINTS), search={"weight": [0.0, 1.0]}, fixed=fixed)


def genotype(space: Any, index: int) -> dict[str, float]:
    return {n: 0.3 + 0.4 * ((index + j) % 3) / 2 for j, n in enumerate(space.param_names)}


# -- workers (one subprocess per case) ------------------------------------------------------------
class PeakSampler:
    """Peaks of RssAnon / RssFile (GiB) of this process, sampled every 5 ms in a thread."""

    FIELDS = ("RssAnon", "RssFile")

    def __init__(self) -> None:
        self.peak = dict.fromkeys(self.FIELDS, 0.0)
        threading.Thread(target=self._loop, daemon=True).start()

    @classmethod
    def now(cls) -> dict[str, float]:
        out = {}
        for line in Path("/proc/self/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in cls.FIELDS:
                out[key] = int(value.split()[0]) / 2**20
        return out

    def _loop(self) -> None:
        while True:
            for key, value in self.now().items():
                self.peak[key] = max(self.peak[key], value)
            time.sleep(0.005)

    def reset(self) -> None:
        self.peak = self.now()


def model_bytes(model: Any) -> int:
    """Parameter + buffer bytes of a live model (nf4: packed weights + their absmax)."""
    total = sum(t.numel() * t.element_size() for t in model.parameters())
    total += sum(t.numel() * t.element_size() for t in model.buffers())
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


def worker_ours(args: argparse.Namespace, sampler: PeakSampler) -> dict[str, Any]:
    import torch

    from optuna_merge3.merging import InMemoryMerger

    base, endpoints = paths_of(Path(args.root), args.layers[0])
    space = space_for(args.methods[0])
    start = PeakSampler.now()["RssAnon"]
    t0 = time.perf_counter()
    merger = InMemoryMerger(base, endpoints, space, dtype=torch.bfloat16, stream=True)
    model = merger.load_model(quantization=None if args.lives[0] == "fp" else "nf4")
    load_s, load_peak = time.perf_counter() - t0, sampler.peak["RssAnon"]
    sampler.reset()
    seconds, cpu = [], []
    for i in range(args.trials):
        t0, c0 = time.perf_counter(), time.process_time()
        merger.apply(genotype(space, i), model, seed=i)
        seconds.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"baseline_anon_gb": start, "load_s": load_s, "load_peak_anon_gb": load_peak,
            "live_model_gb": model_bytes(model) / GIB, "s_per_trial": float(np.median(seconds)),
            "cpu_s_per_trial": float(np.median(cpu)),
            "peak_anon_gb": sampler.peak["RssAnon"], "peak_file_gb": sampler.peak["RssFile"]}


def worker_mergekit(args: argparse.Namespace, sampler: PeakSampler) -> dict[str, Any]:
    import torch
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions

    from optuna_merge3.merging._quant import load_causal_lm

    root = Path(args.root)
    base, endpoints = paths_of(root, args.layers[0])
    space = space_for(args.methods[0])
    config = space.to_mergekit_config(genotype(space, 0), base, endpoints, "bfloat16")
    options = MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False,
                           random_seed=0, low_cpu_memory=True)
    out = Path(tempfile.mkdtemp(dir=root, prefix="run_merge_"))
    try:
        sampler.reset()
        t0, c0 = time.perf_counter(), time.process_time()
        run_merge(MergeConfiguration.model_validate(config), str(out), options)
        merge_s, peak = time.perf_counter() - t0, dict(sampler.peak)
        merge_cpu = time.process_time() - c0
        load_s, load_cpu = {}, {}
        for live in LIVES:
            t0, c0 = time.perf_counter(), time.process_time()
            model = load_causal_lm(out, device=torch.device("cpu"), dtype=torch.bfloat16,
                                   quantization=None if live == "fp" else "nf4")
            load_s[live] = time.perf_counter() - t0
            load_cpu[live] = time.process_time() - c0
            del model
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {"mergekit_merge_s": merge_s, "mergekit_load_s": load_s,
            "mergekit_merge_cpu_s": merge_cpu, "mergekit_load_cpu_s": load_cpu,
            "mergekit_peak_anon_gb": peak["RssAnon"], "mergekit_peak_file_gb": peak["RssFile"]}


def run_case(args: argparse.Namespace, kind: str, method: str, layers: int,
             live: str = "fp") -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", kind, "--root", str(args.root),
           "--methods", method, "--layers", str(layers), "--lives", live,
           "--trials", str(args.trials), "--threads", str(args.threads)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), TRANSFORMERS_VERBOSITY="error",
               TQDM_DISABLE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{kind} {method} L={layers} {live} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------
def line_fit(xs: list[int], ys: list[float], at: int) -> float:
    """Least squares line through (xs, ys) (two depths at least) evaluated at ``at``."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept + slope * at)


def build_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Run every case (``--jobs`` at a time); cases already in ``--cases`` are not rerun."""
    from concurrent.futures import ThreadPoolExecutor

    # Complete (method, L) groups first, so that an interrupted run (--cases) is still useful.
    cases = [case for m in args.methods for n in args.layers
             for case in [("mergekit", m, n, "fp")] + [("ours", m, n, live) for live in args.lives]]
    done: dict[tuple, dict[str, Any]] = {}
    log = Path(args.cases) if args.cases else None
    if log is not None and log.is_file():
        for line in log.read_text().splitlines():
            entry = json.loads(line)
            done[tuple(entry["case"])] = entry["result"]

    def one(case: tuple) -> None:
        result = run_case(args, *case)
        done[case] = result
        print(f"# {' '.join(map(str, case))}: {result}", file=sys.stderr, flush=True)
        if log is not None:
            with log.open("a") as handle:
                handle.write(json.dumps({"case": list(case), "result": result}) + "\n")

    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, [c for c in cases if c not in done]))
    rows = []
    for method in args.methods:
        for layers in args.layers:
            mk = done.get(("mergekit", method, layers, "fp"))
            for live in args.lives:
                ours = done.get(("ours", method, layers, live))
                if mk is None or ours is None:  # --report-only: a case that did not run
                    continue
                rows.append({
                    "method": method, "layers": layers, "live": live, "mode": "stream",
                    **{k: ours[k] for k in ("peak_anon_gb", "peak_file_gb", "live_model_gb",
                                            "s_per_trial", "baseline_anon_gb",
                                            "load_peak_anon_gb", "load_s")},
                    "beyond_live_gb": ours["peak_anon_gb"] - ours["live_model_gb"],
                    "mergekit_peak_anon_gb": mk["mergekit_peak_anon_gb"],
                    "mergekit_s": mk["mergekit_merge_s"] + mk["mergekit_load_s"][live],
                    "mergekit_merge_s": mk["mergekit_merge_s"],
                    # CPU seconds (one thread): robust where other jobs share the cores; absent
                    # from cases measured before they were recorded
                    "cpu_s_per_trial": ours.get("cpu_s_per_trial"),
                    "mergekit_cpu_s": (mk["mergekit_merge_cpu_s"] + mk["mergekit_load_cpu_s"][live]
                                       if "mergekit_merge_cpu_s" in mk else None),
                })
    return rows


def extrapolate(rows: list[dict[str, Any]], depth: int = 32) -> dict[str, dict[str, float]]:
    out = {}
    for key in sorted({(r["method"], r["live"]) for r in rows}):
        group = [r for r in rows if (r["method"], r["live"]) == key]
        xs = [r["layers"] for r in group]
        if len(set(xs)) < 2:  # an interrupted run: no line through one depth
            continue
        out["/".join(key)] = {
            f: line_fit(xs, [r[f] for r in group], depth)
            for f in ("peak_anon_gb", "beyond_live_gb", "live_model_gb", "s_per_trial",
                      "mergekit_peak_anon_gb", "mergekit_s")
        }
    return out


def growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """beyond_live_gb at the deepest over the shallowest depth, per method / live model."""
    out = {}
    for key in sorted({(r["method"], r["live"]) for r in rows}):
        group = sorted((r for r in rows if (r["method"], r["live"]) == key),
                       key=lambda r: r["layers"])
        out["/".join(key)] = group[-1]["beyond_live_gb"] / group[0]["beyond_live_gb"]
    return out


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _ratio(top: float | None, bottom: float | None) -> str:
    return "-" if top is None or not bottom else f"{top / bottom:.2f}"


def markdown(rows: list[dict[str, Any]], extra: dict, grow: dict, depth: int,
             header: str = "") -> str:
    lines = [header, ""] if header else []
    lines += [
        "| method | L | live | peak anon GiB | peak file GiB | live model GiB | beyond live GiB "
        "| s / trial | MergeKit peak anon GiB | MergeKit s (run_merge + load) | MergeKit s / ours "
        "| CPU s / trial | MergeKit CPU s | MergeKit CPU s / ours |",
        "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['layers']} | {r['live']} | {r['peak_anon_gb']:.2f} | "
            f"{r['peak_file_gb']:.2f} | {r['live_model_gb']:.2f} | {r['beyond_live_gb']:.2f} | "
            f"{r['s_per_trial']:.1f} | {r['mergekit_peak_anon_gb']:.2f} | {r['mergekit_s']:.1f} | "
            f"{r['mergekit_s'] / r['s_per_trial']:.2f} | {_num(r['cpu_s_per_trial'])} | "
            f"{_num(r['mergekit_cpu_s'])} | {_ratio(r['mergekit_cpu_s'], r['cpu_s_per_trial'])} |")
    lines += ["", f"Extrapolated to {depth} layers (least squares line in L):", "",
              "| method / live | peak anon GiB | beyond live GiB | s / trial | MergeKit peak anon "
              "GiB | MergeKit s | beyond-live growth L_min -> L_max |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for key, e in extra.items():  # growth: only where extra has the key (two depths or more)
        lines.append(f"| {key} | {e['peak_anon_gb']:.1f} | {e['beyond_live_gb']:.2f} | "
                     f"{e['s_per_trial']:.0f} | {e['mergekit_peak_anon_gb']:.1f} | "
                     f"{e['mergekit_s']:.0f} | {grow[key]:.2f}x |")
    lines += ["", "Checks: beyond-live memory grows <= 20% from the shallowest to the deepest L; "
              f"the {depth}-layer extrapolation fits a 64 GB host.", ""]
    for key, e in extra.items():
        lines.append(f"- {key}: growth {grow[key]:.2f}x ({'yes' if grow[key] <= 1.2 else 'NO'}); "
                     f"{e['peak_anon_gb']:.1f} GiB at {depth} layers "
                     f"({'yes' if e['peak_anon_gb'] * GIB <= 64e9 else 'NO'})")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (mem, sec) = plt.subplots(1, 2, figsize=(11, 4))
    for method in sorted({r["method"] for r in rows}):
        for live in sorted({r["live"] for r in rows}):
            group = [r for r in rows if (r["method"], r["live"]) == (method, live)]
            xs = [r["layers"] for r in group]
            mem.plot(xs, [r["peak_anon_gb"] for r in group], "o-", label=f"ours {method} {live}")
            sec.plot(xs, [r["s_per_trial"] for r in group], "o-", label=f"ours {method} {live}")
        group = [r for r in rows if r["method"] == method and r["live"] == rows[0]["live"]]
        xs = [r["layers"] for r in group]
        mem.plot(xs, [r["mergekit_peak_anon_gb"] for r in group], "x--",
                 label=f"MergeKit run_merge {method}")
        sec.plot(xs, [r["mergekit_s"] for r in group], "x--", label=f"MergeKit {method} (fp load)")
    mem.set(xlabel="layers", ylabel="peak RssAnon (GiB)", title="memory vs depth (streamed)")
    sec.set(xlabel="layers", ylabel="seconds per trial", title="time vs depth")
    mem.legend(fontsize=6)
    sec.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny shape (tests)")
    parser.add_argument("--root", help="checkpoint folder (default: a temporary one)")
    parser.add_argument("--layers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--lives", nargs="+", default=list(LIVES), choices=LIVES)
    parser.add_argument("--trials", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="write <out>.md / .json / .png")
    parser.add_argument("--keep", action="store_true", help="keep the checkpoints")
    parser.add_argument("--jobs", type=int, default=1, help="cases run at the same time")
    parser.add_argument("--cases", help="JSONL of finished cases: appended to, and not rerun")
    parser.add_argument("--note", default="", help="first line of the markdown (e.g. the commit)")
    parser.add_argument("--report-only", action="store_true",
                        help="report the cases in --cases, run nothing")
    parser.add_argument("--worker", choices=("ours", "mergekit"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.worker:  # a subprocess: one case, one JSON line
        import torch

        torch.set_num_threads(args.threads)
        sampler = PeakSampler()
        work = worker_ours if args.worker == "ours" else worker_mergekit
        print(json.dumps(work(args, sampler)))
        return
    root = Path(args.root) if args.root else Path(tempfile.mkdtemp(prefix="merge_scale_"))
    args.root = root
    started = time.perf_counter()
    try:
        if not args.report_only and not (root / f"L{max(args.layers)}").is_dir():
            make_checkpoints(root, TINY if args.quick else MISTRAL, sorted(set(args.layers)))
        print(f"# checkpoints ready in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        rows = build_rows(args)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    depth = 32
    extra, grow = extrapolate(rows, depth), growth(rows)
    header = (f"{args.note + '; ' if args.note else ''}threads {args.threads}, trials "
              f"{args.trials}, jobs {args.jobs}, load average at the end "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    table = markdown(rows, extra, grow, depth, header)
    print(table)
    result = {"benchmark": "merge_scale", "rows": rows, "extrapolated_32_layers": extra,
              "beyond_live_growth": grow, "quick": args.quick, "threads": args.threads,
              "trials": args.trials, "jobs": args.jobs, "load_average": os.getloadavg(),
              "wall_s": time.perf_counter() - started}
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(table + "\n")
        out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
        plot(rows, out.with_suffix(".png"))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
