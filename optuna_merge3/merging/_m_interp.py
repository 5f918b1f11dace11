"""Interpolation methods (linear, slerp, nuslerp, model_stock), numerically as MergeKit 0.1.5.

Each function mirrors the per-tensor kernel in `mergekit/merge_methods/` (``linear.py``,
``slerp.py``, ``nuslerp.py``, ``model_stock.py``) operation by operation;
nothing is kept between calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["linear", "model_stock", "nuslerp", "slerp"]

# MergeKit's slerp bounds fp32 scratch to this many elements per chunk; norms and dot products
# are accumulated per chunk, so the chunking is reproduced to get the same rounding.
_SLERP_CHUNK_ELEMENTS = 1024 * 1024


def _coef_dtype(t: torch.Tensor) -> torch.dtype:
    # MergeKit computes coefficients in fp64 for fp64 inputs and in fp32 otherwise.
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def linear(
    tensors: Sequence[torch.Tensor], weights: Sequence[float], normalize: bool
) -> torch.Tensor:
    """Weighted average (Wortsman et al. 2022, model soups): ``sum_j w_j theta_j / sum_j w_j``.

    As MergeKit's ``linear_merge``: fp32 accumulation (fp64 for fp64 inputs) in config order,
    division by the weight sum when ``normalize``, result in the first tensor's dtype.
    """
    first = tensors[0]
    if not first.is_floating_point():
        raise TypeError("Linear merging requires floating-point tensors")
    dtype = _coef_dtype(first)
    w = torch.tensor([list(weights)], dtype=dtype, device=first.device)
    result = torch.zeros_like(first, dtype=dtype)
    for tensor, coefficient in zip(tensors, w.unbind(1), strict=True):
        result.addcmul_(tensor, coefficient.reshape(()))
    if normalize:
        result.div_(w.sum(dim=1).reshape(()))
    return result.to(first.dtype)


def _slerp_stats(
    a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype, eps: float, dot_threshold: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(linear flag, theta, sin theta) of MergeKit's chunked slerp for a single output row."""
    chunk = _SLERP_CHUNK_ELEMENTS // a.shape[0]
    norm_a_parts, norm_b_parts = [], []
    for start in range(0, a.shape[1], chunk):
        x = a[:, start : start + chunk].to(dtype)
        y = b[:, start : start + chunk].to(dtype)
        norm_a_parts.append(torch.linalg.vector_norm(x, dim=1, keepdim=True))
        norm_b_parts.append(torch.linalg.vector_norm(y, dim=1, keepdim=True))
    norm_a = torch.linalg.vector_norm(torch.stack(norm_a_parts), dim=0)
    norm_b = torch.linalg.vector_norm(torch.stack(norm_b_parts), dim=0)
    norm_a = torch.where(norm_a > eps, norm_a, 1)
    norm_b = torch.where(norm_b > eps, norm_b, 1)
    dot_parts = []
    for start in range(0, a.shape[1], chunk):
        x = a[:, start : start + chunk].to(dtype) / norm_a
        y = b[:, start : start + chunk].to(dtype) / norm_b
        dot_parts.append((x * y).sum(dim=1, keepdim=True))
    dot = torch.stack(dot_parts).sum(dim=0).clamp(-1, 1)
    lin = dot.abs() > dot_threshold
    theta = torch.acos(torch.where(lin, 0, dot))
    return lin, theta, torch.sin(theta)


def slerp(
    t: float,
    v0: torch.Tensor,
    v1: torch.Tensor,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Spherical interpolation of the whole (flattened) tensor from ``v0`` (base) to ``v1``.

    MergeKit's ``slerp``: angle from the normalised dot product; linear interpolation when
    ``|cos theta| > 0.9995`` (near-colinear or antipodal); fp32 math, result in the input dtype
    (written into ``out`` when given: contiguous, ``v0``'s shape and dtype). The per-chunk
    ``coef_a * x + coef_b * y`` runs in two reused fp32 buffers (the same operations).
    """
    if not v0.is_floating_point():
        raise TypeError("SLERP requires floating-point tensors")
    dtype = _coef_dtype(v0)
    a = v0.reshape(1, -1)
    b = v1.reshape(1, -1)
    tt = torch.tensor([t], dtype=dtype, device=v0.device).reshape(-1, 1)
    if not a.shape[1]:
        return ((1 - tt) * a + tt * b).reshape(v0.shape).to(v0.dtype)
    lin, theta, sin_theta = _slerp_stats(a, b, dtype, eps, dot_threshold)
    coef_a = torch.where(lin, 1 - tt, torch.sin((1 - tt) * theta) / sin_theta)
    coef_b = torch.where(lin, tt, torch.sin(tt * theta) / sin_theta)
    result = torch.empty_like(a) if out is None else out.view(1, -1)
    chunk = _SLERP_CHUNK_ELEMENTS
    width = min(chunk, a.shape[1])
    x_buf = torch.empty((1, width), dtype=dtype, device=v0.device)
    y_buf = torch.empty((1, width), dtype=dtype, device=v0.device)
    for start in range(0, a.shape[1], chunk):
        stop = min(start + chunk, a.shape[1])
        x = x_buf[:, : stop - start].copy_(a[:, start:stop])
        y = y_buf[:, : stop - start].copy_(b[:, start:stop])
        # MergeKit: result[:, chunk] = coef_a * x + coef_b * y (fp32, then the input dtype)
        torch.mul(x, coef_a, out=x)
        torch.mul(y, coef_b, out=y)
        result[:, start:stop].copy_(x.add_(y))
    return result.reshape(v0.shape) if out is None else out


def _nuslerp_prepare(
    v0: torch.Tensor, v1: torch.Tensor, dim: int, flatten: bool, eps: float
) -> tuple[torch.Tensor, ...]:
    if flatten:
        v0 = v0.reshape(-1)
        v1 = v1.reshape(-1)
    elif dim != -1:
        v0 = v0.transpose(dim, -1)
        v1 = v1.transpose(dim, -1)

    def _normalize(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
        return x / torch.norm(x, dim=-1, keepdim=True).clamp(min=eps)

    cos_theta = torch.sum(_normalize(v0) * _normalize(v1), dim=-1, keepdim=True).clamp(-1, 1)
    colinear = (1 - cos_theta.square()) <= eps**2
    theta = torch.acos(torch.where(colinear, 0, cos_theta))
    return v0, v1, colinear, theta, torch.sin(theta)


def nuslerp(
    weights: Sequence[float],
    tensors: Sequence[torch.Tensor],
    base: torch.Tensor | None,
    row_wise: bool,
    flatten: bool,
    eps: float = 1e-8,
) -> torch.Tensor:
    """MergeKit's ``nuslerp``: slerp of two models (or of their task vectors when a base is
    given) with ``t = w_1 / (w_0 + w_1)`` (0.5 when the weights sum to ~0), per row
    (``nuslerp_row_wise``), per column (default) or over the flattened tensor
    (``nuslerp_flatten``, MergeKit's default). Math in the input dtype, as MergeKit.
    """
    total = sum(weights)
    t = 0.5 if abs(total) < 1e-6 else weights[1] / total
    dim = 0 if row_wise else -1
    v0, v1 = (tensors[0] - base, tensors[1] - base) if base is not None else tensors
    v0, v1, colinear, theta, sin_theta = _nuslerp_prepare(v0, v1, dim, flatten, eps)
    out_shape = tensors[0].shape
    result = (torch.sin((1 - t) * theta) * v0 + torch.sin(t * theta) * v1) / sin_theta
    result = torch.where(colinear, (1 - t) * v0 + t * v1, result)
    if dim != -1 and not flatten:
        result = result.transpose(dim, -1)
    result = result.reshape(out_shape)
    return result if base is None else base + result


def model_stock(
    base: torch.Tensor, tensors: Sequence[torch.Tensor], filter_wise: bool
) -> torch.Tensor:
    """Model Stock (Jang et al. 2024, eq. 7): ``t = N cos / (1 + (N - 1) cos)`` with the mean
    pairwise cosine of the task vectors, ``t * mean(theta_j) + (1 - t) * base``; per row when
    ``filter_wise``. MergeKit keeps the base where ``1 + (N - 1) cos`` vanishes.
    """
    w_0, ws = base, list(tensors)
    out_shape = w_0.shape
    if filter_wise:
        if w_0.dim() == 1:
            w_0 = w_0.unsqueeze(0)
            ws = [w.unsqueeze(0) for w in ws]
    else:
        w_0 = w_0.reshape(-1)
        ws = [w.reshape(-1) for w in ws]
    offsets = [w - w_0 for w in ws]
    cos_thetas = []
    for idx, offset_a in enumerate(offsets):
        for offset_b in offsets[idx + 1 :]:
            norm_product = torch.norm(offset_a, dim=-1) * torch.norm(offset_b, dim=-1)
            cos_thetas.append(
                ((offset_a * offset_b).sum(dim=-1) / norm_product.clamp(min=1e-6)).clamp(-1, 1)
            )
    cos_theta = torch.stack(cos_thetas).mean(dim=0).unsqueeze(-1)
    count = len(ws)
    denominator = 1 + (count - 1) * cos_theta
    singular = denominator.abs() < 1e-6
    safe = torch.where(singular, torch.ones_like(denominator), denominator)
    t = torch.where(singular, torch.zeros_like(cos_theta), (count * cos_theta) / safe)
    average = sum(ws) / count
    return (t * average + (1 - t) * w_0).reshape(out_shape)
