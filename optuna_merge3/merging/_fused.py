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
(24-bit uniforms), but with no sequential generator state, so masks are computed by one compiled
pass on all cores (``random_mask``, which also takes MergeKit's MT19937 draws when replaying them)
and a tensor's masks do not depend on any other tensor. The masks are
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

__all__ = ["counter_bernoulli", "counter_keep", "fusion_available", "key_tensor", "mask_key"]

_logger = logging.getLogger(__name__)

_U24_SCALE = float(2**24)
_lock = threading.Lock()
_kernels: dict[tuple, Callable | None] = {}
_verified: set[tuple] = set()
_compiler_ok: bool | None = None


# -- counter-based random masks -------------------------------------------------------------------
def mask_key(seed: int, tensor_name: str, endpoint: int) -> tuple[int, int]:
    """Two 32-bit keys for the counter masks of ``endpoint`` (config order) in ``tensor_name``."""
    digest = hashlib.blake2b(f"{int(seed)}\0{tensor_name}\0{int(endpoint)}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def _shift(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Logical right shift of int32 words (torch's ``>>`` on int32 is arithmetic)."""
    return (x >> bits) & ((1 << (32 - bits)) - 1)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    # A bijection of 32-bit words: Chris Wellons' "lowbias32" shape with hash-prospector's
    # constants [16 21f0aaad 15 735a2d97 15] (bias 0.107), both below 2**31. int32 products
    # wrap modulo 2**32 in torch and in the compiled vector code alike.
    x = x ^ _shift(x, 16)
    x = x * 0x21F0AAAD
    x = x ^ _shift(x, 15)
    x = x * 0x735A2D97
    return x ^ _shift(x, 15)


def _signed(word: int) -> int:
    return word - (1 << 32) if word >= 1 << 31 else word


def key_tensor(key: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """``mask_key``'s two words as an int32 tensor (what the hash takes)."""
    return torch.tensor([_signed(k) for k in key], dtype=torch.int32, device=device)


def counter_keep(index: torch.Tensor, keys: torch.Tensor, probs32: torch.Tensor) -> torch.Tensor:
    """Boolean keep mask: ``u24 < probs * 2**24`` where ``u24`` is the top 24 bits of a two-round
    hash of the int32 ``index`` under ``keys`` (:func:`key_tensor`); ``probs32``: fp32,
    broadcastable. The same comparison as ``torch.bernoulli``'s on CPU (24-bit uniforms)."""
    return _keep(_uniform24(index, keys), probs32)


def _keep(u24: torch.Tensor, probs32: torch.Tensor) -> torch.Tensor:
    """``u24 * 2**-24 < p``, as ``torch.bernoulli`` decides on CPU (exact in fp32)."""
    return u24 < probs32 * _U24_SCALE


def _uniform24(index: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
    """The top 24 bits of the two-round hash, as fp32 integers in [0, 2**24)."""
    return _shift(_hash32(_hash32(index ^ keys[0]) ^ keys[1]), 8).to(torch.float32)


def counter_bernoulli(probs: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """The counter mask for keep probabilities ``probs`` (element ``i`` = flat position ``i``), as
    0/1 in ``probs``' dtype: the hook to hand our DARE / DELLA masks to MergeKit (patch
    ``torch.bernoulli`` with ``lambda p: counter_bernoulli(p, next(keys))``, the keys from
    :func:`mask_key` in MergeKit's draw order: tensors by sorted name, endpoints in config order,
    endpoints with density >= 1 skipped)."""
    flat = probs.reshape(-1)
    if flat.numel() >= 2**31:
        raise ValueError("counter masks support tensors of fewer than 2**31 elements")
    index = torch.arange(flat.numel(), dtype=torch.int32, device=probs.device)
    keep = counter_keep(index, key_tensor(key, probs.device), flat.to(torch.float32))
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
                    weight: torch.Tensor) -> torch.Tensor:
    """Endpoint ``j``'s sparsified, rescaled, weighted task vector in fp32 (``_Endpoint.write``).

    ``args`` is consumed from the front: dense ``tv``; top (TIES) ``tv, ranks, hi``; rank
    (breadcrumbs' band) ``tv, ranks, lo, hi``; stored ``masked``; bytes ``tv, mask`` (uint8 DARE
    / DELLA mask); then ``scale`` when ``scaled``."""
    if kind == "dense":
        return _round(args.pop(0).float() * weight, dtype)
    if kind == "top":  # ranks >= 0 always: one comparison instead of two
        tv, ranks, hi = (args.pop(0) for _ in range(3))
        masked, mdt = tv.float() * (ranks < hi).to(torch.float32), dtype
    elif kind == "rank":
        tv, ranks, lo, hi = (args.pop(0) for _ in range(4))
        keep = ((ranks >= lo) & (ranks < hi)).to(torch.float32)
        masked, mdt = tv.float() * keep, dtype
    elif kind == "stored":
        masked, mdt = args.pop(0).float(), wd
    else:  # bytes: MergeKit's tensor.to(work dtype) * bernoulli(p)
        tv, mask = args.pop(0), args.pop(0)
        masked, mdt = _round(tv.float(), wd) * mask.to(torch.float32), wd
    if scaled:
        masked = _round(masked * args.pop(0).float(), mdt)
    if mdt != dtype:  # (else masked already holds values of dtype: rounding would be a no-op)
        masked = _round(masked, dtype)
    return _round(masked * weight, dtype)


def gta_reference(spec: tuple, consensus: str | None, normalize: bool, scale_by_lambda: bool,
                  dtype: torch.dtype,
                  base: torch.Tensor, out: torch.Tensor, weights32: torch.Tensor,
                  lam32: torch.Tensor, divisor32: torch.Tensor, *args: torch.Tensor
                  ) -> torch.Tensor:
    """The whole element-wise GTA merge of flat ``base`` into ``out`` (uncompiled: the exact
    reference of the compiled kernel). ``spec``: per endpoint ``(kind, scaled, work dtype)``;
    ``weights32`` fp32 of the dtype-rounded weights; ``lam32`` fp32 lambda (used when
    ``scale_by_lambda``: MergeKit skips lambda = 1);
    ``divisor32`` the no-consensus divisor."""
    rest = list(args)
    deltas = []
    for j, (kind, scaled, wd) in enumerate(spec):
        if kind == "zero":
            deltas.append(torch.zeros_like(base, dtype=torch.float32))
        else:
            deltas.append(_endpoint_delta(kind, scaled, wd, dtype, rest, weights32[j]))
    if consensus:
        # MergeKit: agree = sign(delta) == elected, elected = +1 where the total is >= 0 else
        # -1; i.e. delta * elected > 0 (a zero delta agrees with neither sign). The two forms
        # give the same bits; inductor's vector code is ~25% faster with the comparison for
        # "sum" and with the sign products for "count" (measured, 2026-11-29).
        if consensus == "sum":
            elected = torch.copysign(torch.ones_like(deltas[0]), _rows_sum(deltas))
            agree = [(d * elected > 0).to(torch.float32) for d in deltas]
        else:
            signs = [torch.sign(d) for d in deltas]
            elected = torch.copysign(torch.ones_like(deltas[0]), _rows_sum(signs))
            agree = [torch.clamp(s * elected, 0, 1) for s in signs]
        mixed = _round(_rows_sum([d * a for d, a in zip(deltas, agree, strict=True)]) + 0.0,
                       dtype)
        divisor = _round(_rows_sum([a * weights32[j] for j, a in enumerate(agree)]) + 0.0, dtype)
        divisor = torch.where(divisor == 0, 1.0, divisor)  # MergeKit: divisor[divisor == 0] = 1
    else:
        mixed = _round(_rows_sum(deltas) + 0.0, dtype)
        divisor = divisor32
    if normalize:
        mixed = _round(mixed / divisor, dtype)
    if scale_by_lambda:
        mixed = _round(mixed * lam32, dtype)
    out.copy_((base.float() + mixed).to(out.dtype))
    return out


def random_mask(della: bool, wd: torch.dtype, tv: torch.Tensor, uniforms: torch.Tensor,
                keys: torch.Tensor | None, mask_out: torch.Tensor, abs_out: torch.Tensor | None,
                *probs_args: torch.Tensor) -> torch.Tensor:
    """A DARE / DELLA mask of flat ``tv`` into uint8 ``mask_out``, and ``|tv.to(wd) * mask|``
    (what MergeKit's L1 rescale sums) into ``abs_out`` unless None; keep iff ``u < p * 2**24``.

    ``uniforms``: with ``keys`` (counter masks), the int32 flat position of ``tv[0]`` and ``u``
    is the hash of each position; without, int32 24-bit draws, one per element (MergeKit's
    MT19937 stream, ``_m_rng.MTStream.uint24``). ``probs_args``: DARE ``p`` (fp32, the density
    as stored in the work dtype); DELLA ``rank_norm, eps, density - eps``, combined op by op in
    the work dtype as MergeKit does."""
    if keys is not None:
        index = torch.arange(tv.numel(), dtype=torch.int32, device=tv.device) + uniforms
        u = _uniform24(index, keys)
    else:
        u = uniforms.to(torch.float32)  # < 2**24: exact
    if della:
        rank_norm, eps, dme = probs_args
        probs = _round(_round(_round(rank_norm.float() * 2, wd) * eps, wd) + dme, wd)
    else:
        probs = probs_args[0]
    keep = _keep(u, probs).to(torch.float32)
    # (through fp32: inductor's vector code stores bool -> uint8 ~4x slower)
    mask_out.copy_(keep.to(mask_out.dtype))
    if abs_out is not None:
        abs_out.copy_((_round(tv.float(), wd) * keep).abs().to(abs_out.dtype))
    return mask_out


def lerp_reference(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, coef_a: torch.Tensor,
                   coef_b: torch.Tensor) -> torch.Tensor:
    """MergeKit's slerp step ``coef_a * a + coef_b * b`` in fp32 (0-d fp32 coefficients), then
    the output dtype; ``_m_interp.slerp``'s chunk loop as one function."""
    out.copy_((a.float() * coef_a + b.float() * coef_b).to(out.dtype))
    return out


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


def sliced(args: Sequence, numel: int, part: int | slice) -> list:
    """Elements ``part`` (an int: the first ``part``) of every flat full-size tensor in ``args``."""
    where = slice(0, part) if isinstance(part, int) else part
    return [a[where] if isinstance(a, torch.Tensor) and a.dim() == 1 and a.numel() == numel
            else a for a in args]


def get_kernel(key: tuple, reference: Callable) -> Callable | None:
    """The compiled ``reference`` for variant ``key`` (compiled on its first call), or None
    once fusion failed or was refused for it. ``reference`` takes tensors only (bind static
    arguments with ``functools.partial``)."""
    with _lock:
        if key not in _kernels:

            def kernel(*args):
                return reference(*args)

            _kernels[key] = _compile(kernel, f"merge3_kernel_{len(_kernels)}")
        return _kernels[key]


def _check_against_reference(reference: Callable, args: Sequence, outs: Sequence[int]) -> None:
    """``reference`` on the first ``<= 70001`` elements (a vector tail included) must give the
    bits the compiled kernel just wrote into ``args[i]`` for ``i`` in ``outs``."""
    numel = args[0].numel()
    n = min(70001, numel)
    ref_args = sliced(args, numel, n)
    outs = [i for i in outs if args[i] is not None]
    for i in outs:
        ref_args[i] = torch.empty_like(ref_args[i])
    reference(*ref_args)
    for i in outs:
        if not torch.equal(ref_args[i].view(torch.uint8), args[i][:n].view(torch.uint8)):
            raise ArithmeticError("differs from its reference")


def run_flat(fn: Callable, key: tuple | None, args: list, outs: Sequence[int],
             start_index: int | None, chunk: int) -> None:
    """``fn(*args)``: its first argument flat and full-size, ``args[i]`` for ``i`` in ``outs`` its
    flat destinations (None: not written). Compiled in one call when ``key`` is given and fusion
    works, else the uncompiled ``fn`` chunk by chunk (exact, slower). A variant's first compiled
    result is checked against ``fn`` (:func:`_check_against_reference`); a mismatch or any
    compile error (no compiler, unsupported op) disables that variant, logged once."""
    kernel = get_kernel(key, fn) if key is not None else None
    if kernel is not None:
        try:
            kernel(*args)
            if key not in _verified:
                _check_against_reference(fn, args, outs)
                _verified.add(key)
            return
        except Exception as exc:
            _logger.warning("fused merge kernel %s unusable (%s: %s); using the eager path",
                            key[0], type(exc).__name__, str(exc).splitlines()[0] if str(exc)
                            else "")
            _kernels[key] = None
    numel = args[0].numel()
    for s in range(0, numel, chunk):
        part = sliced(args, numel, slice(s, s + chunk))
        if start_index is not None:  # the flat position of the chunk's first element
            part[start_index] = args[start_index] + s
        fn(*part)
