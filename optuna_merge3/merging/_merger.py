"""``InMemoryMerger``: genotype -> merged weights written into a live model, no file per trial.

Base and endpoints are opened once through their safetensors memory maps. By default every
input tensor is read once into ``device`` memory in ``dtype`` and a per-tensor ``cache`` dict is
kept across trials, so the merge math (``merge_tensor``) computes task vectors and magnitude
orders once and a trial does no sort (``stream=False``). With ``stream=True`` each input tensor
is read from the mmap when needed and nothing is cached: peak memory stays near one model plus
one tensor per input (measured in ``docs/merging.md``), at the cost of re-reading and recomputing
per trial. Randomised methods (DARE, DELLA) draw from one ``torch.Generator`` seeded with the
trial's ``seed`` and visit tensors in sorted name order and endpoints in config order, as
MergeKit's ``merge_state_dicts`` does after ``torch.manual_seed(seed)`` on a checkpoint loaded
from safetensors: the same genotype and seed give the same model.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from optuna_merge3.merging._gradient import LAYER_RE
from optuna_merge3.merging._m_gta import RNGS
from optuna_merge3.merging._quant import load_causal_lm, model_targets, write_tensor
from optuna_merge3.merging._sources import DenseSource, open_source
from optuna_merge3.merging._space import MergeSpace

__all__ = ["InMemoryMerger"]

_logger = logging.getLogger(__name__)
_VOCAB_HINTS = ("embed_tokens", "lm_head", "wte", "embed_out", "word_embeddings")


class InMemoryMerger:
    """Merge endpoints in memory and write the result into a live transformers model.

    Args:
        base: the base checkpoint (directory or ``.safetensors``); None only for methods that
            need no base (linear, nuslerp without base, slerp between two endpoints).
        endpoints: endpoint name -> checkpoint directory or PEFT LoRA adapter directory, in the
            order of ``space.endpoints``.
        space: the :class:`MergeSpace` whose genotypes :meth:`apply` accepts.
        device: where inputs, the merge math and the live model live.
        dtype: floating dtype of the inputs, the math and the live model.
        stream: read inputs from the mmap per trial instead of keeping them in memory.
        fused: run the task-vector methods' element-wise merge as one compiled loop per tensor
            (``torch.compile``; the same bits as the eager path, which is used where compiling
            fails). None (default): fused on CPU for models of at least ``FUSE_MIN_ELEMENTS``
            weights, where the one-off compile (~5-30 s per kernel variant) pays for itself; on
            CUDA only when asked (``True``: triton kernels, untested here for lack of a GPU).
        rng: DARE / DELLA masks: ``"mergekit"`` (default; MergeKit's draws, so a trial's YAML run
            through MergeKit with the same seed gives the same tensors) or ``"counter"``
            (hash-based, one compiled pass on all cores, order-free: faster than MergeKit's
            sequential draws only with several cores; reproduce it in MergeKit through
            :func:`optuna_merge3.merging.counter_bernoulli`).
    """

    #: Model size (weights) from which ``fused=None`` turns fusion on.
    FUSE_MIN_ELEMENTS = 1 << 25

    def __init__(
        self,
        base: str | Path | None,
        endpoints: Mapping[str, str | Path],
        space: MergeSpace,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        stream: bool = False,
        fused: bool | None = None,
        rng: str = "mergekit",
    ) -> None:
        from optuna_merge3.merging._methods import merge_tensor

        self._merge_tensor = merge_tensor
        self.space = space
        self.device = torch.device(device)
        self.dtype = dtype
        self.stream = stream
        if list(endpoints) != list(space.endpoints):
            raise ValueError(
                f"endpoints {list(endpoints)} do not match the merge space's {space.endpoints}"
            )
        if space.math_base == "base" and base is None:
            raise ValueError(f"method {space.method!r} needs a base model; base is None")
        self.base_path = Path(base) if base is not None else None
        self.endpoint_paths = {n: Path(p) for n, p in endpoints.items()}
        self._base = DenseSource(base) if base is not None else None
        self._sources = {n: open_source(p, self._base, n) for n, p in endpoints.items()}
        self.tensor_names = self._check_compatible()
        self.float_names = [n for n in self.tensor_names if self._reference.is_float(n)]
        self.n_layers = self._count_layers()
        if rng not in RNGS:
            raise ValueError(f"rng must be one of {RNGS}, got {rng!r}")
        self.rng = rng
        if fused is None:  # CPU only: the CUDA kernels were never run (no GPU was available)
            size = sum(math.prod(self._reference.shape(n)) for n in self.float_names)
            fused = self.device.type == "cpu" and size >= self.FUSE_MIN_ELEMENTS
        self.fused = bool(fused)
        self._resident: dict[str, dict[str, torch.Tensor]] = {}
        self._caches: dict[str, dict] = {n: {} for n in self.float_names}
        if not stream:
            started = time.perf_counter()
            for name in self.tensor_names:
                self._resident[name] = self._read_inputs(name)
            _logger.info("read %d tensors of %d inputs in %.2f s", len(self.tensor_names),
                         1 + len(self._sources), time.perf_counter() - started)

    # -- inputs ---------------------------------------------------------------------------------
    @property
    def _reference(self) -> Any:
        return self._base if self._base is not None else self._sources[self.space.endpoints[0]]

    @property
    def model_dir(self) -> Path:
        """The directory whose config (and tokenizer) the live model uses."""
        return self._reference.config_dir

    def _check_compatible(self) -> list[str]:
        ref = self._reference
        ref_label = "base" if self._base is not None else f"endpoint {self.space.endpoints[0]!r}"
        names = ref.names()
        for label, source in self._sources.items():
            other = source.names()
            if other != names:
                missing = sorted(set(names) - set(other))[:5]
                extra = sorted(set(other) - set(names))[:5]
                raise ValueError(
                    f"endpoint {label!r} has different tensor names than the {ref_label}: "
                    f"missing {missing}, extra {extra}"
                )
            for name in names:
                if source.shape(name) != ref.shape(name):
                    what = "vocab size mismatch" if any(h in name for h in _VOCAB_HINTS) else \
                        "shape mismatch"
                    raise ValueError(
                        f"{what}: endpoint {label!r} tensor {name!r} has shape "
                        f"{source.shape(name)}, the {ref_label} has {ref.shape(name)}"
                    )
        return names

    def _count_layers(self) -> int:
        config = self._reference.config()
        text = config.get("text_config", config)
        for key in ("num_hidden_layers", "n_layer", "num_layers"):
            if isinstance(text.get(key), int):
                return int(text[key])
        found = [int(m.group(1)) for n in self.tensor_names if (m := LAYER_RE.search(n))]
        return max(found) + 1 if found else 1

    def _read_inputs(self, name: str) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self._base is not None:
            out["base"] = self._base.get(name, self.device, self.dtype)
        for label, source in self._sources.items():
            if source.kind == "lora":
                out[label] = source.get(name, self.device, self.dtype, base_tensor=out["base"])
            else:
                out[label] = source.get(name, self.device, self.dtype)
        return out

    def _inputs(self, name: str) -> dict[str, torch.Tensor]:
        if self.stream:
            return self._read_inputs(name)
        return self._resident[name]

    # -- merging --------------------------------------------------------------------------------
    def _merged(
        self,
        params: Mapping[str, float],
        seed: int,
        outs: Mapping[str, torch.Tensor] | None = None,
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, merged tensor) in sorted name order; params already validated. A tensor in
        ``outs`` (a live full-precision parameter) receives its merge in place and is yielded."""
        generator = torch.Generator(device=self.device).manual_seed(int(seed))
        space = self.space
        for name in self.tensor_names:
            inputs = self._inputs(name)
            if name not in self._caches:  # integer buffers: copied from the reference input
                yield name, inputs["base" if "base" in inputs else space.endpoints[0]]
                continue
            base = inputs[space.math_base] if space.math_base is not None else None
            tensors = [inputs[e] for e in space.math_endpoints]
            per_endpoint, options = space.resolve(params, name, self.n_layers)
            yield name, self._merge_tensor(
                space.method,
                base,
                tensors,
                per_endpoint,
                options,
                generator=generator,
                cache=None if self.stream else self._caches[name],
                tensor_name=name,
                out=outs.get(name) if outs else None,
                fused=self.fused,
                rng=self.rng,
            )

    def _direct_outputs(self, targets: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Live parameters the merge can write into directly: full precision, contiguous, of
        the merge's dtype / device / shape, and not an input (never the case for a model from
        :meth:`load_model`). Others (4-bit weights, buffers) get the merged tensor copied."""
        outs: dict[str, torch.Tensor] = {}
        for name in self.float_names:
            target = targets.get(name)
            if target is None or target.quantized:
                continue
            data = target.param.data
            if (
                data.dtype != self.dtype
                or data.device != self.device
                or not data.is_contiguous()
                or tuple(data.shape) != tuple(self._reference.shape(name))
                or any(data.data_ptr() == t.data_ptr() for t in self._resident.get(name, {}).values())
            ):
                continue
            outs[name] = data
        return outs

    def merged_state_dict(self, params: Mapping[str, float], seed: int = 0) -> dict[str, Any]:
        """The merged checkpoint as fresh tensors (never aliasing the inputs)."""
        params = self.space.validate(params)
        # A result may be an input or live in the method's cache (e.g. model_stock): copy.
        return {name: tensor.clone() for name, tensor in self._merged(params, seed)}

    def mergekit_bernoulli(
        self, params: Mapping[str, float], seed: int = 0
    ) -> Callable[..., torch.Tensor]:
        """A stand-in for ``torch.bernoulli`` that makes MergeKit draw this merger's counter masks
        (``rng="counter"``) for genotype ``params`` and ``seed``: the documented hook to reproduce
        a counter-mask trial in MergeKit. Patch ``torch.bernoulli`` with it around one MergeKit
        merge of the same genotype that draws tensor by tensor (``run_merge``, or
        ``merge_state_dicts`` with ``BatchOptions(max_groups=1)``): MergeKit visits tensors in
        sorted name order and endpoints in config order, skipping densities >= 1."""
        from optuna_merge3.merging._fused import counter_bernoulli, mask_key

        params = self.space.validate(params)
        della = self.space.method.startswith("della")
        draws = []
        for name in sorted(self.float_names):
            per_endpoint, _ = self.space.resolve(params, name, self.n_layers)
            for j, p in enumerate(per_endpoint):
                density = p.get("density", 1.0)
                if density < 1 and not (della and density <= 0):
                    draws.append(mask_key(seed, name, j))
        keys = iter(draws)

        def bernoulli(probs: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
            key = next(keys, None)
            if key is None:
                raise RuntimeError("MergeKit drew more masks than this genotype has")
            return counter_bernoulli(probs, key)

        return bernoulli

    def warm_up(self, seed: int = 0) -> float:
        """Fill the per-tensor caches now (task vectors, magnitude ranks ...) so that the first
        trial costs what later ones do; returns the seconds spent. No-op when streaming."""
        if self.stream:
            return 0.0
        started = time.perf_counter()
        for _ in self._merged(self.space.uniform_params(), seed):
            pass
        return time.perf_counter() - started

    def _targets(self, model: Any) -> dict[str, Any]:
        targets = model_targets(model)
        missing = [n for n in self.tensor_names if n not in targets]
        if missing:
            raise ValueError(f"the model has no parameter for checkpoint tensor(s) {missing[:5]}")
        return targets

    def _write(
        self, model: Any, items: Iterator[tuple[str, torch.Tensor]], targets: Any = None
    ) -> dict[str, float]:
        targets = targets if targets is not None else self._targets(model)
        merge_s = write_s = 0.0
        quantized = 0
        clock = time.perf_counter()
        for name, tensor in items:
            now = time.perf_counter()
            merge_s += now - clock
            target = targets[name]
            write_tensor(target, tensor)
            quantized += target.quantized
            clock = time.perf_counter()
            write_s += clock - now
        return {"merge_s": merge_s, "write_s": write_s, "total_s": merge_s + write_s,
                "n_tensors": float(len(self.tensor_names)), "n_quantized": float(quantized)}

    def apply(self, params: Mapping[str, float], model: Any, seed: int = 0) -> dict[str, float]:
        """Write the merge of genotype ``params`` into ``model`` in place; return timings.

        ``model`` is one from :meth:`load_model` (full precision or nf4). Nothing is written to
        disk. A full-precision parameter of the merger's dtype receives its merge in place (the
        task-vector methods write it chunk by chunk, without a full-size temporary); 4-bit
        weights are re-quantised from the merged tensor. Returns ``merge_s`` (math),
        ``write_s`` (copy / 4-bit re-quantisation), ``total_s``, ``n_tensors`` and
        ``n_quantized``.
        """
        params = self.space.validate(params)
        targets = self._targets(model)
        outs = self._direct_outputs(targets)
        timings = self._write(model, self._merged(params, seed, outs), targets)
        _logger.debug("apply: %s", timings)
        return timings

    def write_endpoint(self, name: str, model: Any) -> dict[str, float]:
        """Write endpoint ``name``'s own weights (dense, or base + LoRA delta) into ``model``."""
        if name not in self._sources:
            raise ValueError(f"unknown endpoint {name!r}; valid: {list(self._sources)}")
        return self._write(model, ((n, self._inputs(n)[name]) for n in self.tensor_names))

    def write_base(self, model: Any) -> dict[str, float]:
        """Write the base model's weights into ``model`` (e.g. to evaluate the base)."""
        if self._base is None:
            raise ValueError("this merger has no base model")
        return self._write(model, ((n, self._inputs(n)["base"]) for n in self.tensor_names))

    def endpoint_params(self, name: str) -> dict[str, float] | None:
        """The space's genotype for endpoint ``name`` (see :meth:`MergeSpace.endpoint_params`)."""
        return self.space.endpoint_params(name)

    # -- models ---------------------------------------------------------------------------------
    def load_model(self, quantization: str | None = None) -> Any:
        """A live ``AutoModelForCausalLM`` with the reference (base) weights, in ``dtype``.

        Args:
            quantization: None (full precision) or ``"nf4"`` (bitsandbytes ``Linear4bit``).
        """
        return load_causal_lm(self.model_dir, device=self.device, dtype=self.dtype,
                              quantization=quantization)

    def load_tokenizer(self) -> Any:
        """The base's tokenizer (the first endpoint's when there is no base)."""
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.model_dir))

    def export(self, params: Mapping[str, float], out_dir: str | Path, seed: int = 0) -> Path:
        """``save_pretrained`` of the merge, its tokenizer and ``mergekit.yaml`` in ``out_dir``."""
        from optuna_merge3.merging._export import export_merge

        return export_merge(self, params, out_dir, seed=seed)

    def __repr__(self) -> str:
        return (f"InMemoryMerger({self.space.method}, endpoints={list(self._sources)}, "
                f"device={self.device}, dtype={self.dtype}, stream={self.stream}, fused={self.fused}, "
                f"rng={self.rng!r})")
