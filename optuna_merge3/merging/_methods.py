"""The merge methods (one table, :data:`MERGE_METHODS`) and the per-tensor entry point.

Semantics are MergeKit 0.1.5's (`mergekit/merge_methods/registry.py` and the kernels it lists),
reproduced operation by operation: on CPU ``merge_tensor`` equals
``mergekit.merge_methods.merge_tensors`` bit for bit (tests compare with ``torch.equal``).

Dtype: as MergeKit with no ``dtype`` override, inputs are first promoted to their common dtype.
The task-vector family, nuslerp and model_stock compute in that dtype (bf16 inputs: bf16 math);
linear and slerp accumulate in fp32 (fp64 for fp64 inputs). The result has the promoted dtype.

Random draw order (DARE / DELLA, ``rng="mergekit"``). MergeKit draws its masks from torch's
global RNG: one ``torch.bernoulli`` per non-base model whose density is below 1, over a tensor
shaped like the weight (DELLA: a 1-D weight is one row), models in config order, tensor after
tensor (``merge_state_dicts``: key order of the first state dict; ``run_merge``: sorted tensor
names). ``merge_tensor`` makes the same draws from ``generator``, so a CPU generator seeded ``S``
and tensors visited in MergeKit's order reproduce MergeKit's masks after ``torch.manual_seed(S)``.
``rng="counter"`` (the default of :class:`InMemoryMerger`) instead hashes each mask from the
generator's seed, the tensor name and the endpoint (``_masks``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from optuna_merge3.merging import _m_gta, _m_interp, _masks

__all__ = ["MERGE_METHODS", "MethodSpec", "merge_tensor"]


@dataclass(frozen=True)
class MethodSpec:
    """One merge method: what MergeKit 0.1.5 declares for it, and which kernel runs it.

    Attributes:
        name: MergeKit's method name.
        kernel: "gta" (``_m_gta``) or the name of a function in ``_m_interp``.
        base: MergeKit's base policy: "required", "optional" (nuslerp: used when given),
            "ignored" (linear: a base would be one more weighted input) or "pair" (slerp: in a
            study the first of two endpoints is the ``t = 0`` base, the second ``t = 1``).
        tensor_params: per-endpoint parameters and defaults (``None``: required).
        global_params: per-method parameters and defaults (``None``: required, e.g. slerp ``t``).
        n_tensors: accepted number of endpoint tensors (base excluded): (min, max or None).
        sparsifier: the task-vector sparsification (``_sparsify``), None for dense.
        consensus: the TIES sign election ("sum"), None for none.
        url: the method's reference.
    """

    name: str
    kernel: str
    base: str
    tensor_params: Mapping[str, float | None]
    global_params: Mapping[str, Any]
    n_tensors: tuple[int, int | None] = (1, None)
    sparsifier: str | None = None
    consensus: str | None = None
    url: str = field(default="", compare=False)

    @property
    def needs_base(self) -> bool:
        """Whether ``merge_tensor`` needs a base tensor."""
        return self.base in ("required", "pair")

    @property
    def stochastic(self) -> bool:
        """Whether random masks are drawn (DARE, DELLA)."""
        return self.sparsifier in ("random", "della_magprune")


def _gta(name: str, sparsifier: str | None, consensus: str | None, normalize: bool,
         rescale: bool, url: str) -> MethodSpec:
    extra = {"magnitude_outliers": {"gamma": 0.01}, "della_magprune": {"epsilon": 0.15}}
    return MethodSpec(
        name, "gta", "required",
        tensor_params={"weight": None, "density": 1.0, **extra.get(sparsifier or "", {})},
        global_params={"int8_mask": False, "normalize": normalize, "rescale": rescale,
                       "lambda": 1.0},
        sparsifier=sparsifier, consensus=consensus, url=url,
    )


_ARXIV = "https://arxiv.org/abs/"
# Mirrors mergekit/merge_methods/registry.py, defaults included.
MERGE_METHODS: dict[str, MethodSpec] = {spec.name: spec for spec in (
    MethodSpec("linear", "linear", "ignored", {"weight": None}, {"normalize": True},
               url=_ARXIV + "2203.05482"),
    MethodSpec("slerp", "slerp", "pair", {}, {"t": None}, (1, 1),
               url="https://en.wikipedia.org/wiki/Slerp"),
    MethodSpec("nuslerp", "nuslerp", "optional", {"weight": None},
               {"nuslerp_row_wise": False, "nuslerp_flatten": True}, (2, 2),
               url="https://en.wikipedia.org/wiki/Slerp"),
    MethodSpec("model_stock", "model_stock", "required", {}, {"filter_wise": False}, (2, None),
               url=_ARXIV + "2403.19522"),
    _gta("task_arithmetic", None, None, False, False, _ARXIV + "2212.04089"),
    _gta("ties", "magnitude", "sum", True, False, _ARXIV + "2306.01708"),
    _gta("dare_ties", "random", "sum", False, True, _ARXIV + "2311.03099"),
    _gta("dare_linear", "random", None, False, True, _ARXIV + "2311.03099"),
    _gta("breadcrumbs", "magnitude_outliers", None, False, False, _ARXIV + "2312.06795"),
    _gta("breadcrumbs_ties", "magnitude_outliers", "sum", False, False, _ARXIV + "2312.06795"),
    _gta("della", "della_magprune", "sum", True, True, _ARXIV + "2406.11617"),
    _gta("della_linear", "della_magprune", None, False, True, _ARXIV + "2406.11617"),
)}

# Beyond MergeKit's YAML: the TIES sign-election rule, fixed per method in MergeKit ("sum", as in
# the TIES paper); "count" is MergeKit's ConsensusMethod.count (majority of signs).
_CONSENSUS_OPTION = "consensus_method"


def _get_spec(method: str) -> MethodSpec:
    try:
        return MERGE_METHODS[method]
    except KeyError:
        valid = ", ".join(sorted(MERGE_METHODS))
        raise ValueError(f"Unknown merge method {method!r}; valid methods: {valid}") from None


def _resolve_params(spec: MethodSpec, params: Sequence[Mapping[str, float]] | None, n: int,
                    where: str) -> list[dict[str, float]]:
    params = list(params) if params is not None else []
    if not params and not spec.tensor_params:
        params = [{} for _ in range(n)]
    if len(params) != n:
        raise ValueError(
            f"{spec.name}{where}: got {len(params)} parameter mappings for {n} endpoint tensors")
    resolved = []
    for j, given in enumerate(params):
        unknown = set(given) - set(spec.tensor_params)
        if unknown:
            valid = ", ".join(sorted(spec.tensor_params)) or "none"
            raise ValueError(f"{spec.name}{where}: unknown parameter(s) {sorted(unknown)} for "
                             f"endpoint {j}; valid: {valid}")
        values: dict[str, float] = {}
        for name, default in spec.tensor_params.items():
            value = given.get(name, default)
            if value is None:
                raise ValueError(
                    f"{spec.name}{where}: missing required parameter {name!r} for endpoint {j}")
            values[name] = float(value)
        resolved.append(values)
    return resolved


def _resolve_options(spec: MethodSpec, options: Mapping[str, Any] | None,
                     where: str) -> dict[str, Any]:
    options = dict(options or {})
    allowed = set(spec.global_params) | ({_CONSENSUS_OPTION} if spec.consensus else set())
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(f"{spec.name}{where}: unknown option(s) {sorted(unknown)}; valid: "
                         f"{', '.join(sorted(allowed)) or 'none'}")
    resolved = {}
    for name, default in spec.global_params.items():
        value = options.get(name, default)
        if value is None:
            raise ValueError(f"{spec.name}{where}: missing required option {name!r}")
        resolved[name] = value
    if spec.consensus:
        consensus = options.get(_CONSENSUS_OPTION, spec.consensus)
        if consensus not in ("sum", "count"):
            raise ValueError(
                f"{spec.name}{where}: unknown consensus_method {consensus!r}; valid: count, sum")
        resolved[_CONSENSUS_OPTION] = consensus
    return resolved


def merge_tensor(
    method: str,
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    params: Sequence[Mapping[str, float]] | None,
    options: Mapping[str, Any] | None,
    *,
    generator: torch.Generator | None = None,
    tensor_name: str = "",
    out: torch.Tensor | None = None,
    rng: str = "mergekit",
    exact: bool | None = None,
) -> torch.Tensor:
    """Merge one weight tensor of several models with a MergeKit 0.1.5 method.

    Args:
        method: a key of :data:`MERGE_METHODS` (MergeKit's method names).
        base: the base model's tensor. Required by the task-vector methods, ``slerp`` (its
            ``t = 0`` end) and ``model_stock``; optional for ``nuslerp`` (then it slerps the task
            vectors); ignored by ``linear`` (put the base among ``tensors`` if the config lists it
            as a model with a weight).
        tensors: the endpoints' tensors in config order, base excluded.
        params: ``params[j]``: endpoint ``j``'s per-tensor parameters already resolved for this
            tensor (``weight``, ``density``, ``gamma``, ``epsilon``); missing ones take
            ``MethodSpec.tensor_params`` defaults. May be empty for methods without any.
        options: the method's global parameters for this tensor (``MethodSpec.global_params``);
            TIES-family methods also accept ``consensus_method`` ("sum", MergeKit's fixed
            choice, or "count"; a non-default value cannot be written to a MergeKit YAML).
        generator: the RNG of DARE / DELLA masks (required when a density is below 1): a CPU
            generator drawn in MergeKit's order (``rng="mergekit"``) or whose seed keys the
            counter masks (``rng="counter"``).
        tensor_name: used in error messages and in the counter masks' key.
        out: optional destination (e.g. the live parameter): contiguous, of the result's shape,
            dtype and device, overlapping no input.
        rng: DARE / DELLA masks: "mergekit" (MergeKit's draws) or "counter" (``_masks``).
        exact: magnitude masks (TIES, breadcrumbs) with MergeKit's own choice among entries
            tied at the threshold (``_sparsify``); None: on CPU only.

    Returns:
        The merged tensor, in the promoted dtype of the inputs (as MergeKit); ``out`` when given.

    Raises:
        ValueError: unknown method / parameter / option / rng, missing required parameter,
            option or base, wrong number of endpoint tensors, missing generator, mismatched
            shapes, an unfit ``out``.
    """
    spec = _get_spec(method)
    where = f" (tensor {tensor_name!r})" if tensor_name else ""
    tensors = list(tensors)
    if spec.needs_base and base is None:
        raise ValueError(f"{spec.name}{where}: merge method requires a base tensor")
    n, (low, high) = len(tensors), spec.n_tensors
    if n < low or (high is not None and n > high):
        expected = f"exactly {low}" if low == high else f"at least {low}"
        raise ValueError(f"{spec.name}{where}: expects {expected} endpoint tensor(s), got {n}")
    resolved = _resolve_params(spec, params, n, where)
    opts = _resolve_options(spec, options, where)
    if rng not in _masks.RNGS:
        raise ValueError(f"{spec.name}{where}: rng {rng!r} is not one of {list(_masks.RNGS)}")

    use_base = base is not None and spec.base != "ignored"
    inputs = ([base] if use_base else []) + tensors
    shape = inputs[0].shape
    if any(t.shape != shape for t in inputs):
        raise ValueError(f"{spec.name}{where}: tensor shape mismatch "
                         f"{[tuple(t.shape) for t in inputs]}")
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in inputs))
    inputs = [t.to(dtype) for t in inputs]
    base, tensors = (inputs[0], inputs[1:]) if use_base else (None, inputs)
    device = inputs[0].device
    if spec.stochastic and generator is None and any(p["density"] < 1 for p in resolved):
        raise ValueError(
            f"{spec.name}{where}: random masks need an explicit torch.Generator (generator=...)")
    if out is not None and (out.shape != shape or out.dtype != dtype or out.device != device
                            or not out.is_contiguous()):
        raise ValueError(f"{spec.name}{where}: out must be a contiguous {dtype} tensor of shape "
                         f"{tuple(shape)} on {device}")
    with torch.no_grad():
        if spec.kernel == "gta":
            return _m_gta.merge_gta(
                base, tensors, resolved, opts, sparsifier=spec.sparsifier,
                consensus=opts.get(_CONSENSUS_OPTION),
                bernoulli=lambda j: _masks.bernoulli_for(rng, generator, tensor_name, j),
                exact=device.type == "cpu" if exact is None else exact, out=out)
        weights = [p.get("weight", 0.0) for p in resolved]
        if spec.kernel == "linear":
            result = _m_interp.linear(tensors, weights, opts["normalize"])
        elif spec.kernel == "slerp":
            result = _m_interp.slerp(float(opts["t"]), base, tensors[0], out=out)
        elif spec.kernel == "nuslerp":
            result = _m_interp.nuslerp(weights, tensors, base, bool(opts["nuslerp_row_wise"]),
                                       bool(opts["nuslerp_flatten"]))
        else:
            result = _m_interp.model_stock(base, tensors, bool(opts["filter_wise"]))
        return result if out is None or result is out else out.copy_(result)
