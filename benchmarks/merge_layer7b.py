"""Streamed merge per decoder layer at Mistral-7B's layer shape: ours vs MergeKit's run_merge (CPU).

Random bf16 checkpoints with Mistral-7B's layer shape (hidden 4096, intermediate 14336, 32 heads,
8 KV heads; 218M weights per layer) and a small vocabulary (``--vocab``, default 1024, so that the
embeddings do not dominate: the numbers are about the layer), ``--layers`` layers: ``base``
(N(0, 0.02)) and three endpoints ``ep<j>`` = base + N(0, 0.002), written under ``--root``.

Per method, in a fresh subprocess each:

* ours: ``InMemoryMerger(stream=True, dtype=bfloat16)`` writing into a live bf16 model
  (``merger.apply``), median of ``--trials`` trials (a first trial is not counted: page cache);
  ``--merger-kwargs`` (JSON) passes extra constructor arguments (e.g. ``{"fused": true}`` for a
  version of the code that still had fused kernels).
* mergekit: ``run_merge`` of the same genotype (its lazy per-tensor loader, output written to
  disk, ``lazy_unpickle``), ``--mk-trials`` runs.

Peak RssAnon during the timed trials (from /proc/self/status, sampled every 5 ms by a thread) is
reported beside the time. The table gives seconds per layer (per trial divided by ``--layers``)
and the ratio MergeKit / ours.

Usage: python benchmarks/merge_layer7b.py --root DIR [--layers 1] [--methods ties dare_ties]
       [--trials 2] [--mk-trials 1] [--threads 1] [--merger-kwargs '{}'] [--label ours]
Prints a markdown table and, last, one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

HIDDEN, INTERMEDIATE, HEADS, KV_HEADS = 4096, 14336, 32, 8
ENDPOINTS = ("ep0", "ep1", "ep2")
SEARCH = {"weight": [0.0, 1.0], "density": [0.2, 0.8]}
NO_DENSITY = ("task_arithmetic",)


def _config(layers: int, vocab: int) -> dict[str, Any]:
    return {
        "architectures": ["MistralForCausalLM"], "model_type": "mistral",
        "hidden_size": HIDDEN, "intermediate_size": INTERMEDIATE,
        "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": layers, "vocab_size": vocab, "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-5, "tie_word_embeddings": False, "torch_dtype": "bfloat16",
        "hidden_act": "silu", "rope_theta": 10000.0,
    }


def _shapes(layers: int, vocab: int) -> dict[str, tuple[int, ...]]:
    kv = HIDDEN // HEADS * KV_HEADS
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (vocab, HIDDEN),
                                          "model.norm.weight": (HIDDEN,),
                                          "lm_head.weight": (vocab, HIDDEN)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN),
            p + "self_attn.k_proj.weight": (kv, HIDDEN),
            p + "self_attn.v_proj.weight": (kv, HIDDEN),
            p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.up_proj.weight": (INTERMEDIATE, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, INTERMEDIATE),
            p + "input_layernorm.weight": (HIDDEN,),
            p + "post_attention_layernorm.weight": (HIDDEN,),
        })
    return shapes


def build(root: Path, layers: int, vocab: int) -> dict[str, Path]:
    """Write base + endpoints once (reused when present)."""
    from safetensors.torch import save_file

    paths = {name: root / f"L{layers}_v{vocab}" / name for name in ("base", *ENDPOINTS)}
    if all((p / "model.safetensors").is_file() for p in paths.values()):
        return paths
    gen = torch.Generator().manual_seed(0)
    shapes = _shapes(layers, vocab)
    base = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            base[name] = torch.ones(shape, dtype=torch.bfloat16)
        else:
            base[name] = (torch.randn(shape, generator=gen) * 0.02).to(torch.bfloat16)
    for label, path in paths.items():
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(_config(layers, vocab)))
        if label == "base":
            tensors = base
        else:
            tensors = {n: (t.float() + torch.randn(t.shape, generator=gen) * 0.002).to(t.dtype)
                       for n, t in base.items()}
        save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
        del tensors
    return paths


class _PeakAnon:
    """Peak RssAnon (GiB) sampled every 5 ms by a daemon thread from :meth:`start` on."""

    def __init__(self) -> None:
        self.peak = 0.0

    def start(self) -> None:
        import threading

        threading.Thread(target=self._sample, daemon=True).start()

    def _sample(self) -> None:
        while True:
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 2**20)
            time.sleep(0.005)


def _space(method: str) -> Any:
    from optuna_merge3.merging import MergeSpace

    search = {"weight": SEARCH["weight"]} if method in NO_DENSITY else SEARCH
    return MergeSpace(method, ENDPOINTS, search=search)


def _genotype(space: Any, i: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(100 + i)
    out = {}
    for name, dist in space.distributions().items():
        u = float(torch.rand((), generator=gen))
        out[name] = dist.low + u * (dist.high - dist.low)
    return out


def worker(args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    paths = build(Path(args.root), args.layers, args.vocab)
    space = _space(args.method)
    peak, times = _PeakAnon(), []
    if args.worker == "ours":
        from optuna_merge3.merging import InMemoryMerger

        merger = InMemoryMerger(paths["base"], {e: paths[e] for e in ENDPOINTS}, space,
                                dtype=torch.bfloat16, stream=True,
                                **json.loads(args.merger_kwargs))
        model = merger.load_model()
        merger.apply(_genotype(space, 0), model, seed=0)  # warms the page cache, not timed
        peak.start()
        for i in range(1, args.trials + 1):
            t0 = time.perf_counter()
            merger.apply(_genotype(space, i), model, seed=i)
            times.append(time.perf_counter() - t0)
    else:
        import tempfile

        from mergekit.config import MergeConfiguration
        from mergekit.merge import run_merge
        from mergekit.options import MergeOptions

        out = Path(tempfile.mkdtemp(dir=args.root, prefix="run_merge_"))
        peak.start()
        for i in range(args.mk_trials):
            config = space.to_mergekit_config(_genotype(space, i + 1), str(paths["base"]),
                                              {e: str(paths[e]) for e in ENDPOINTS}, "bfloat16")
            options = MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False,
                                   random_seed=i + 1, lazy_unpickle=True)
            t0 = time.perf_counter()
            run_merge(MergeConfiguration.model_validate(config), str(out), options)
            times.append(time.perf_counter() - t0)
    return {"worker": args.worker, "label": args.label, "method": args.method,
            "layers": args.layers, "s_per_trial": statistics.median(times),
            "s_per_layer": statistics.median(times) / args.layers, "peak_anon_gib": peak.peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument("--methods", nargs="+", default=["ties", "dare_ties", "task_arithmetic"])
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--mk-trials", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--merger-kwargs", default="{}")
    parser.add_argument("--label", default="ours")
    parser.add_argument("--no-mergekit", action="store_true")
    parser.add_argument("--worker", choices=["ours", "mergekit"])
    parser.add_argument("--method")
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    build(Path(args.root), args.layers, args.vocab)
    rows = []
    for method in args.methods:
        for who in ("ours", *(() if args.no_mergekit else ("mergekit",))):
            cmd = [sys.executable, __file__, "--worker", who, "--method", method,
                   *(a for k, v in vars(args).items()
                     if k not in ("worker", "method", "methods", "no_mergekit")
                     for a in (f"--{k.replace('_', '-')}", str(v)))]
            done = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if done.returncode:
                sys.exit(f"{who} {method} failed:\n{done.stderr[-3000:]}")
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(json.dumps(rows[-1]), file=sys.stderr)
    print(f"\nStreamed merge at Mistral-7B's layer shape, {args.layers} layer(s), vocab "
          f"{args.vocab}, base + 3 endpoints, bf16, {args.threads} thread(s)\n")
    print("| method | ours | ours s/layer | MergeKit run_merge s/layer | MergeKit / ours | "
          "ours peak RssAnon GiB | MergeKit peak RssAnon GiB |")
    print("|---|---|---|---|---|---|---|")
    for method in args.methods:
        ours = next(r for r in rows if r["method"] == method and r["worker"] == "ours")
        mk = next((r for r in rows if r["method"] == method and r["worker"] == "mergekit"), None)
        mk_s = f"{mk['s_per_layer']:.2f}" if mk else "-"
        ratio = f"{mk['s_per_layer'] / ours['s_per_layer']:.2f}x" if mk else "-"
        mk_mem = f"{mk['peak_anon_gib']:.2f}" if mk else "-"
        print(f"| {method} | {args.label} | {ours['s_per_layer']:.2f} | {mk_s} | {ratio} | "
              f"{ours['peak_anon_gib']:.2f} | {mk_mem} |")
    print(json.dumps({"benchmark": "merge_layer7b", "layers": args.layers, "vocab": args.vocab,
                      "threads": args.threads, "label": args.label, "rows": rows}))


if __name__ == "__main__":
    main()
