"""Registry of merge methods and the per-tensor entry point :func:`merge_tensor`.

Semantics are MergeKit 0.1.5's (`mergekit/merge_methods/registry.py` and the kernels it lists),
reproduced operation by operation so that ``merge_tensor`` agrees with
``mergekit.merge_methods.merge_tensors`` to float rounding (<= 1e-6; usually bit for bit).

Dtype: as MergeKit with no ``dtype`` override, all inputs are first promoted to their common dtype.
The task-vector family, nuslerp and model_stock then compute in that dtype (bf16 inputs: bf16 math,
exactly as MergeKit); linear and slerp accumulate in fp32 (fp64 for fp64 inputs). The result has
the promoted input dtype. Pass fp32 tensors to merge in fp32 (MergeKit's ``dtype: float32``).

Random draw order (DARE / DELLA). MergeKit draws its masks from torch's global RNG: one
``torch.bernoulli`` per non-base model whose density is below 1, over a tensor shaped like the
weight (DELLA: a 1-D weight is viewed as one row), in the order of the models in the config
(base excluded), tensor after tensor. ``merge_state_dicts`` visits tensors in the key order of the
first state dict (non-floating buffers skipped); ``run_merge`` follows its task schedule
(``networkx.lexicographical_topological_sort`` keyed by tensor name). ``merge_tensor`` makes the
same draws, in the same order and dtype, from ``generator``: a generator seeded ``S`` and tensors
visited in MergeKit's order reproduce MergeKit's masks after ``torch.manual_seed(S)`` bit for bit.
On CPU the generator's MT19937 stream is replayed in bulk by a compiled C loop, or numpy without a
C compiler (`_m_rng.py`, `_mt_native.py`; self-checked against ``torch.bernoulli`` and numpy once
per process), and the generator is left in exactly the state
``torch.bernoulli`` would leave it in.

Memory: the per-tensor ``cache`` holds the task vectors and, per method, int32 magnitude ranks
(TIES / breadcrumbs) or DELLA's normalised ranks. On CPU a thread-local workspace of about
``(n_endpoints + 2) x`` the largest tensor (work dtype) is reused across calls to avoid page
faults; :func:`release_workspace` frees it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from optuna_merge3.merging import _m_gta, _m_interp
from optuna_merge3.merging._m_gta import release_workspace

__all__ = ["MERGE_METHODS", "MethodSpec", "merge_tensor", "release_workspace"]

_logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MethodSpec:
    """Declared parameters of one merge method (MergeKit 0.1.5 names and defaults).

    Attributes:
        name: MergeKit's method name.
        needs_base: whether a base model is required (task-vector methods, slerp, model_stock).
        tensor_params: per-endpoint parameters and defaults (``None``: required).
        global_params: per-method parameters and defaults (``None``: required, e.g. slerp ``t``).
        stochastic: whether random masks are drawn (DARE, DELLA); needs a ``generator``.
    """

    name: str
    needs_base: bool
    tensor_params: dict[str, float | None]
    global_params: dict[str, Any]
    stochastic: bool


# MergeKit's GeneralizedTaskArithmeticMerge rows: name -> (sparsification, consensus).
_GTA_ROWS: dict[str, tuple[str | None, str | None]] = {}
# Number of endpoint tensors (base excluded) each method accepts: name -> (min, max or None).
_N_TENSORS: dict[str, tuple[int, int | None]] = {
    "linear": (1, None),
    "slerp": (1, 1),
    "nuslerp": (2, 2),
    "model_stock": (2, None),
}


def _gta(
    name: str,
    consensus: str | None,
    sparsification: str | None,
    normalize: bool,
    rescale: bool,
) -> MethodSpec:
    tensor_params: dict[str, float | None] = {"weight": None, "density": 1.0}
    if sparsification == "magnitude_outliers":
        tensor_params["gamma"] = 0.01
    if sparsification == "della_magprune":
        tensor_params["epsilon"] = 0.15
    _GTA_ROWS[name] = (sparsification, consensus)
    return MethodSpec(
        name=name,
        needs_base=True,
        tensor_params=tensor_params,
        global_params={
            "int8_mask": False,
            "normalize": normalize,
            "rescale": rescale,
            "lambda": 1.0,
        },
        stochastic=sparsification in ("random", "della_magprune"),
    )


# The table mirrors mergekit/merge_methods/registry.py (defaults per row included).
MERGE_METHODS: dict[str, MethodSpec] = {
    spec.name: spec
    for spec in (
        MethodSpec("linear", False, {"weight": None}, {"normalize": True}, False),
        MethodSpec("slerp", True, {}, {"t": None}, False),
        MethodSpec(
            "nuslerp",
            False,
            {"weight": None},
            {"nuslerp_row_wise": False, "nuslerp_flatten": True},
            False,
        ),
        _gta("task_arithmetic", None, None, normalize=False, rescale=False),
        _gta("ties", "sum", "magnitude", normalize=True, rescale=False),
        _gta("dare_ties", "sum", "random", normalize=False, rescale=True),
        _gta("dare_linear", None, "random", normalize=False, rescale=True),
        _gta("breadcrumbs", None, "magnitude_outliers", normalize=False, rescale=False),
        _gta("breadcrumbs_ties", "sum", "magnitude_outliers", normalize=False, rescale=False),
        _gta("della", "sum", "della_magprune", normalize=True, rescale=True),
        _gta("della_linear", None, "della_magprune", normalize=False, rescale=True),
        MethodSpec("model_stock", True, {}, {"filter_wise": False}, False),
    )
}

# Beyond MergeKit's YAML: the TIES sign-election rule, fixed per method in MergeKit ("sum", as in
# the TIES paper); "count" is MergeKit's ConsensusMethod.count (elect by majority of signs).
_CONSENSUS_OPTION = "consensus_method"


def _get_spec(method: str) -> MethodSpec:
    try:
        return MERGE_METHODS[method]
    except KeyError:
        valid = ", ".join(sorted(MERGE_METHODS))
        raise ValueError(f"Unknown merge method {method!r}; valid methods: {valid}") from None


def _resolve_params(
    spec: MethodSpec, params: Sequence[Mapping[str, float]], n: int, where: str
) -> list[dict[str, float]]:
    params = list(params) if params is not None else []
    if not params and not spec.tensor_params:
        params = [{} for _ in range(n)]
    if len(params) != n:
        raise ValueError(
            f"{spec.name}{where}: got {len(params)} parameter mappings for {n} endpoint tensors"
        )
    resolved = []
    for j, given in enumerate(params):
        unknown = set(given) - set(spec.tensor_params)
        if unknown:
            valid = ", ".join(sorted(spec.tensor_params)) or "none"
            raise ValueError(
                f"{spec.name}{where}: unknown parameter(s) {sorted(unknown)} for endpoint {j}; "
                f"valid: {valid}"
            )
        values: dict[str, float] = {}
        for name, default in spec.tensor_params.items():
            value = given.get(name, default)
            if value is None:
                raise ValueError(
                    f"{spec.name}{where}: missing required parameter {name!r} for endpoint {j}"
                )
            values[name] = float(value)
        resolved.append(values)
    return resolved


def _resolve_options(spec: MethodSpec, options: Mapping[str, Any], where: str) -> dict[str, Any]:
    options = dict(options or {})
    consensus_default = _GTA_ROWS.get(spec.name, (None, None))[1]
    allowed = set(spec.global_params)
    if consensus_default is not None:
        allowed.add(_CONSENSUS_OPTION)
    unknown = set(options) - allowed
    if unknown:
        raise ValueError(
            f"{spec.name}{where}: unknown option(s) {sorted(unknown)}; valid: "
            f"{', '.join(sorted(allowed)) or 'none'}"
        )
    resolved = {}
    for name, default in spec.global_params.items():
        value = options.get(name, default)
        if value is None:
            raise ValueError(f"{spec.name}{where}: missing required option {name!r}")
        resolved[name] = value
    if consensus_default is not None:
        consensus = options.get(_CONSENSUS_OPTION, consensus_default)
        if consensus not in ("sum", "count"):
            raise ValueError(
                f"{spec.name}{where}: unknown consensus_method {consensus!r}; valid: count, sum"
            )
        resolved[_CONSENSUS_OPTION] = consensus
    return resolved


def _check_cache(cache: dict | None, inputs: Sequence[torch.Tensor]) -> None:
    """Drop cached entries computed for inputs of another shape / dtype / device / count."""
    if cache is None:
        return
    signature = tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)
    if cache.get("_signature") != signature:
        if "_signature" in cache:
            _logger.debug("merge cache signature changed; rebuilding")
        cache.clear()
        cache["_signature"] = signature


def merge_tensor(
    method: str,
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    params: Sequence[Mapping[str, float]],
    options: Mapping[str, Any],
    *,
    generator: torch.Generator | None = None,
    cache: dict | None = None,
    tensor_name: str = "",
    out: torch.Tensor | None = None,
    fused: bool = False,
    rng: str = "mergekit",
) -> torch.Tensor:
    """Merge one weight tensor of several models with a MergeKit 0.1.5 method.

    Args:
        method: a key of :data:`MERGE_METHODS` (MergeKit's method names).
        base: the base model's tensor. Required by the task-vector methods, ``slerp`` (its
            ``t = 0`` end) and ``model_stock``; optional for ``nuslerp`` (then it slerps the task
            vectors); ignored by ``linear`` (put the base among ``tensors`` if the config lists it
            as a model with a weight).
        tensors: the endpoints' tensors in config order, base excluded (``slerp``: exactly one,
            ``nuslerp``: exactly two, ``model_stock``: at least two).
        params: ``params[j]``: endpoint ``j``'s per-tensor parameters already resolved for this
            tensor (``weight``, ``density``, ``gamma``, ``epsilon``); missing ones take
            ``MethodSpec.tensor_params`` defaults. May be empty for methods without any.
        options: the method's global parameters for this tensor (``MethodSpec.global_params``,
            e.g. ``t``, ``normalize``, ``lambda``, ``rescale``, ``int8_mask``). TIES-family
            methods also accept ``consensus_method`` ("sum", MergeKit's fixed choice, or
            "count"); a non-default value cannot be written to a MergeKit YAML.
        generator: the RNG of DARE / DELLA masks (required when a density is below 1). Draws
            follow MergeKit's order (see the module docstring), so seeding it like MergeKit's
            global RNG reproduces MergeKit's masks.
        cache: a dict the caller keeps per tensor name across calls; it receives everything that
            does not depend on the coefficients (task vectors, magnitude ranks, slerp angles, the
            model_stock result). It must be dropped if the input tensors' values change. Results
            equal those of ``cache=None``. Memory per endpoint: the task vector plus 4 bytes per
            element for TIES / breadcrumbs ranks and one work-dtype element for DELLA.
        tensor_name: used in error messages, and in the counter masks' key (``rng="counter"``).
        out: optional destination (e.g. the live model's parameter): contiguous, of the
            result's shape and dtype, overlapping no input. The task-vector methods write into
            it chunk by chunk (no full-size temporary); the others copy their result into it.
        fused: run the task-vector family's and slerp's element-wise merge as one
            ``torch.compile`` loop (``_fused``: the same bits; falls back to the eager path where
            it cannot compile).
        rng: DARE / DELLA masks: ``"mergekit"`` (MergeKit's ``torch.bernoulli`` draws from
            ``generator``, bit-identical to MergeKit seeded alike) or ``"counter"`` (hashed from
            the generator's seed, the tensor name and the endpoint: order-free, on all cores;
            :func:`counter_bernoulli` hands the same masks to MergeKit).

    Returns:
        The merged tensor, in the promoted dtype of the inputs (as MergeKit); ``out`` when given.

    Raises:
        ValueError: unknown method / parameter / option, missing required parameter, option or
            base, wrong number of endpoint tensors, missing generator, mismatched shapes.
    """
    spec = _get_spec(method)
    where = f" (tensor {tensor_name!r})" if tensor_name else ""
    tensors = list(tensors)
    if spec.needs_base and base is None:
        raise ValueError(f"{spec.name}{where}: merge method requires a base tensor")
    n = len(tensors)
    low, high = _N_TENSORS.get(spec.name, (0, None))
    if n < low or (high is not None and n > high):
        expected = f"exactly {low}" if low == high else f"at least {low}"
        raise ValueError(f"{spec.name}{where}: expects {expected} endpoint tensor(s), got {n}")
    resolved = _resolve_params(spec, params, n, where)
    opts = _resolve_options(spec, options, where)

    use_base = base is not None and spec.name != "linear"
    inputs = ([base] if use_base else []) + tensors
    shape = inputs[0].shape
    if any(t.shape != shape for t in inputs):
        shapes = [tuple(t.shape) for t in inputs]
        raise ValueError(f"{spec.name}{where}: tensor shape mismatch {shapes}")
    dtype = inputs[0].dtype
    for t in inputs[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    inputs = [t.to(dtype) for t in inputs]
    if use_base:
        base, tensors = inputs[0], inputs[1:]
    else:
        tensors = inputs
    _check_cache(cache, inputs)

    if spec.stochastic and generator is None and any(p["density"] < 1 for p in resolved):
        raise ValueError(
            f"{spec.name}{where}: random masks need an explicit torch.Generator (generator=...)"
        )

    if out is not None and (
        out.shape != shape or out.dtype != dtype or out.device != inputs[0].device
        or not out.is_contiguous()
    ):
        raise ValueError(
            f"{spec.name}{where}: out must be a contiguous {dtype} tensor of shape "
            f"{tuple(shape)} on {inputs[0].device}"
        )
    with torch.no_grad():
        result = _merge(spec, base, tensors, resolved, opts, generator, cache, out,
                        {"fused": fused, "rng": rng, "tensor_name": tensor_name})
        if out is None or result is out:
            return result
        return out.copy_(result)


def _merge(
    spec: MethodSpec,
    base: torch.Tensor | None,
    tensors: list[torch.Tensor],
    resolved: list[dict[str, float]],
    opts: dict[str, Any],
    generator: torch.Generator | None,
    cache: dict | None,
    out: torch.Tensor | None,
    gta_options: Mapping[str, Any],
) -> torch.Tensor:
    """The method's kernel (the task-vector family writes into ``out`` when given); runs
    under ``merge_tensor``'s ``torch.no_grad``."""
    if spec.name == "linear":
        return _m_interp.linear(tensors, [p["weight"] for p in resolved], opts["normalize"])
    if spec.name == "slerp":
        return _m_interp.slerp(float(opts["t"]), base, tensors[0], cache, out=out,
                               fused=gta_options["fused"])
    if spec.name == "nuslerp":
        return _m_interp.nuslerp(
            [p["weight"] for p in resolved],
            tensors,
            base,
            bool(opts["nuslerp_row_wise"]),
            bool(opts["nuslerp_flatten"]),
            cache,
        )
    if spec.name == "model_stock":
        return _m_interp.model_stock(base, tensors, bool(opts["filter_wise"]), cache)
    return _m_gta.merge_gta(
        base,
        tensors,
        resolved,
        opts,
        sparsification=_GTA_ROWS[spec.name][0],
        consensus=opts.get(_CONSENSUS_OPTION),
        generator=generator,
        cache=cache,
        out=out,
        **gta_options,
    )
