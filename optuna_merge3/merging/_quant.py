"""Loading live models (full precision or bitsandbytes nf4) and writing tensors into them.

A 4-bit model keeps its ``Linear4bit`` modules; a merged weight is re-quantised with
``bitsandbytes.functional.quantize_4bit`` using the module's own ``blocksize``, ``quant_type``,
``compress_statistics`` and ``quant_storage`` -- the call ``Params4bit._quantize`` makes when
transformers loads a checkpoint with ``BitsAndBytesConfig(load_in_4bit=True)`` -- so a model
written by :meth:`InMemoryMerger.apply` matches one loaded in 4-bit from the saved merge.
Every other tensor (embeddings, norms, an untied lm_head) stays in full precision.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["MODEL_DTYPES", "QUANTIZATIONS", "Target", "load_causal_lm", "model_targets", "write_tensor"]

QUANTIZATIONS = (None, "nf4")
# dtypes of the live model (names of torch dtypes, as a study config writes them)
MODEL_DTYPES = ("float32", "bfloat16", "float16")


def load_causal_lm(
    path: str | Path, *, device: torch.device, dtype: torch.dtype, quantization: str | None
) -> Any:
    """``AutoModelForCausalLM.from_pretrained`` in ``dtype`` (nf4: bitsandbytes 4-bit)."""
    from transformers import AutoModelForCausalLM

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization: {quantization!r} is not one of {list(QUANTIZATIONS)}")
    kwargs: dict[str, Any] = {"dtype": dtype}
    if quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": str(device)}
    model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    if quantization is None:
        model = model.to(device)
    model.eval()
    return model


class Target:
    """Where a checkpoint tensor lives in a live model: a parameter, or a ``Linear4bit``."""

    __slots__ = ("module", "param", "quantized")

    def __init__(self, param: torch.Tensor, module: Any = None) -> None:
        self.param = param
        self.module = module
        self.quantized = module is not None


def model_targets(model: Any) -> dict[str, Target]:
    """Checkpoint name -> :class:`Target`; tied parameters appear under each of their names."""
    targets: dict[str, Target] = {}
    quantized: dict[str, Any] = {}
    for mod_name, module in model.named_modules():
        weight = getattr(module, "weight", None)
        if weight is not None and type(weight).__name__ == "Params4bit":
            quantized[f"{mod_name}.weight" if mod_name else "weight"] = module
    for name, param in model.named_parameters(remove_duplicate=False):
        targets[name] = Target(param, quantized.get(name))
    for name, buf in model.named_buffers(remove_duplicate=False):
        targets.setdefault(name, Target(buf))
    return targets


@torch.no_grad()
def write_tensor(target: Target, value: torch.Tensor) -> None:
    """Copy ``value`` into the live model (re-quantising into a ``Linear4bit``)."""
    if not target.quantized:
        if tuple(target.param.shape) != tuple(value.shape):
            raise ValueError(f"shape {tuple(value.shape)} does not fit {tuple(target.param.shape)}")
        param = target.param
        in_place = (  # merged in place by InMemoryMerger.apply: nothing to copy
            value.data_ptr() == param.data_ptr()
            and value.dtype == param.dtype
            and value.stride() == param.stride()
        )
        if not in_place:
            param.data.copy_(value)
        return
    import bitsandbytes.functional as bnbf

    weight = target.module.weight
    expected = weight.quant_state.shape
    if tuple(expected) != tuple(value.shape):
        raise ValueError(f"shape {tuple(value.shape)} does not fit 4-bit weight {tuple(expected)}")
    packed, state = bnbf.quantize_4bit(
        value.to(weight.device).contiguous(),
        blocksize=weight.blocksize,
        compress_statistics=weight.compress_statistics,
        quant_type=weight.quant_type,
        quant_storage=weight.quant_storage,
    )
    weight.data = packed
    weight.quant_state = state


def dequantized(target: Target) -> torch.Tensor:
    """The weight a ``Target`` currently holds, dequantised when 4-bit (for tests and checks)."""
    if not target.quantized:
        return target.param.detach().clone()
    import bitsandbytes.functional as bnbf

    weight = target.module.weight
    return bnbf.dequantize_4bit(weight.data, weight.quant_state)
