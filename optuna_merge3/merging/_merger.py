"""``InMemoryMerger``: genotype -> merged weights written into a live model, no file per trial.

Base and endpoints are opened once through their safetensors memory maps. Per trial the merge
walks the checkpoint tensor by tensor (sorted names): the inputs of one tensor are delivered on
the merge device (``_stream``: from the mmap, or from inputs kept in memory), merged
(``merge_tensor``), written into the live model (in place for a full-precision parameter,
re-quantised for a bitsandbytes nf4 weight) and freed. Nothing is cached between trials, so the
memory beyond the live model is a few tensors whatever the depth. ``stream=False`` keeps the
inputs on the merge device; ``stream=True`` re-reads them from the mmap (the page cache) each
trial. (Inputs kept in host memory would be the memory map itself, i.e. streaming.)

DARE / DELLA masks come from one CPU ``torch.Generator`` seeded with the trial's ``seed``: hashed
from its seed per tensor and endpoint (``rng="counter"``, default), or drawn in MergeKit's order
(``rng="mergekit"``: tensors in sorted name order, endpoints in config order, as MergeKit's
``run_merge`` after ``torch.manual_seed(seed)``). The same genotype and seed give the same model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch

from optuna_merge3.merging._gradient import LAYER_RE
from optuna_merge3.merging._masks import RNGS, counter_bernoulli, mask_key
from optuna_merge3.merging._quant import load_causal_lm, model_targets, write_tensor
from optuna_merge3.merging._sources import DenseSource, open_source
from optuna_merge3.merging._space import MergeSpace
from optuna_merge3.merging._stream import device_tensors

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
        rng: DARE / DELLA masks: ``"counter"`` (default; hashed per tensor and endpoint, the same
            on every device and thread count; reproduce a trial in MergeKit through
            :meth:`mergekit_bernoulli`) or ``"mergekit"`` (MergeKit's CPU draws, so a trial's
            YAML run through MergeKit with the same seed gives the same tensors).
        exact: TIES / breadcrumbs masks with MergeKit's own choice among magnitudes tied at
            the threshold (a full sort where ties split); None (default): on CPU only. On an
            accelerator ties are kept in index order (see ``docs/merging.md``).
    """

    def __init__(
        self,
        base: str | Path | None,
        endpoints: Mapping[str, str | Path],
        space: MergeSpace,
        *,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        stream: bool = False,
        rng: str = "counter",
        exact: bool | None = None,
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
        self.rng, self.exact = rng, exact
        self._resident: dict[str, dict[str, torch.Tensor]] = {}
        if not stream:
            started = time.perf_counter()
            for name in self.tensor_names:
                self._resident[name] = self._read_inputs(name, self.device)
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

    def _read_inputs(self, name: str, device: torch.device) -> dict[str, torch.Tensor]:
        """One tensor of every input on ``device`` (LoRA endpoints: base + delta there)."""
        raw: dict[str, torch.Tensor] = {}
        if self._base is not None:
            raw["base"] = self._base.get(name, device, self.dtype)
        for label, source in self._sources.items():
            if source.kind == "lora":
                raw[label] = source.get(name, device, self.dtype, base_tensor=raw["base"])
            else:
                raw[label] = source.get(name, device, self.dtype)
        return raw

    def _host_tensors(self, name: str) -> dict[str, torch.Tensor]:
        """One tensor of every input on the CPU, in its stored dtype where read from the mmap."""
        if any(s.kind == "lora" for s in self._sources.values()):
            return self._read_inputs(name, torch.device("cpu"))
        raw = {"base": self._base.raw(name)} if self._base is not None else {}
        return raw | {label: source.raw(name) for label, source in self._sources.items()}

    def _each_input(self, names: list[str]) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        """(name, inputs on the merge device) tensor by tensor (``_stream``)."""
        if not self.stream:
            return ((n, self._resident[n]) for n in names)
        return device_tensors(names, self._host_tensors, self.device, self.dtype)

    # -- merging --------------------------------------------------------------------------------
    def _merged(
        self,
        params: Mapping[str, float],
        seed: int,
        outs: Mapping[str, torch.Tensor] | None = None,
    ) -> Iterator[tuple[str, torch.Tensor]]:
        """(name, merged tensor) in sorted name order; params already validated. A tensor in
        ``outs`` (a live full-precision parameter) receives its merge in place and is yielded."""
        generator = torch.Generator().manual_seed(int(seed))  # CPU: see the module docstring
        space = self.space
        float_names = set(self.float_names)
        for name, inputs in self._each_input(self.tensor_names):
            if name not in float_names:  # integer buffers: copied from the reference input
                yield name, inputs["base" if "base" in inputs else space.endpoints[0]]
                continue
            base = inputs[space.math_base] if space.math_base is not None else None
            tensors = [inputs[e] for e in space.math_endpoints]
            per_endpoint, options = space.resolve(params, name, self.n_layers)
            yield name, self._merge_tensor(
                space.method, base, tensors, per_endpoint, options, generator=generator,
                tensor_name=name, out=outs.get(name) if outs else None, rng=self.rng,
                exact=self.exact)
            del inputs, base, tensors

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
        params = self.space.validate(params)
        della = self.space.spec.sparsifier == "della_magprune"
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
        return self._write(model, ((n, t[name]) for n, t in self._each_input(self.tensor_names)))

    def write_base(self, model: Any) -> dict[str, float]:
        """Write the base model's weights into ``model`` (e.g. to evaluate the base)."""
        if self._base is None:
            raise ValueError("this merger has no base model")
        return self._write(model, ((n, t["base"]) for n, t in self._each_input(self.tensor_names)))

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
                f"device={self.device}, dtype={self.dtype}, stream={self.stream}, rng={self.rng!r})")
