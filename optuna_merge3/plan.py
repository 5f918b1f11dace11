"""Memory plan of a study: will base + endpoints + the live model fit, and in which mode?

Pure arithmetic on what the safetensors headers say (8-byte header length + JSON header, no
weights read) and on the config: bytes per parameter for each method x mode, below. ``auto``
picks the fastest mode that fits the budgets; a mode that cannot fit is refused with the
numbers and the mode that would. GB here are 2^30 bytes (what ``nvidia-smi`` calls MiB / 1024).

The merger caches nothing between trials (``merging/_merger.py``), so the two modes differ only
in where the inputs (base + endpoints) live (``[merge] memory`` / ``inputs``):

* ``resident`` (``inputs = "device"``): every input tensor is read once onto the merge device; a
  trial reads no file. ``InMemoryMerger(stream=False)``. Fastest on a GPU, and the only mode
  that needs the inputs' bytes on the device.
* ``stream`` (``inputs = "cpu"``): each tensor is read from the memory-mapped checkpoints (host
  page cache) when it is merged, moved to the device and freed, so the extra memory is a few of
  the largest tensors whatever the depth. ``InMemoryMerger(stream=True)``. (Inputs "kept" in
  host memory would be that same memory map: there is no third mode.)

On a CPU device the two are one place, and everything counts against the host budget.

Bytes (P float parameters of one checkpoint, Q its 2-D linear weights, I inputs = endpoints + a
base, b = bytes of the merge dtype ``[evaluation] dtype``, T = elements of the largest tensor,
w = WORKSPACE_BYTES[method]):

============================  ============================  ===================================
part                          resident                      stream
============================  ============================  ===================================
live model, fp                P * b                         P * b
live model, nf4               Q * 0.5625 + (P - Q) * b      same
                              (4 bits + fp32 absmax / 64)
inputs                        I * P * b on the device       host page cache I * file bytes
                              (on CPU with the file's       (droppable, re-read when short)
                              dtype: the memory map)
per-tensor workspace          T * w                         T * (w + 2 * I * b on a GPU: this
                                                            tensor's inputs and the next's)
generation                    KV cache + prefill + logits   same
============================  ============================  ===================================
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "INPUTS",
    "MEMORY_MODES",
    "WORKSPACE_BYTES",
    "MemoryPlan",
    "ModeEstimate",
    "ModelShape",
    "estimate_mode",
    "model_shape",
    "plan_memory",
    "read_safetensors_header",
    "study_max_new_tokens",
]

GB = 2**30
MEMORY_MODES = ("auto", "resident", "stream")
INPUTS = ("cpu", "device")
_INPUTS_OF = {"resident": "device", "stream": "cpu"}
# bitsandbytes nf4 as transformers loads it (no double quantisation): 4 bits per weight plus one
# fp32 absmax per block of 64.
NF4_BYTES = 0.5 + 4 / 64
# Prompt length assumed for the KV cache (the plan reads no task text): long few-shot prompts.
PROMPT_TOKENS = 512
# Python + torch + transformers in host memory (measured 0.14-0.4 GB anonymous, docs/merging.md)
# and the CUDA context + allocator slack on a GPU (typical, not measured here: no GPU).
RUNTIME_HOST_GB = 0.5
RUNTIME_DEVICE_GB = 0.75
_FLOAT_DTYPES = {"F16": 2, "BF16": 2, "F32": 4, "F64": 8, "F8_E4M3": 1, "F8_E5M2": 1}
_NOT_QUANTIZED = ("embed_tokens", "lm_head", "wte", "embed_out", "word_embeddings")

# Bytes per element of the largest tensor while that tensor is merged: task vectors, masks,
# sort workspace, the fp32 sum. Measured on CPU in bf16 (benchmarks/merge_scale.py at
# Mistral-7B's layer shape, T = 131M, bf16 and nf4 live models, 1-4 layers: peak anonymous
# memory beyond the live model and the runtime, over T: task arithmetic 9.3-12.4, dare_ties
# 24.1-27.4, ties 23.3-32.0), rounded up; linear / slerp / model_stock are not measured and
# get task arithmetic's. On a GPU the same tensors are allocated.
_PLAIN, _TASK_VECTORS, _DARE, _SORT = 13.0, 13.0, 28.0, 36.0
WORKSPACE_BYTES: dict[str, float] = {
    "linear": _PLAIN,
    "slerp": _PLAIN,
    "nuslerp": _PLAIN,
    "model_stock": _PLAIN,
    "task_arithmetic": _TASK_VECTORS,
    "dare_linear": _DARE,
    "dare_ties": _DARE,
    "ties": _SORT,
    "breadcrumbs": _SORT,
    "breadcrumbs_ties": _SORT,
    "della": _SORT,
    "della_linear": _SORT,
}


# -- reading headers ------------------------------------------------------------------------------
def read_safetensors_header(path: str | Path) -> dict[str, Any]:
    """The JSON header of a safetensors file (tensor name -> dtype, shape, offsets); no data.

    Raises:
        ValueError: the file is too short or its header is not JSON.
    """
    path = Path(path)
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) != 8:
            raise ValueError(f"{path}: not a safetensors file (shorter than 8 bytes)")
        (length,) = struct.unpack("<Q", head)
        raw = handle.read(length)
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"{path}: not a safetensors file (header is not JSON: {exc})") from exc
    if len(raw) != length or not isinstance(header, dict):
        raise ValueError(f"{path}: truncated safetensors header")
    header.pop("__metadata__", None)
    end = 8 + length + max((int(e["data_offsets"][1]) for e in header.values()), default=0)
    if path.stat().st_size < end:
        raise ValueError(f"{path}: truncated safetensors file: its header describes {end} "
                         f"bytes, the file has {path.stat().st_size}")
    return header


@dataclass(frozen=True)
class ModelShape:
    """What a checkpoint's headers and ``config.json`` say about its memory."""

    n_params: int  # float parameters
    n_quantizable: int  # 2-D linear weights nf4 quantises (not embeddings / lm_head)
    largest: int  # elements of the largest float tensor
    file_bytes: int  # bytes of the float tensors on disk
    n_layers: int = 0
    n_kv_heads: int = 0
    head_dim: int = 0
    vocab: int = 0
    intermediate: int = 0


def model_shape(path: str | Path) -> ModelShape:
    """Read a checkpoint folder's (or file's) safetensors headers and ``config.json``."""
    from optuna_merge3.merging._sources import _safetensors_files

    path = Path(path)
    n_params = n_quantizable = largest = file_bytes = 0
    for file in _safetensors_files(path):
        for name, entry in read_safetensors_header(file).items():
            size = _FLOAT_DTYPES.get(entry.get("dtype"))
            if size is None:
                continue
            numel = 1
            for dim in entry["shape"]:
                numel *= int(dim)
            n_params += numel
            file_bytes += numel * size
            largest = max(largest, numel)
            if (len(entry["shape"]) == 2 and name.endswith(".weight")
                    and not any(h in name for h in _NOT_QUANTIZED)):
                n_quantizable += numel
    config_file = (path if path.is_dir() else path.parent) / "config.json"
    config = json.loads(config_file.read_text()) if config_file.is_file() else {}
    config = config.get("text_config", config)
    heads = int(config.get("num_attention_heads", 0) or 0)
    hidden = int(config.get("hidden_size", 0) or 0)
    return ModelShape(
        n_params, n_quantizable, largest, file_bytes,
        n_layers=int(config.get("num_hidden_layers", 0) or 0),
        n_kv_heads=int(config.get("num_key_value_heads", heads) or 0),
        head_dim=int(config.get("head_dim") or (hidden // heads if heads else 0)),
        vocab=int(config.get("vocab_size", 0) or 0),
        intermediate=int(config.get("intermediate_size", 0) or 0),
    )


# -- the arithmetic -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModeEstimate:
    """Peak memory of one mode, in GB, split by part."""

    memory: str
    device: dict[str, float]  # empty when the merge device is the CPU (all of it is host)
    host: dict[str, float]
    page_cache_gb: float  # checkpoint pages the mode reads per trial (droppable, re-read)

    @property
    def inputs(self) -> str:
        """Where the inputs live between trials: ``device`` (resident) or ``cpu`` (stream)."""
        return _INPUTS_OF[self.memory]

    @property
    def device_gb(self) -> float:
        return sum(self.device.values())

    @property
    def host_gb(self) -> float:
        return sum(self.host.values())

    @property
    def label(self) -> str:
        """``stream, inputs on cpu``; on a CPU device just the memory mode (one place)."""
        return f"{self.memory}, inputs on {self.inputs}" if self.device else self.memory


def estimate_mode(
    memory: str,
    shape: ModelShape,
    method: str,
    n_endpoints: int,
    *,
    has_base: bool,
    on_gpu: bool,
    dtype_bytes: int,
    quantization: str | None,
    batch_size: int,
    max_new_tokens: int,
) -> ModeEstimate:
    """Peak memory of ``memory`` (resident / stream) for this checkpoint and study."""
    p, b = shape.n_params, dtype_bytes
    n_inputs = n_endpoints + int(has_base)
    live = p * b if quantization is None else \
        shape.n_quantizable * NF4_BYTES + (p - shape.n_quantizable) * b
    model = {"live model": live / GB}
    tokens = batch_size * (PROMPT_TOKENS + max_new_tokens)
    kv = 2 * shape.n_layers * shape.n_kv_heads * shape.head_dim * b * tokens
    prefill = batch_size * PROMPT_TOKENS * 2 * shape.intermediate * b
    logits = 2 * batch_size * shape.vocab * 4
    generation = {"generation": (kv + prefill + logits) / GB}
    if on_gpu:
        generation["CUDA runtime"] = RUNTIME_DEVICE_GB
    runtime = {"runtime": RUNTIME_HOST_GB}
    workspace = WORKSPACE_BYTES[method]
    # On CPU an input of the file's own dtype is the memory map itself (no copy).
    copied = on_gpu or shape.file_bytes != p * b
    if memory == "resident":
        stored = {"inputs": n_inputs * p * b / GB} if copied else {}
        merge = {**model, **stored, "workspace": shape.largest * workspace / GB, **generation}
        page = 0.0 if copied else shape.file_bytes * n_inputs / GB
    else:
        # On a GPU the next tensor's inputs are already in flight (``_stream``: one ahead), and
        # lm_head / embed_tokens, the two largest, are neighbours in sorted order: 2 x I tensors.
        in_flight = 2 if on_gpu else 1
        per_tensor = workspace + (in_flight * n_inputs * b if copied else 0)
        merge = {**model, "workspace": shape.largest * per_tensor / GB, **generation}
        page = shape.file_bytes * n_inputs / GB
    if not on_gpu:
        return ModeEstimate(memory, {}, {**merge, **runtime}, page)
    if memory == "stream":  # one pinned staging buffer per input, the largest tensor's size
        runtime["pinned staging"] = n_inputs * shape.largest * shape.file_bytes / p / GB
    return ModeEstimate(memory, merge, runtime, page)


@dataclass
class MemoryPlan:
    """Every mode's estimate, the budgets and the mode the config gets (``chosen``)."""

    method: str
    n_endpoints: int
    shape: ModelShape
    on_gpu: bool
    device_budget_gb: float
    host_budget_gb: float
    requested: str
    requested_inputs: str | None
    estimates: list[ModeEstimate] = field(default_factory=list)

    def fits(self, est: ModeEstimate) -> bool:
        """Within both budgets (on CPU everything is host memory)."""
        return est.device_gb <= self.device_budget_gb and \
            est.host_gb <= self.host_budget_gb

    def _wanted(self, est: ModeEstimate) -> bool:
        memory_ok = self.requested in ("auto", est.memory)
        inputs_ok = self.requested_inputs in (None, est.inputs) or not self.on_gpu
        return memory_ok and inputs_ok

    @property
    def chosen(self) -> ModeEstimate | None:
        """The fastest wanted mode that fits, or None."""
        return next((e for e in self.estimates if self._wanted(e) and self.fits(e)), None)

    @property
    def stream(self) -> bool:
        """Whether the merger should stream (``InMemoryMerger(stream=True)``)."""
        chosen = self.chosen
        return chosen is not None and chosen.memory == "stream"

    def _why_not(self, est: ModeEstimate) -> str:
        over = []
        if est.device_gb > self.device_budget_gb:
            over.append(f"device {_gb(est.device_gb)} GB > {_gb(self.device_budget_gb)} GB")
        if est.host_gb > self.host_budget_gb:
            over.append(f"host {_gb(est.host_gb)} GB > {_gb(self.host_budget_gb)} GB")
        return "no: " + ", ".join(over)

    def table(self) -> str:
        """A plain-text summary: the checkpoint, the budgets, every mode and the choice."""
        s = self.shape
        device = f"device budget {_gb(self.device_budget_gb)} GB, " if self.on_gpu else ""
        lines = [
            f"{self.method}, {self.n_endpoints} endpoints: {s.n_params / 1e6:,.1f}M parameters "
            f"({_gb(s.file_bytes / GB)} GB per checkpoint), largest tensor "
            f"{s.largest / 1e6:,.1f}M",
            f"{device}host budget {_gb(self.host_budget_gb)} GB",
            "",
            "| mode | device GB | host GB | page cache GB | fits |",
            "|---|---:|---:|---:|---|",
        ]
        for est in self.estimates:
            dev = _gb(est.device_gb) if self.on_gpu else "-"
            verdict = "yes" if self.fits(est) else self._why_not(est)
            lines.append(f"| {est.label} | {dev} | {_gb(est.host_gb)} | "
                         f"{_gb(est.page_cache_gb)} | {verdict} |")
        chosen = self.chosen
        if chosen is not None:
            parts = chosen.device if self.on_gpu else chosen.host
            where = "device" if self.on_gpu else "host"
            lines += ["", f"chosen: {chosen.label} ({where}: " + ", ".join(
                f"{k} {_gb(v)}" for k, v in parts.items()) + " GB)"]
            if chosen.page_cache_gb > self.host_budget_gb - chosen.host_gb:
                lines.append(f"note: the {chosen.page_cache_gb:.1f} GB of checkpoints do not fit "
                             "the host's page cache: every trial re-reads them from disk")
        return "\n".join(lines)

    def check(self, where: str = "<config>") -> ModeEstimate:
        """The chosen mode; raises ``ConfigError`` naming the numbers and a mode that fits."""
        from optuna_merge3.config import ConfigError

        chosen = self.chosen
        if chosen is not None:
            return chosen
        wanted = [e for e in self.estimates if self._wanted(e)]
        others = [e for e in self.estimates if self.fits(e)]
        asked = f"merge.memory = {self.requested!r}" + (
            f", merge.inputs = {self.requested_inputs!r}" if self.requested_inputs else "")
        reasons = "; ".join(f"{e.label}: {self._why_not(e)}" for e in wanted)
        hint = (f"memory = {others[0].memory!r}" + (f", inputs = {others[0].inputs!r}"
                                                     if self.on_gpu else "")
                + f" would fit ({self._footprint(others[0])})") if others else \
            "no mode fits: a smaller model, fewer endpoints, nf4 or a larger budget"
        raise ConfigError(f"{where}: {asked} does not fit ({reasons}); {hint}")

    def _footprint(self, est: ModeEstimate) -> str:
        device = f"device {_gb(est.device_gb)} GB, " if self.on_gpu else ""
        return f"{device}host {_gb(est.host_gb)} GB"


def _gb(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


# -- budgets and the config -----------------------------------------------------------------------
def host_memory_gb() -> float:
    """``MemTotal`` of /proc/meminfo (not MemAvailable: a plan should not depend on the load)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024 / GB
    except OSError:
        pass
    import os

    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB


def device_memory_gb(device: str) -> float:
    """Total memory of a CUDA device as torch reports it."""
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        raise ValueError(f"evaluation.device = {device!r}: torch reports no CUDA memory for it; "
                         "set merge.device_memory_gb (also to plan for another machine)")
    return torch.cuda.get_device_properties(torch.device(device)).total_memory / GB


def plan_memory(config: Any, max_new_tokens: int = 256) -> MemoryPlan:
    """The memory plan of a :class:`~optuna_merge3.config.StudyConfig` (reads headers only).

    Args:
        config: the study config (``[merge]`` with its plan keys, ``[evaluation]``).
        max_new_tokens: the longest generation of the study's tasks (for the KV cache).
    """
    merge, evaluation = config.merge, config.evaluation
    if merge.method not in WORKSPACE_BYTES:
        raise ValueError(f"merge.method: {merge.method!r} is not one of "
                         f"{sorted(WORKSPACE_BYTES)}")
    shape = model_shape(merge.base or next(iter(merge.endpoints.values())))
    on_gpu = evaluation.device != "cpu"
    host = merge.host_memory_gb or host_memory_gb()
    device = (merge.device_memory_gb or device_memory_gb(evaluation.device)) if on_gpu else host
    dtype_bytes = {"float32": 4, "float64": 8}.get(evaluation.dtype, 2)
    plan = MemoryPlan(merge.method, len(merge.endpoints), shape, on_gpu, float(device),
                      float(host), merge.memory, merge.inputs)
    for memory in ("resident", "stream"):  # fastest first
        plan.estimates.append(estimate_mode(
            memory, shape, merge.method, plan.n_endpoints, has_base=merge.base is not None,
            on_gpu=on_gpu, dtype_bytes=dtype_bytes, quantization=evaluation.quantization,
            batch_size=evaluation.batch_size, max_new_tokens=max_new_tokens))
    return plan


def study_max_new_tokens(config: Any, default: int = 256) -> int:
    """The longest ``max_new_tokens`` of the study's tasks: the entry's override, else the task
    file's (small JSONL); an lm-eval task without an override counts as ``default`` (loading it
    would import lm-eval and its dataset)."""
    from optuna_merge3.evaluation import load_task

    def tokens(entry: Any) -> int:
        if entry.max_new_tokens is not None:
            return int(entry.max_new_tokens)
        if entry.lm_eval is not None:
            return default
        return load_task(entry.path).generation.max_new_tokens

    return max(tokens(t) for t in config.tasks)
