"""Sparsification of task vectors, numerically identical to MergeKit 0.1.5 (`mergekit/sparsify.py`).

MergeKit sorts every task vector on every merge (TIES, breadcrumbs, DELLA). The magnitude order of
a task vector does not depend on the searched coefficients, so here it is computed once per tensor
(with the very same `argsort` / `sort` call MergeKit makes, so ties break identically) and kept in
the caller's per-tensor ``cache`` as int32 ranks (DELLA: as its normalised rank tensor). A trial
then turns a density into a mask with one comparison, and the masked tensor, the L1 rescaling and
the random draws are the same operations, in the same order and dtype, as MergeKit's.

Random draws (DARE, DELLA) use ``torch.bernoulli(p, generator=generator)`` on a tensor ``p`` of
the same shape and dtype MergeKit builds, so a generator seeded ``S`` yields exactly the masks
MergeKit draws from the global RNG after ``torch.manual_seed(S)`` for the same call sequence (the
CPU kernel draws one value per element in order and is independent of the thread count).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = [
    "bernoulli",
    "della_magprune",
    "magnitude",
    "magnitude_outliers",
    "work_dtype",
]

# MergeKit's `rescaled_masked_tensor` treats L1 norms below this as zero (no rescaling).
_RESCALE_EPS = 1e-7


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


def _rescaled_masked(
    tensor: torch.Tensor, mask: torch.Tensor, rescale: bool, l1_before: torch.Tensor | None
) -> torch.Tensor:
    """MergeKit's ``rescaled_masked_tensor`` with norm L1 (or none); ``l1_before`` may be cached."""
    masked = tensor * mask
    if not rescale:
        return masked
    before = tensor.abs().sum() if l1_before is None else l1_before
    after = masked.abs().sum()
    if before < _RESCALE_EPS or after < _RESCALE_EPS:
        return masked
    return masked * (before / after)


def _ranks_from_order(order: torch.Tensor) -> torch.Tensor:
    """Invert a permutation: ``rank[order[i]] = i`` as int32 (4 bytes per element)."""
    ranks = torch.empty(order.numel(), dtype=torch.int32, device=order.device)
    ranks[order] = torch.arange(order.numel(), dtype=torch.int32, device=order.device)
    return ranks


def _abs_flat(tensor: torch.Tensor) -> torch.Tensor:
    # MergeKit sorts CPU magnitudes in fp32 and device magnitudes in their own dtype.
    w = tensor.abs().reshape(-1)
    return w.float() if w.device.type == "cpu" else w


def magnitude(
    tensor: torch.Tensor,
    density: float,
    rescale: bool,
    cache: dict | None = None,
    key: object = None,
) -> torch.Tensor:
    """Keep the ``density`` fraction of largest-magnitude entries (TIES; MergeKit ``magnitude``).

    Exactly the entries at positions ``[:k]`` of MergeKit's ``argsort(|x|, descending=True)``
    with ``k = max(1, int(density * numel))`` are kept; ranks come from the cache.
    """
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    ranks = _cached(
        cache,
        ("rank_desc", key),
        lambda: _ranks_from_order(torch.argsort(_abs_flat(tensor), descending=True)),
    )
    mask = (ranks < k).to(tensor.dtype).reshape_as(tensor)
    l1 = _cached(cache, ("l1", key, tensor.dtype), lambda: tensor.abs().sum()) if rescale else None
    return _rescaled_masked(tensor, mask, rescale, l1)


def magnitude_outliers(
    tensor: torch.Tensor,
    density: float,
    gamma: float,
    rescale: bool,
    cache: dict | None = None,
    key: object = None,
) -> torch.Tensor:
    """Model Breadcrumbs (MergeKit ``magnitude_outliers``): drop the ``gamma`` largest entries,
    then the smallest, keeping ``int(density * numel)`` entries of the ascending magnitude order.
    """
    if density >= 1:
        return tensor
    num = tensor.numel()
    target_n = int(density * num)
    n_top = int(gamma * num)
    n_bot = max(0, num - target_n - n_top)
    ranks = _cached(
        cache,
        ("rank_asc", key),
        lambda: _ranks_from_order(torch.sort(_abs_flat(tensor), descending=False).indices),
    )
    mask = ((ranks >= n_bot) & (ranks < n_bot + target_n)).to(tensor.dtype).reshape_as(tensor)
    l1 = _cached(cache, ("l1", key, tensor.dtype), lambda: tensor.abs().sum()) if rescale else None
    return _rescaled_masked(tensor, mask, rescale, l1)


def bernoulli(
    tensor: torch.Tensor,
    density: float,
    rescale: bool,
    generator: torch.Generator | None,
    cache: dict | None = None,
    key: object = None,
) -> torch.Tensor:
    """DARE (MergeKit ``bernoulli``): keep each entry with probability ``density``; ``rescale``
    restores the L1 norm of the task vector (MergeKit's ``rescale_norm=l1``).

    Draws one ``torch.bernoulli`` over a ``full_like(tensor, density)`` in MergeKit's working
    dtype (bf16 stays bf16, so the probability is rounded to bf16 as in MergeKit).
    """
    if density >= 1:
        return tensor
    wd = work_dtype(tensor)
    probs = torch.full_like(tensor, density, dtype=wd)
    mask = torch.bernoulli(probs, generator=generator)
    del probs
    work = tensor.to(wd)
    l1 = _cached(cache, ("l1", key, wd), lambda: work.abs().sum()) if rescale else None
    return _rescaled_masked(work, mask, rescale, l1).to(tensor.dtype)


def _della_rank_norm(tensor2d: torch.Tensor, wd: torch.dtype) -> torch.Tensor:
    """Row-wise normalised magnitude ranks in [0, 1], the same ops as MergeKit's DELLA."""
    magnitudes = tensor2d.abs()
    sorted_indices = torch.argsort(magnitudes, dim=1, descending=False)
    ranks = sorted_indices.argsort(dim=1).to(wd) + 1
    del sorted_indices
    min_ranks = ranks.min(dim=1, keepdim=True).values
    max_ranks = ranks.max(dim=1, keepdim=True).values
    return ((ranks - min_ranks) / (max_ranks - min_ranks)).clamp(0, 1)


def della_magprune(
    tensor: torch.Tensor,
    density: float,
    epsilon: float,
    rescale: bool,
    generator: torch.Generator | None,
    cache: dict | None = None,
    key: object = None,
) -> torch.Tensor:
    """DELLA MagPrune (MergeKit ``della_magprune``): per row, keep probabilities rise linearly
    with the magnitude rank from ``density - epsilon`` to ``density + epsilon``.

    Raises:
        ValueError: if ``density +/- epsilon`` leaves (0, 1) (MergeKit's check and message).
    """
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    orig_shape = tensor.shape
    wd = work_dtype(tensor)
    t2 = tensor.unsqueeze(0) if tensor.dim() < 2 else tensor
    rank_norm = _cached(cache, ("della_rank", key), lambda: _della_rank_norm(t2, wd))
    probs = (density - epsilon) + rank_norm * 2 * epsilon
    mask = torch.bernoulli(probs, generator=generator).to(wd)
    del probs
    work = t2.to(wd)
    l1 = _cached(cache, ("l1", key, wd), lambda: work.abs().sum()) if rescale else None
    return _rescaled_masked(work, mask, rescale, l1).to(tensor.dtype).reshape(orig_shape)
