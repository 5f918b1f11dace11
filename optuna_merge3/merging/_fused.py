"""Fused task-arithmetic-family kernels (``torch.compile``) and counter-based random masks.

Why: the eager merge (``_m_gta``) makes ~10 passes over memory per tensor (one per torch op, each
reading and writing full chunks); on CPU it runs 5-50x above the bandwidth bound. Here the whole
element-wise merge of one tensor (masks, rescale, weights, sign election, sum, normalize, lambda,
``base +``) is one Python function of plain torch ops that ``torch.compile`` (inductor) turns into
a single vectorised loop: each input is read once and the live parameter written once.

Bit-identity: every MergeKit rounding is written out (``_round``: to the tensor dtype and back to
fp32, kept by inductor under ``emulate_precision_casts``), the endpoint sums are fp32 additions
in row order as ``_m_gta``'s fast sum, and the function run *uncompiled* is an exact reference.
Each compiled variant is compared bit for bit with that reference on a slice of its first real
input; a mismatch, a missing C++ compiler or any compile error disables fusion (logged once) and
the eager path runs instead. Tests compare both with MergeKit.

Counter-based masks (``rng="counter"``): DARE / DELLA keep element ``i`` of endpoint ``j`` of tensor
``name`` iff ``u24(i) < p * 2**24``, where ``u24`` is a 24-bit hash of ``(i, key)`` and ``key``
comes from ``(seed, name, j)`` (:func:`mask_key`). The same rule as ``torch.bernoulli`` on CPU
(24-bit uniforms), but with no sequential generator state, so masks are computed inside the fused
loop (no memory traffic) and a tensor's masks do not depend on any other tensor. The masks are
not MergeKit's MT19937 draws; :func:`counter_bernoulli` is the documented hook that hands them to
MergeKit (replace ``torch.bernoulli`` during ``merge_state_dicts``) to reproduce a merge exactly.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
from collections.abc import Callable, Sequence

import torch

__all__ = ["counter_bernoulli", "counter_keep", "fusion_available", "mask_key"]

_logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF
_U24_SCALE = float(2**24)
# Endpoint counts the fused kernels take (the fp32 row-order sum equals torch.sum's there).
MAX_FUSED_ENDPOINTS = 4
_lock = threading.Lock()
_kernels: dict[tuple, Callable | None] = {}
_compiler_ok: bool | None = None


# -- counter-based random masks -------------------------------------------------------------------
def mask_key(seed: int, tensor_name: str, endpoint: int) -> tuple[int, int]:
    """Two 32-bit keys for the counter masks of ``endpoint`` (config order) in ``tensor_name``."""
    digest = hashlib.blake2b(f"{int(seed)}\0{tensor_name}\0{int(endpoint)}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def _mul32(x: torch.Tensor, m: int) -> torch.Tensor:
    """``x * m mod 2**32`` for int64 ``x`` in [0, 2**32) without int64 overflow."""
    lo, hi = m & 0xFFFF, m >> 16
    return (x * lo + ((x * hi) & 0xFFFF) * 65536) & _M32


def _lowbias32(x: torch.Tensor) -> torch.Tensor:
    # Chris Wellons' "lowbias32" integer hash (bias 0.17): a bijection of 32-bit words.
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


def _uniform24(index: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """24-bit hash of each int64 ``index`` under ``keys`` (int64 ``[k1, k2]``), as fp32."""
    x = _lowbias32((index & _M32) ^ keys[0])
    x = _lowbias32(x ^ keys[1])
    return (x >> 8).to(torch.float32)


def counter_keep(index: torch.Tensor, keys: torch.Tensor, probs32: torch.Tensor) -> torch.Tensor:
    """Boolean keep mask: ``u24(index) < probs * 2**24`` (``probs32``: fp32, broadcastable)."""
    return _uniform24(index, keys) < probs32 * _U24_SCALE


def counter_bernoulli(probs: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """The counter mask for keep probabilities ``probs`` (element ``i`` = flat position ``i``), as
    0/1 in ``probs``' dtype: the hook to hand our DARE / DELLA masks to MergeKit (patch
    ``torch.bernoulli`` with ``lambda p: counter_bernoulli(p, next(keys))``, the keys from
    :func:`mask_key` in MergeKit's draw order: tensors by sorted name, endpoints in config order,
    endpoints with density >= 1 skipped)."""
    flat = probs.reshape(-1)
    if flat.numel() >= 2**32:
        raise ValueError("counter masks support tensors of fewer than 2**32 elements")
    index = torch.arange(flat.numel(), dtype=torch.int64, device=probs.device)
    keys = torch.tensor(key, dtype=torch.int64, device=probs.device)
    keep = counter_keep(index, keys, flat.to(torch.float32))
    return keep.to(probs.dtype).reshape(probs.shape)


# -- the fused kernel -----------------------------------------------------------------------------
def _round(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round fp32 ``x`` to ``dtype`` and back (MergeKit's rounding after each op)."""
    return x if dtype == torch.float32 else x.to(dtype).to(torch.float32)


def _rows_sum(rows: Sequence[torch.Tensor]) -> torch.Tensor:
    """``((r0 + r1) + r2) + ...`` in fp32 (``_m_gta._rows_sum`` without its ``+ 0.0``)."""
    acc = rows[0]
    for row in rows[1:]:
        acc = acc + row
    return acc


def _endpoint_delta(kind: str, scaled: bool, wd: torch.dtype, dtype: torch.dtype, args: list,
                    weight: torch.Tensor, index: torch.Tensor | None) -> torch.Tensor:
    """Endpoint ``j``'s sparsified, rescaled, weighted task vector in fp32 (``_Endpoint.write``).

    ``args`` is consumed from the front: dense ``tv``; rank ``tv, ranks, lo, hi``; stored
    ``masked``; hash ``tv, keys, p``; della_hash ``tv, keys, rank_norm, eps, density - eps``;
    then ``scale`` when ``scaled``."""
    if kind == "dense":
        return _round(args.pop(0).float() * weight, dtype)
    if kind == "rank":
        tv, ranks, lo, hi = (args.pop(0) for _ in range(4))
        keep = ((ranks >= lo) & (ranks < hi)).to(torch.float32)
        masked, mdt = tv.float() * keep, dtype
    elif kind == "stored":
        masked, mdt = args.pop(0).float(), wd
    else:  # hash / della_hash: MergeKit's tensor.to(work dtype) * bernoulli(p)
        tv, keys = args.pop(0), args.pop(0)
        if kind == "hash":
            probs = args.pop(0)
        else:  # (density - eps) + rank_norm * 2 * eps, op by op in the work dtype
            rank_norm, eps, dme = args.pop(0), args.pop(0), args.pop(0)
            probs = _round(_round(_round(rank_norm.float() * 2, wd) * eps, wd) + dme, wd)
        keep = counter_keep(index, keys, probs).to(torch.float32)
        masked, mdt = _round(tv.float(), wd) * keep, wd
    if scaled:
        masked = _round(masked * args.pop(0).float(), mdt)
    return _round(_round(masked, dtype) * weight, dtype)


def gta_reference(spec: tuple, consensus: str | None, normalize: bool, dtype: torch.dtype,
                  base: torch.Tensor, out: torch.Tensor, weights32: torch.Tensor,
                  lam32: torch.Tensor, divisor32: torch.Tensor, start: torch.Tensor,
                  *args: torch.Tensor) -> torch.Tensor:
    """The whole element-wise GTA merge of flat ``base`` into ``out`` (uncompiled: the exact
    reference of the compiled kernel). ``spec``: per endpoint ``(kind, scaled, work dtype)``;
    ``weights32`` fp32 of the dtype-rounded weights; ``lam32`` fp32 lambda (None-equivalent: 1);
    ``divisor32`` the no-consensus divisor; ``start`` the flat offset of ``base[0]`` (hash index)."""
    rest = list(args)
    index = None
    if any(kind.endswith("hash") for kind, _, _ in spec):
        index = torch.arange(base.numel(), dtype=torch.int64, device=base.device) + start
    deltas = []
    for j, (kind, scaled, wd) in enumerate(spec):
        if kind == "zero":
            deltas.append(torch.zeros_like(base, dtype=torch.float32))
        else:
            deltas.append(_endpoint_delta(kind, scaled, wd, dtype, rest, weights32[j], index))
    if consensus:
        signs = [torch.sign(d) for d in deltas]
        total = _rows_sum(deltas if consensus == "sum" else signs)
        elected = torch.copysign(torch.ones_like(total), total)
        agree = [torch.clamp(s * elected, 0, 1) for s in signs]
        mixed = _round(_rows_sum([d * a for d, a in zip(deltas, agree, strict=True)]) + 0.0,
                       dtype)
        divisor = _round(_rows_sum([a * weights32[j] for j, a in enumerate(agree)]) + 0.0, dtype)
        divisor = divisor + (1 - torch.sign(torch.abs(divisor)))  # MergeKit: 0 -> 1
    else:
        mixed = _round(_rows_sum(deltas) + 0.0, dtype)
        divisor = divisor32
    if normalize:
        mixed = _round(mixed / divisor, dtype)
    mixed = _round(mixed * lam32, dtype)
    out.copy_((base.float() + mixed).to(out.dtype))
    return out


def hash_masked(kind: str, wd: torch.dtype, absolute: bool, tv: torch.Tensor,
                keys: torch.Tensor, start: torch.Tensor, out: torch.Tensor,
                *probs_args: torch.Tensor) -> torch.Tensor:
    """``tv.to(wd) * mask`` (``absolute``: its ``abs()``, what MergeKit's L1 rescale sums) of a
    counter mask into ``out`` (work dtype)."""
    index = torch.arange(tv.numel(), dtype=torch.int64, device=tv.device) + start
    # weight 1 with dtype = work dtype: the masked values themselves
    masked = _endpoint_delta(kind, False, wd, wd, [tv, keys, *probs_args],
                             torch.ones((), dtype=torch.float32, device=tv.device), index)
    out.copy_((masked.abs() if absolute else masked).to(out.dtype))
    return out


def run_flat(fn: Callable, key: tuple | None, args: list, out_index: int, start_index: int,
             chunk: int) -> torch.Tensor:
    """``fn(*args)`` (its first argument flat and full-size): compiled in one call when ``key``
    is given and fusion works, else the uncompiled ``fn`` chunk by chunk (exact, slower)."""
    kernel = get_kernel(key, fn, args, out_index) if key is not None else None
    if kernel is not None:
        return kernel(*args)
    numel = args[0].numel()
    start = args[start_index]
    for s in range(0, numel, chunk):
        part = [a[s : s + chunk] if isinstance(a, torch.Tensor) and a.dim() == 1
                and a.numel() == numel else a for a in args]
        part[start_index] = start + s
        fn(*part)
    return args[out_index]


# -- compilation ----------------------------------------------------------------------------------
def fusion_available(device: torch.device) -> bool:
    """Whether ``torch.compile`` can build fused kernels here (CPU: a C++ compiler on PATH;
    CUDA: triton importable; the CUDA path is untested, as no GPU was available)."""
    global _compiler_ok
    if device.type == "cuda":
        import importlib.util

        return importlib.util.find_spec("triton") is not None
    if device.type != "cpu":
        return False
    if _compiler_ok is None:
        _compiler_ok = any(shutil.which(c) for c in ("g++", "c++", "clang++"))
    return _compiler_ok


def _compile(fn: Callable, name: str) -> Callable:
    # A fresh code object per variant: dynamo's recompile limit counts variants per code object.
    fn.__code__ = fn.__code__.replace(co_name=name)
    # emulate_precision_casts keeps every explicit down-cast (MergeKit rounds after each op);
    # inductor would otherwise keep reduced-precision intermediates in fp32.
    return torch.compile(fn, dynamic=True, fullgraph=True,
                         options={"emulate_precision_casts": True})


def _sliced(args: Sequence, numel: int, n: int) -> list:
    """The first ``n`` elements of every flat full-size tensor in ``args``."""
    return [a[:n] if isinstance(a, torch.Tensor) and a.dim() == 1 and a.numel() == numel else a
            for a in args]


def get_kernel(key: tuple, reference: Callable, probe_args: Sequence, out_index: int
               ) -> Callable | None:
    """The compiled ``reference`` for variant ``key``, or None when fusion failed here.

    ``reference`` takes tensors only (bind static arguments with ``functools.partial``); its first
    argument is a flat full-size tensor. On first use the compiled kernel and ``reference`` run on
    the first ``<= 70001`` elements of ``probe_args`` (``probe_args[out_index]`` is the
    destination) and must agree bit for bit."""
    with _lock:
        if key in _kernels:
            return _kernels[key]

        def kernel(*args):
            return reference(*args)

        try:
            compiled = _compile(kernel, f"merge3_kernel_{len(_kernels)}")
            numel = probe_args[0].numel()
            ref_args = _sliced(probe_args, numel, min(70001, numel))
            got_args = list(ref_args)
            ref_args[out_index] = torch.empty_like(ref_args[out_index])
            got_args[out_index] = torch.empty_like(ref_args[out_index])
            expected = reference(*ref_args)
            got = compiled(*got_args)
            same = torch.equal(expected.view(-1).view(torch.uint8), got.view(-1).view(torch.uint8))
            if not same:
                _logger.warning("fused merge kernel %s differs from its reference; using the "
                                "eager path", key)
                compiled = None
        except Exception as exc:  # no compiler, unsupported op, ...: the eager path stays exact
            _logger.warning("fused merge kernels unavailable (%s: %s); using the eager path",
                            type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            compiled = None
        _kernels[key] = compiled
        return compiled
