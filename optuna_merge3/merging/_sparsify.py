"""Sparsification of task vectors, as MergeKit 0.1.5's `mergekit/sparsify.py`.

Each function makes MergeKit's operations in its order and dtype, except how the magnitude masks
are found. MergeKit fully sorts every task vector (``argsort``); here a k-th value
(``torch.kthvalue``, linear time) gives the threshold, entries strictly beyond it are kept and
only the tie group *at* the threshold needs a rule. MergeKit's CPU sort is not stable, so its
choice inside that group is whatever its sort does: with ``exact=True`` (the default on CPU) the
same ``argsort`` call is made whenever the threshold splits a tie group (with bf16 weights almost
always; with fp32 weights rarely), so the mask is MergeKit's bit for bit. With ``exact=False``
(the default elsewhere) ties are kept in index order: the same number of kept entries and the same
multiset of kept magnitudes as MergeKit, possibly at other positions of equal magnitude
(docs/merging.md states the bound; tests check it).

DARE / DELLA masks come from ``bernoulli`` (``_masks.bernoulli_for``): MergeKit's own draws or
the counter hash.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["della_magprune", "magnitude", "magnitude_outliers", "random", "work_dtype"]

_REDUCED = (torch.bfloat16, torch.float16)
Bernoulli = Callable[[torch.Tensor], torch.Tensor]


def work_dtype(tensor: torch.Tensor) -> torch.dtype:
    """MergeKit's dtype for random masks: fp32 on CPU except bf16 (no CPU fp16 bernoulli)."""
    if tensor.device.type != "cpu" or tensor.dtype == torch.bfloat16:
        return tensor.dtype
    return torch.float32


def _rescaled(tensor: torch.Tensor, mask: torch.Tensor, rescale: bool) -> torch.Tensor:
    """MergeKit's ``rescaled_masked_tensor`` with the L1 norm (``rescale``) or none."""
    masked = tensor * mask
    if not rescale:
        return masked
    before, after = tensor.abs().sum(), masked.abs().sum()
    if before < 1e-7 or after < 1e-7:
        return masked
    return masked * (before / after)


def _magnitudes(tensor: torch.Tensor) -> torch.Tensor:
    w = tensor.abs().reshape(-1)
    return w.float() if w.device.type == "cpu" else w  # as MergeKit sorts them


def _lowest(w: torch.Tensor, k: int, exact: bool, descending: bool) -> torch.Tensor | None:
    """Boolean mask of the first ``k`` entries of ``sort(w, descending)`` with ties in index
    order; None when that may differ from ``torch.sort``'s own choice and ``exact`` asks for it
    (the threshold splits a tie group)."""
    n = w.numel()
    if k <= 0 or k >= n:
        return torch.full_like(w, k > 0, dtype=torch.bool)
    key = -w if descending else w  # exact negation: the same order reversed
    value = torch.kthvalue(key, k).values
    keep = key < value
    missing = k - int(keep.sum())
    ties = key == value
    n_ties = int(ties.sum())
    if missing == n_ties:
        return keep | ties
    if exact:
        return None
    return keep | (ties & (ties.cumsum(0) <= missing))


def _band(w: torch.Tensor, lo: int, hi: int, exact: bool, reduced: bool,
          descending: bool) -> torch.Tensor:
    """Boolean mask of positions ``[lo, hi)`` of ``sort(w, descending)`` (see the module
    docstring: thresholds, and MergeKit's own sort where ``exact`` needs it)."""
    # bf16 / fp16 magnitudes nearly always tie at a threshold: go straight to the sort.
    if not (exact and reduced):
        upper = _lowest(w, hi, exact, descending)
        lower = _lowest(w, lo, exact, descending)
        if upper is not None and lower is not None:
            return upper & ~lower
    mask = torch.zeros(w.numel(), dtype=torch.bool, device=w.device)
    mask[torch.sort(w, descending=descending).indices[lo:hi]] = True
    return mask


def magnitude(tensor: torch.Tensor, density: float, rescale: bool, exact: bool) -> torch.Tensor:
    """TIES' top-k: keep the ``max(1, int(density * numel))`` largest magnitudes (MergeKit:
    ``argsort(w, descending=True)[:k]``)."""
    if density >= 1:
        return tensor
    if density <= 0 or tensor.numel() == 0:
        return torch.zeros_like(tensor)
    k = max(1, int(density * tensor.numel()))
    keep = _band(_magnitudes(tensor), 0, k, exact, tensor.dtype in _REDUCED, descending=True)
    return _rescaled(tensor, keep.to(tensor.dtype).reshape_as(tensor), rescale)


def magnitude_outliers(tensor: torch.Tensor, density: float, gamma: float, rescale: bool,
                       exact: bool) -> torch.Tensor:
    """Model Breadcrumbs: drop the ``gamma`` largest magnitudes, then the smallest ones down to
    ``int(density * numel)`` kept (MergeKit's band ``[n_bot, n_bot + target_n)`` of the
    ascending sort)."""
    if density >= 1:
        return tensor
    n = tensor.numel()
    target_n, n_top = int(density * n), int(gamma * n)
    n_bot = max(0, n - target_n - n_top)
    keep = _band(_magnitudes(tensor), n_bot, n_bot + target_n, exact,
                 tensor.dtype in _REDUCED, descending=False)
    return _rescaled(tensor, keep.to(tensor.dtype).reshape_as(tensor), rescale)


def random(tensor: torch.Tensor, density: float, rescale: bool, bernoulli: Bernoulli
           ) -> torch.Tensor:
    """DARE: keep each entry with probability ``density`` (rescaled by the L1 ratio)."""
    if density >= 1:
        return tensor
    wd = work_dtype(tensor)
    mask = bernoulli(torch.full_like(tensor, density, dtype=wd))
    return _rescaled(tensor.to(wd), mask, rescale).to(tensor.dtype)


def della_magprune(tensor: torch.Tensor, density: float, epsilon: float, rescale: bool,
                   bernoulli: Bernoulli) -> torch.Tensor:
    """DELLA's MagPrune (Deep et al. 2024): per row (a 1-D tensor is one row), keep probability
    ``density - epsilon + 2 epsilon * normalised magnitude rank``.

    The ranks need MergeKit's own ``argsort`` (ties included); its second ``argsort`` (of a
    permutation, so tie-free) is an exact scatter here.
    """
    if density >= 1:
        return tensor
    if density <= 0:
        return torch.zeros_like(tensor)
    if density + epsilon >= 1 or density - epsilon <= 0:
        raise ValueError("Epsilon must be chosen such that density +/- epsilon is in (0, 1)")
    orig_shape, wd = tensor.shape, work_dtype(tensor)
    if tensor.dim() < 2:
        tensor = tensor.unsqueeze(0)
    order = torch.argsort(tensor.abs(), dim=1, descending=False)
    positions = torch.arange(order.shape[1], device=order.device)
    positions = positions.view(1, -1, *([1] * (order.dim() - 2))).expand_as(order)
    ranks = torch.empty_like(order).scatter_(1, order, positions)
    del order, positions
    ranks = ranks.to(wd) + 1
    min_ranks = ranks.min(dim=1, keepdim=True).values
    max_ranks = ranks.max(dim=1, keepdim=True).values
    rank_norm = ((ranks - min_ranks) / (max_ranks - min_ranks)).clamp(0, 1)
    del ranks
    mask = bernoulli((density - epsilon) + rank_norm * 2 * epsilon).to(wd)
    return _rescaled(tensor.to(wd), mask, rescale).to(tensor.dtype).reshape(orig_shape)
