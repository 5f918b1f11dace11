"""Sparsification of task vectors, numerically identical to MergeKit 0.1.5 (`mergekit/sparsify.py`).

MergeKit sorts every task vector on every merge (TIES, breadcrumbs, DELLA). The magnitude order of
a task vector does not depend on the searched coefficients, so here it is computed once per tensor
(with the very same `argsort` / `sort` call MergeKit makes, so ties break identically) and kept in
the caller's per-tensor ``cache`` as int32 ranks (DELLA: as its normalised rank tensor). A trial
then turns a density into a mask with one comparison (`_m_gta.py`), and the masked tensor, the L1
rescaling and the random draws are the same operations, in the same order and dtype, as MergeKit's.

Random draws (DARE, DELLA) use ``torch.bernoulli(p, generator=generator)`` on tensors ``p`` of
the dtype MergeKit builds, with the same values in the same element order, so a generator seeded ``S`` yields exactly the masks
MergeKit draws from the global RNG after ``torch.manual_seed(S)`` for the same call sequence (the
CPU kernel draws one value per element in order, so drawing a tensor chunk by chunk gives the same
mask, and it is independent of the thread count).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "RESCALE_EPS",
    "check_della",
    "della_rank_norm",
    "l1_norm",
    "magnitude_ranks",
    "outlier_ranks",
    "work_dtype",
]

# MergeKit's `rescaled_masked_tensor` treats L1 norms below this as zero (no rescaling).
RESCALE_EPS = 1e-7


def _cached(cache: dict | None, key: object, build: Callable[[], torch.Tensor]) -> torch.Tensor:
    """Return ``cache[key]``, building and storing it on first use (no cache: just build)."""
    if cache is None:
        return build()
    value = cache.get(key)
    if value is None:
        value = build()
        cache[key] = value
    return value


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """MergeKit's working dtype for random masks: fp32 on CPU except bf16, else the input dtype.

    (``torch.bernoulli`` has no CPU fp16 kernel, so MergeKit upcasts there.)
    """
    if tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16:
        return tensor.dtype
    return torch.float32


def _ranks_from_order(order: torch.Tensor) -> torch.Tensor:
    """Invert a permutation: ``rank[order[i]] = i`` as int32 (4 bytes per element)."""
    ranks = torch.empty(order.numel(), dtype=torch.int32, device=order.device)
    ranks[order] = torch.arange(order.numel(), dtype=torch.int32, device=order.device)
    return ranks


def _abs_flat(tensor: torch.Tensor) -> torch.Tensor:
    # MergeKit sorts CPU magnitudes in fp32 and device magnitudes in their own dtype.
    w = tensor.abs().reshape(-1)
    return w.float() if w.device.type == "cpu" else w


def magnitude_ranks(tensor: torch.Tensor, cache: dict | None, key: object) -> torch.Tensor:
    """Flat int32 rank of each entry in MergeKit's ``argsort(|x|, descending=True)`` (TIES).

    MergeKit's ``magnitude`` keeps the entries at positions ``[:k]``, i.e. ``rank < k``.
    """
    return _cached(
        cache,
        ("rank_desc", key),
        lambda: _ranks_from_order(torch.argsort(_abs_flat(tensor), descending=True)),
    )


def outlier_ranks(tensor: torch.Tensor, cache: dict | None, key: object) -> torch.Tensor:
    """Flat int32 rank in MergeKit's ascending ``sort(|x|)`` (Model Breadcrumbs).

    MergeKit's ``magnitude_outliers`` keeps positions ``[n_bot, n_bot + int(density * numel))``
    with ``n_bot = max(0, numel - int(density * numel) - int(gamma * numel))``.
    """
    return _cached(
        cache,
        ("rank_asc", key),
        lambda: _ranks_from_order(torch.sort(_abs_flat(tensor), descending=False).indices),
    )


def della_rank_norm(tensor: torch.Tensor, cache: dict | None, key: object) -> torch.Tensor:
    """Row-wise normalised magnitude ranks in [0, 1] (a 1-D tensor is one row), computed with
    the same operations and work dtype as MergeKit's ``della_magprune``; its keep probability is
    ``(density - epsilon) + rank_norm * 2 * epsilon`` (Deep et al. 2024, MagPrune).
    """

    def build() -> torch.Tensor:
        wd = work_dtype(tensor)
        t2 = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
        sorted_indices = torch.argsort(t2.abs(), dim=1, descending=False)
        ranks = sorted_indices.argsort(dim=1).to(wd) + 1
        del sorted_indices
        min_ranks = ranks.min(dim=1, keepdim=True).values
        max_ranks = ranks.max(dim=1, keepdim=True).values
        return ((ranks - min_ranks) / (max_ranks - min_ranks)).clamp(0, 1)

    return _cached(cache, ("della_rank", key), build)


def check_della(density: float, epsilon: float) -> None:
    """MergeKit's DELLA parameter check (same message).

    Raises:
        ValueError: if ``density +/- epsilon`` leaves (0, 1).
    """
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")


def l1_norm(
    tensor: torch.Tensor, dtype: torch.dtype, cache: dict | None, key: object
) -> torch.Tensor:
    """``tensor.to(dtype).abs().sum()``: the L1 norm MergeKit restores with ``rescale``."""
    return _cached(cache, ("l1", key, dtype), lambda: tensor.to(dtype).abs().sum())
