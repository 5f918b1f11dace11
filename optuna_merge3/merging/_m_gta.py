"""Generalized task arithmetic (task_arithmetic, TIES, DARE, breadcrumbs, DELLA), MergeKit 0.1.5.

MergeKit's ``GeneralizedTaskArithmeticMerge.merge_group``
(`mergekit/merge_methods/generalized_task_arithmetic.py`), operation by operation: task vectors
``tau_j = theta_j - base`` (Ilharco et al. 2023) are sparsified (``_sparsify``), weighted,
optionally sign-elected (TIES, Yadav et al. 2023: "sum" = sign of the weighted sum, "count" =
majority of signs), summed, divided by the sum of the agreeing weights (``normalize``), scaled by
``lambda`` and added to the base, all in the inputs' dtype. The same operations in the same order
give MergeKit's bits; the only freedom taken is where the sparsifier finds its masks
(``_sparsify``: a k-th value instead of a full sort, MergeKit's sort where ties demand it).

Memory per call: the ``(n, *shape)`` stack of task vectors plus a few full-size temporaries, as
MergeKit; nothing is kept between calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from optuna_merge3.merging import _sparsify

__all__ = ["merge_gta"]


def _sparsified(delta: torch.Tensor, sparsifier: str, p: Mapping[str, float], rescale: bool,
                exact: bool, bernoulli: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    density = p["density"]
    if sparsifier == "magnitude":
        return _sparsify.magnitude(delta, density, rescale, exact)
    if sparsifier == "magnitude_outliers":
        return _sparsify.magnitude_outliers(delta, density, p["gamma"], rescale, exact)
    if sparsifier == "random":
        return _sparsify.random(delta, density, rescale, bernoulli)
    return _sparsify.della_magprune(delta, density, p["epsilon"], rescale, bernoulli)


def _agreement(deltas: torch.Tensor, consensus: str) -> torch.Tensor:
    """MergeKit's ``get_mask``: where an endpoint's sign equals the elected sign (+1 where the
    sum over endpoints of ``delta`` -- or of ``sign(delta)`` for "count" -- is >= 0)."""
    sign = deltas.sign()
    votes = deltas.sum(dim=0) if consensus == "sum" else sign.sum(dim=0)
    elected = (votes >= 0).to(deltas.dtype) * 2 - 1
    return sign == elected


def merge_gta(
    base: torch.Tensor,
    tensors: Sequence[torch.Tensor],
    params: Sequence[Mapping[str, float]],
    options: Mapping[str, Any],
    *,
    sparsifier: str | None,
    consensus: str | None,
    bernoulli: Callable[[int], Callable[[torch.Tensor], torch.Tensor]],
    exact: bool,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """One tensor of a task-vector method.

    Args:
        base, tensors, params, options: as :func:`~optuna_merge3.merging.merge_tensor` (resolved).
        sparsifier: MergeKit's sparsification method (None: dense task vectors).
        consensus: "sum", "count" or None.
        bernoulli: endpoint index -> mask function (``_masks.bernoulli_for``); called only for
            endpoints drawn, in endpoint order (MergeKit's draw order).
        exact: MergeKit's own tie choice for magnitude masks (``_sparsify``).
        out: destination of the result (the live parameter), else a new tensor.
    """
    if not tensors:
        return base if out is None else out.copy_(base)
    rescale = bool(options["rescale"])
    deltas = base.new_empty((len(tensors), *base.shape))
    for j, tensor in enumerate(tensors):
        delta = tensor - base
        if sparsifier:
            delta = _sparsified(delta, sparsifier, params[j], rescale, exact, bernoulli(j))
        deltas[j] = delta
        del delta
    weights = torch.tensor([p["weight"] for p in params], dtype=deltas.dtype,
                           device=deltas.device)
    while deltas.dim() > weights.dim():
        weights.unsqueeze_(-1)
    deltas.mul_(weights)
    if consensus:
        agree = _agreement(deltas, consensus)
        mixed = (deltas * agree).sum(dim=0)
        divisor = (weights * agree).sum(dim=0)
        del agree
        divisor[divisor == 0] = 1
    else:
        mixed = deltas.sum(dim=0)
        divisor = weights.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    del deltas
    if options["normalize"]:
        mixed /= divisor
    if options["lambda"] != 1:
        mixed *= options["lambda"]
    if out is None:
        return (base + mixed).to(base.dtype)
    return torch.add(base, mixed, out=out)
