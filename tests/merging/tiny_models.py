"""Tiny checkpoints for the merger tests: random Llama models written with ``save_pretrained``.

The tiny world (``studies/tiny_world/models``: trained, tied embeddings) covers the real case;
the random ones here cover what it does not (3 layers for non-trivial gradients, an untied
lm_head, odd shapes for the error paths) and take milliseconds to build.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
TINY_WORLD = REPO / "studies" / "tiny_world" / "models"
TINY_ENDPOINTS = ("math_en", "lang_it", "trivia_en")

# Quiet MergeKit / transformers in tests: no progress bars, no model cards.
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def llama_config(**overrides: Any) -> Any:
    from transformers import LlamaConfig

    kwargs = dict(
        vocab_size=96,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=32,
        tie_word_embeddings=False,
    )
    kwargs.update(overrides)
    return LlamaConfig(**kwargs)


def save_random_llama(path: Path, seed: int, *, like: Path | None = None, scale: float = 0.02,
                      **overrides: Any) -> Path:
    """A random Llama; with ``like``, that checkpoint plus a seeded random task vector."""
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    torch.manual_seed(seed)  # transformers' initialisers use the global RNG; tests only
    if like is not None:
        model = AutoModelForCausalLM.from_pretrained(str(like), dtype=torch.float32)
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for param in model.parameters():
                param.add_(scale * torch.randn(param.shape, generator=gen))
    else:
        model = LlamaForCausalLM(llama_config(**overrides))
    model.save_pretrained(str(path))
    return path


def make_world(root: Path, n_endpoints: int = 3, **overrides: Any) -> tuple[Path, dict[str, Path]]:
    """``root/base`` and ``root/ep<j>`` (base + random task vectors)."""
    base = save_random_llama(root / "base", 0, **overrides)
    endpoints = {f"ep{j}": save_random_llama(root / f"ep{j}", 10 + j, like=base)
                 for j in range(n_endpoints)}
    return base, endpoints


def run_mergekit(config: Mapping[str, Any], out: Path, seed: int | None = None) -> dict:
    """MergeKit 0.1.5 ``run_merge`` in process; returns the written tensors."""
    from mergekit.config import MergeConfiguration
    from mergekit.merge import run_merge
    from mergekit.options import MergeOptions
    from safetensors.torch import load_file

    options = MergeOptions(quiet=True, copy_tokenizer=False, write_model_card=False,
                           random_seed=seed)
    run_merge(MergeConfiguration.model_validate(dict(config)), str(out), options)
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(out.glob("*.safetensors")):
        tensors.update(load_file(str(file)))
    return tensors


def max_abs_diff(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    assert sorted(a) == sorted(b), (sorted(set(a) ^ set(b)))
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


def random_params(space: Any, seed: int) -> dict[str, float]:
    """A genotype drawn uniformly inside the space's bounds."""
    gen = torch.Generator().manual_seed(seed)
    out = {}
    for name, dist in space.distributions().items():
        u = torch.rand((), generator=gen, dtype=torch.float64).item()
        out[name] = dist.low + u * (dist.high - dist.low)
    return out
