"""Generalized task arithmetic (task_arithmetic, TIES, DARE, breadcrumbs, DELLA), MergeKit 0.1.5.

One implementation configured per method row, as MergeKit's ``GeneralizedTaskArithmeticMerge``
(`mergekit/merge_methods/generalized_task_arithmetic.py`): task vectors ``tau_j = theta_j - base``
(Ilharco et al. 2023, eq. 1) are sparsified (TIES magnitude top-k, DARE Bernoulli, breadcrumbs
outlier band, DELLA rank-dependent Bernoulli), weighted, optionally sign-elected (TIES, Yadav et al.
2023: "sum" = sign of the weighted sum, "count" = majority of signs), summed, optionally divided by
the sum of the weights that agree with the elected sign (``normalize``), scaled by ``lambda`` and
added to the base. All arithmetic is done in the inputs' dtype, as MergeKit does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from optuna_merge3.merging import _sparsify

__all__ = ["get_mask", "merge_gta", "task_vectors"]


def task_vectors(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], cache: dict | None
) -> list[torch.Tensor]:
    """``tensors[j] - base`` in the inputs' dtype, cached across trials (never modified)."""
    if cache is not None and "tv" in cache:
        return cache["tv"]
    tvs = [t - base for t in tensors]
    if cache is not None:
        cache["tv"] = tvs
    return tvs


def get_mask(delta: torch.Tensor, method: str, mask_dtype: torch.dtype) -> torch.Tensor:
    """TIES sign election over dim 0 (MergeKit ``get_mask``): True where a delta agrees."""
    sign = delta.sign().to(mask_dtype)
    if method == "sum":
        majority_sign = (delta.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    elif method == "count":
        majority_sign = (sign.sum(dim=0) >= 0).to(mask_dtype) * 2 - 1
    else:
        raise ValueError(f"Unknown consensus_method {method!r}; valid: 'count', 'sum'")
    return sign == majority_sign


def _sparsify_one(
    sparsification: str | None,
    tv: torch.Tensor,
    params: Mapping[str, float],
    rescale: bool,
    generator: torch.Generator | None,
    cache: dict | None,
    key: int,
) -> torch.Tensor:
    density = params["density"]
    if sparsification is None:
        return tv
    if sparsification == "magnitude":
        return _sparsify.magnitude(tv, density, rescale, cache, key)
    if sparsification == "random":
        return _sparsify.bernoulli(tv, density, rescale, generator, cache, key)
    if sparsification == "magnitude_outliers":
        return _sparsify.magnitude_outliers(tv, density, params["gamma"], rescale, cache, key)
    if sparsification == "della_magprune":
        return _sparsify.della_magprune(
            tv, density, params["epsilon"], rescale, generator, cache, key
        )
    raise ValueError(f"Unknown sparsification {sparsification!r}")


def merge_gta(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    params: Sequence[Mapping[str, float]],
    options: Mapping[str, Any],
    *,
    sparsification: str | None,
    consensus: str | None,
    generator: torch.Generator | None,
    cache: dict | None,
) -> torch.Tensor:
    """MergeKit's ``GeneralizedTaskArithmeticMerge.merge_group`` for one tensor.

    Random masks are drawn endpoint by endpoint in ``tensors`` order, one draw per endpoint
    whose density is below 1 (MergeKit's order within a tensor group).
    """
    if not tensors:
        return base
    tvs = task_vectors(base, tensors, cache)
    n = len(tvs)
    deltas = base.new_empty((n, *base.shape))
    for j, tv in enumerate(tvs):
        deltas[j] = _sparsify_one(
            sparsification, tv, params[j], bool(options["rescale"]), generator, cache, j
        )
    weights = torch.tensor([p["weight"] for p in params], dtype=deltas.dtype, device=deltas.device)
    while deltas.dim() > weights.dim():
        weights.unsqueeze_(-1)
    deltas.mul_(weights)

    if consensus:
        mask_dtype = torch.int8 if options["int8_mask"] else base.dtype
        mask = get_mask(deltas, consensus, mask_dtype)
        mixed_delta = (deltas * mask).sum(dim=0)
        divisor = (weights * mask).sum(dim=0)
        divisor[divisor == 0] = 1
        del mask
    else:
        mixed_delta = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    del deltas

    if options["normalize"]:
        mixed_delta /= divisor
    lam = options["lambda"]
    if lam != 1:
        mixed_delta *= lam
    return (base + mixed_delta).to(base.dtype)
