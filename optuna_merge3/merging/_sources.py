"""Weight sources: a safetensors checkpoint read through its memory map.

A source answers ``names()``, ``shape(name)``, ``dtype(name)`` from the safetensors header
without reading data, and ``get(name, device, dtype)`` reads one tensor from the mmap. PEFT LoRA
adapters are sources too (``_lora.py``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

__all__ = ["DenseSource", "open_source", "is_lora_dir"]


def is_lora_dir(path: str | Path) -> bool:
    """A PEFT adapter directory (``adapter_config.json`` next to the adapter weights)."""
    return (Path(path) / "adapter_config.json").is_file()


class DenseSource:
    """A HF checkpoint directory (``model.safetensors`` or sharded with an index) or one file."""

    kind = "dense"

    def __init__(self, path: str | Path) -> None:
        from safetensors import safe_open

        self.path = Path(path)
        files = _safetensors_files(self.path)
        self._handles = [safe_open(str(f), framework="pt", device="cpu") for f in files]
        self._where: dict[str, Any] = {}
        for handle in self._handles:
            for key in handle.keys():
                self._where[key] = handle
        self._shapes = {k: tuple(h.get_slice(k).get_shape()) for k, h in self._where.items()}
        self._dtypes = {k: h.get_slice(k).get_dtype() for k, h in self._where.items()}

    @property
    def config_dir(self) -> Path:
        return self.path if self.path.is_dir() else self.path.parent

    def names(self) -> list[str]:
        return sorted(self._where)

    def shape(self, name: str) -> tuple[int, ...]:
        return self._shapes[name]

    def is_float(self, name: str) -> bool:
        return self._dtypes[name] in ("F16", "BF16", "F32", "F64", "F8_E4M3", "F8_E5M2")

    def raw(self, name: str) -> torch.Tensor:
        """The tensor as stored, read from the memory map into host memory."""
        return self._where[name].get_tensor(name)

    def get(self, name: str, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        tensor = self.raw(name)
        if tensor.is_floating_point():
            return tensor.to(device=device, dtype=dtype)
        return tensor.to(device=device)

    def config(self) -> dict[str, Any]:
        cfg = self.config_dir / "config.json"
        return json.loads(cfg.read_text()) if cfg.is_file() else {}


def _safetensors_files(path: Path) -> list[Path]:
    if path.is_file():
        if path.suffix != ".safetensors":
            raise ValueError(f"{path}: expected a .safetensors file or a checkpoint directory")
        return [path]
    if not path.is_dir():
        raise ValueError(f"{path}: checkpoint not found")
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if single.is_file():
        return [single]
    found = sorted(path.glob("*.safetensors"))
    if not found:
        raise ValueError(
            f"{path}: no safetensors weights (model.safetensors or an index); convert "
            "pytorch_model.bin checkpoints with save_pretrained(safe_serialization=True)"
        )
    return found


def open_source(path: str | Path, base: DenseSource | None, name: str) -> Any:
    """A dense checkpoint, or a LoRA adapter on top of ``base``."""
    if is_lora_dir(path):
        from optuna_merge3.merging._lora import LoraSource

        if base is None:
            raise ValueError(
                f"endpoint {name!r}: {path} is a LoRA adapter, which needs a base model"
            )
        return LoraSource(path, base)
    return DenseSource(path)
