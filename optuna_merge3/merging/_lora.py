"""PEFT LoRA adapters as merge endpoints, without writing a dense checkpoint.

The endpoint weight of an adapted module is ``W_base + scaling * B @ A`` (Hu et al. 2022, eq. 3),
computed the way PEFT's ``merge_and_unload`` does (``peft/tuners/lora/layer.py``:
``get_delta_weight`` = ``transpose(B @ A, fan_in_fan_out) * scaling``, embeddings transposed),
with ``scaling = lora_alpha / r`` (``lora_alpha / sqrt(r)`` for rsLoRA; ``rank_pattern`` /
``alpha_pattern`` honoured). Only the small A / B factors stay in memory; the dense endpoint
tensor is built when the merger asks for it. DoRA, extra trainable biases and
``modules_to_save`` change more than ``B @ A`` and are refused with a clear error.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import torch

from optuna_merge3.merging._sources import DenseSource

__all__ = ["LoraSource"]

_KEY_RE = re.compile(r"^(?:base_model\.model\.)?(.+)\.(lora_A|lora_B|lora_embedding_A|"
                     r"lora_embedding_B)(?:\.[^.]+)?(?:\.weight)?$")

_SAVED_RE = re.compile(r"^(?:base_model\.model\.)?(.+)\.base_layer\.weight$")


def _pattern_value(patterns: dict[str, Any], module: str, default: Any) -> Any:
    """PEFT's rule: the first pattern key matching the end of the module name."""
    for key, value in patterns.items():
        if re.fullmatch(rf"(.*\.)?{key}", module):
            return value
    return default


class LoraSource:
    """An endpoint = ``base`` + LoRA deltas read from ``adapter_model.safetensors``."""

    kind = "lora"

    def __init__(self, path: str | Path, base: DenseSource) -> None:
        from safetensors.torch import load_file

        self.path = Path(path)
        self.base = base
        cfg = json.loads((self.path / "adapter_config.json").read_text())
        self.adapter_config = cfg
        where = f"{self.path}/adapter_config.json"
        if cfg.get("peft_type", "LORA") != "LORA":
            raise ValueError(f"{where}: peft_type {cfg.get('peft_type')!r} is not LORA")
        if cfg.get("use_dora"):
            raise ValueError(f"{where}: DoRA adapters are not supported (magnitude vector)")
        if cfg.get("bias", "none") != "none":
            raise ValueError(f"{where}: bias={cfg['bias']!r} adapters are not supported")
        if cfg.get("modules_to_save"):
            raise ValueError(f"{where}: modules_to_save {cfg['modules_to_save']} not supported")
        weights = self.path / "adapter_model.safetensors"
        if not weights.is_file():
            raise ValueError(f"{self.path}: adapter_model.safetensors not found")
        factors: dict[str, dict[str, torch.Tensor]] = {}
        # With embeddings among the targets PEFT also saves their full weight
        # (``save_embedding_layers``): it replaces the base tensor of that module.
        self._replaced: dict[str, torch.Tensor] = {}
        for key, tensor in load_file(str(weights)).items():
            saved = _SAVED_RE.match(key)
            if saved is not None:
                self._replaced[f"{saved.group(1)}.weight"] = tensor
                continue
            match = _KEY_RE.match(key)
            if match is None:
                raise ValueError(f"{weights}: unsupported adapter tensor {key!r} (not lora_A/B)")
            factors.setdefault(match.group(1), {})[match.group(2)] = tensor
        self._deltas: dict[str, tuple[torch.Tensor, torch.Tensor, float, bool]] = {}
        base_names = set(base.names())
        for module, pair in factors.items():
            embedding = "lora_embedding_A" in pair or "lora_embedding_B" in pair
            a = pair.get("lora_embedding_A" if embedding else "lora_A")
            b = pair.get("lora_embedding_B" if embedding else "lora_B")
            if a is None or b is None:
                raise ValueError(f"{weights}: {module} lacks its A or B factor")
            target = f"{module}.weight"
            if target not in base_names:
                raise ValueError(f"{weights}: adapted module {module!r} has no base tensor "
                                 f"{target!r}; is this adapter for this base model?")
            r = int(_pattern_value(cfg.get("rank_pattern") or {}, module, a.shape[0]))
            alpha = float(_pattern_value(cfg.get("alpha_pattern") or {}, module,
                                         cfg.get("lora_alpha", 8)))
            scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
            transpose = embedding or bool(cfg.get("fan_in_fan_out"))
            self._deltas[target] = (a, b, scaling, transpose)
            expected = tuple(self.delta(target, torch.device("cpu"), torch.float32).shape)
            if expected != base.shape(target):
                raise ValueError(f"{weights}: delta of {module} has shape {expected}, base "
                                 f"tensor {base.shape(target)}")
        for target, tensor in self._replaced.items():
            if target not in base_names or tuple(tensor.shape) != base.shape(target):
                raise ValueError(f"{weights}: saved weight {target!r} {tuple(tensor.shape)} does "
                                 "not fit the base model (vocab size mismatch?)")

    @property
    def config_dir(self) -> Path:
        return self.base.config_dir

    def adapted(self) -> list[str]:
        """Tensor names this adapter changes."""
        return sorted(set(self._deltas) | set(self._replaced))

    def names(self) -> list[str]:
        return self.base.names()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.base.shape(name)

    def is_float(self, name: str) -> bool:
        return self.base.is_float(name)

    def config(self) -> dict[str, Any]:
        return self.base.config()

    def delta(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """``transpose(B @ A) * scaling`` in float32 when the factors are half precision."""
        a, b, scaling, transpose = self._deltas[name]
        a, b = a.to(device), b.to(device)
        if a.dtype in (torch.float16, torch.bfloat16):
            a, b = a.float(), b.float()
        out = b @ a
        if transpose:
            out = out.T
        return (out * scaling).to(dtype)

    def get(self, name: str, device: torch.device, dtype: torch.dtype,
            base_tensor: torch.Tensor | None = None) -> torch.Tensor:
        """The endpoint tensor; ``base_tensor`` saves a second read of the base."""
        if name in self._replaced:
            base = self._replaced[name].to(device=device, dtype=dtype)
        elif base_tensor is not None:
            base = base_tensor
        else:
            base = self.base.get(name, device, dtype)
        if name not in self._deltas:
            return base
        return base + self.delta(name, device, base.dtype)
