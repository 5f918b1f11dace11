"""Generalized task arithmetic (task_arithmetic, TIES, DARE, breadcrumbs, DELLA), MergeKit 0.1.5.

One implementation configured per method row, as MergeKit's ``GeneralizedTaskArithmeticMerge``
(`mergekit/merge_methods/generalized_task_arithmetic.py`): task vectors ``tau_j = theta_j - base``
(Ilharco et al. 2023, eq. 1) are sparsified (TIES magnitude top-k, DARE Bernoulli, breadcrumbs
outlier band, DELLA rank-dependent Bernoulli), weighted, optionally sign-elected (TIES, Yadav et al.
2023: "sum" = sign of the weighted sum, "count" = majority of signs), summed, optionally divided by
the sum of the weights that agree with the elected sign (``normalize``), scaled by ``lambda`` and
added to the base. All arithmetic is done in the inputs' dtype, as MergeKit does.

Speed without changing a bit: MergeKit materialises ``(n, *shape)`` stacks and a dozen full-size
temporaries per tensor; on CPU each fresh large allocation costs page faults that dominate the
arithmetic, and boolean masks take slow kernels. Here the element-wise part (phase 2) runs over
chunks of the flattened tensor with float 0/1 masks, in buffers reused across calls (a
thread-local CPU workspace). The steps that need the whole tensor run first (phase 1): random
masks, drawn endpoint after endpoint in MergeKit's order, and the L1 norms for ``rescale``, summed
over a full-size buffer exactly as MergeKit's ``masked.abs().sum()`` (same values, same reduction).
Every product and sum sees the same operands in the same order as MergeKit's, so results are
bit-identical (tests compare with ``torch.equal``).

bf16 / fp16 sums over the endpoints: PyTorch's CPU ``sum(dim=0)`` of a reduced-precision tensor
accumulates in fp32, row after row from +0.0, and rounds once; its reduced-precision kernel is
~20x slower than fp32 additions. For up to ``_MAX_FAST_ROWS`` endpoints the same sum is computed
explicitly (exact fp32 copies of the rows, fp32 additions in row order, ``+ 0.0``, one rounding),
and that equivalence is self-checked bit for bit against ``torch.sum`` once per process and dtype
(adversarial exponents, signed zeros, cancellations; any mismatch falls back to ``torch.sum``).
The sign election runs on the same exact fp32 copies. With ``out`` (the merger passes the live
model's parameter) the result is written in place: no full-size allocation, no copy.

With ``fused=True`` phase 2 is instead one compiled loop over the whole tensor (``_fused``), and
random masks are one uint8 per element made by one compiled pass (``_prepare_masks``).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from optuna_merge3.merging import _fused, _m_rng, _sparsify

__all__ = ["merge_gta", "task_vectors"]

# DARE / DELLA masks: MergeKit's own draws, or the counter-based hash masks of ``_fused``.
RNGS = ("mergekit", "counter")

# Chunk of the flattened tensor for the element-wise phase on CPU: (n endpoints x chunk)
# temporaries stay in L2/L3 cache. On accelerators (caching allocators, kernel-launch overhead)
# the whole tensor is one chunk and no workspace is kept.
_CPU_CHUNK = 1 << 17

_local = threading.local()

# Endpoint counts for which the explicit fp32 row sum is used (torch.sum's reduction keeps row
# order for short reductions; longer ones are left to torch.sum).
_MAX_FAST_ROWS = 4
_REDUCED = (torch.bfloat16, torch.float16)
_fast_sum_ok: dict[tuple[torch.dtype, int], bool] = {}


def _workspace(name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A flat CPU buffer reused across calls and tensors (grown to the largest one)."""
    if device.type != "cpu":
        return torch.empty(numel, dtype=dtype, device=device)
    store = _local.__dict__.setdefault("buffers", {})
    buf = store.get((name, dtype))
    if buf is None or buf.numel() < numel:
        buf = torch.empty(numel, dtype=dtype)
        store[(name, dtype)] = buf
    return buf[:numel]


def release_workspace() -> None:
    """Free this thread's CPU workspace (it is rebuilt on the next merge)."""
    _local.__dict__.pop("buffers", None)


def _rows_sum(rows: torch.Tensor, out: torch.Tensor, plus_zero: bool = True) -> torch.Tensor:
    """``rows.sum(dim=0)`` of fp32 rows as torch accumulates a short reduced-precision sum:
    ``((0 + r_0) + r_1) + ...`` in fp32 (``plus_zero=False`` leaves an all-``-0.0`` column at
    ``-0.0``; only its sign differs)."""
    if rows.shape[0] == 1:
        out.copy_(rows[0])
    else:
        torch.add(rows[0], rows[1], out=out)
        for row in rows[2:]:
            out.add_(row)
    if plus_zero:
        out.add_(0.0)
    return out


def _self_check_sum(dtype: torch.dtype, n: int) -> bool:
    """``_rows_sum`` of exact fp32 copies, rounded to ``dtype``, equals ``torch.sum(dim=0)`` bit
    for bit on adversarial ``(n, m)`` data: contiguous, a strided row view (as the chunks here)
    and a 3-D stack (as MergeKit's)."""
    gen = torch.Generator().manual_seed(7 + n)
    m = 6000
    span = 40 if dtype == torch.bfloat16 else 10  # finite values (fp16 overflows at 65504)
    x = torch.randn(n, m, generator=gen, dtype=torch.float64)
    x *= torch.exp2(torch.randint(-span, span, (n, m), generator=gen).double())
    x[:, :300] = -0.0  # all-negative-zero columns
    x[0, 300:600] = 0.0
    x[n - 1, 600:900] = -x[0, 600:900]  # cancellations
    x[:, 900:1000] = torch.randint(-1, 2, (n, 100), generator=gen).double()  # signs
    padded = torch.zeros(n, m + 37, dtype=dtype)
    padded[:, :m] = x.to(dtype)
    views = [padded[:, :m], padded[:, :m].contiguous(), padded[:, :m].reshape(n, 60, 100)]
    for view in views:
        expected = view.sum(dim=0).reshape(-1)
        rows = view.reshape(n, -1).to(torch.float32)
        got = _rows_sum(rows, torch.empty(rows.shape[1])).to(dtype)
        if not torch.equal(expected.view(torch.int16), got.view(torch.int16)):
            return False
    return True


def _row_sum_is_torch_sum(dtype: torch.dtype, n: int) -> bool:
    """Whether ``n`` rows summed in fp32 in row order (``_rows_sum``, ``_fused._rows_sum``)
    give ``torch.sum(dim=0)``'s bits for ``dtype`` on CPU (self-checked once per process)."""
    if not 1 <= n <= _MAX_FAST_ROWS:
        return False
    key = (dtype, n)
    if key not in _fast_sum_ok:
        try:
            _fast_sum_ok[key] = _self_check_sum(dtype, n)
        except Exception:  # any surprise: torch.sum
            _fast_sum_ok[key] = False
    return _fast_sum_ok[key]


def _fast_sum(dtype: torch.dtype, n: int, device: torch.device) -> bool:
    """Whether phase 2 sums the endpoints through exact fp32 copies (see module docstring)."""
    return dtype in _REDUCED and device.type == "cpu" and _row_sum_is_torch_sum(dtype, n)


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


class _Endpoint:
    """How one endpoint's sparsified, weighted task vector is produced chunk by chunk."""

    __slots__ = ("j", "tv", "kind", "ranks", "lo", "hi", "masked", "wd", "scale", "weight")

    def __init__(self, j: int, tv: torch.Tensor) -> None:
        self.j = j
        self.tv = tv.reshape(-1)
        self.kind = "dense"  # dense | zero | rank | stored | bytes (uint8 random mask)
        self.ranks: torch.Tensor | None = None  # int32 magnitude ranks (rank kind)
        self.lo = self.hi = 0  # keep ranks in [lo, hi)
        # stored kind: tensor * random mask, work dtype; bytes kind: the uint8 mask
        self.masked: torch.Tensor | None = None
        self.wd = tv.dtype
        self.scale: torch.Tensor | None = None  # L1 rescale factor before / after
        self.weight: torch.Tensor | None = None

    def fused_args(self) -> list[torch.Tensor]:
        """This endpoint's tensors for ``_fused.gta_reference`` (see ``_endpoint_delta``)."""
        kind = self.fused_kind()
        if kind == "zero":
            args = []
        elif kind == "dense":
            args = [self.tv]
        elif kind == "top":
            args = [self.tv, self.ranks, _index_scalar(self.hi, self.tv)]
        elif kind == "rank":
            args = [self.tv, self.ranks, _index_scalar(self.lo, self.tv),
                    _index_scalar(self.hi, self.tv)]
        else:  # stored: the masked tensor; bytes: the task vector and its uint8 mask
            args = [self.masked] if kind == "stored" else [self.tv, self.masked]
        return args + ([self.scale] if self.scale is not None else [])

    def fused_kind(self) -> str:
        """``kind``, with TIES' top-k (``lo == 0``) told apart from breadcrumbs' band."""
        return "top" if self.kind == "rank" and self.lo == 0 else self.kind

    def rank_mask(self, s: int, e: int) -> torch.Tensor:
        """Float 0/1 mask of ranks in ``[lo, hi)`` on elements ``s:e`` (integer clamps)."""
        r = self.ranks[s:e]
        device = self.tv.device
        # Into reused buffers: a fresh allocation per chunk costs page faults on CPU.
        keep = torch.sub(r, self.hi, out=_workspace("keep", e - s, r.dtype, device))
        keep.neg_().clamp_(0, 1)  # hi - r clamped: 1 iff r < hi
        if self.lo > 0:
            low = torch.sub(r, self.lo - 1, out=_workspace("keep_lo", e - s, r.dtype, device))
            keep.mul_(low.clamp_(0, 1))
        out = _workspace("mask", e - s, self.tv.dtype, device)
        return out.copy_(keep)

    def masked_abs(self, s: int, e: int, out: torch.Tensor) -> None:
        """``|tensor * mask|`` on elements ``s:e`` (MergeKit's ``masked.abs()``)."""
        if self.kind == "stored":
            torch.abs(self.masked[s:e], out=out)
        else:
            torch.mul(torch.abs(self.tv[s:e]), self.rank_mask(s, e), out=out)

    def write(self, s: int, e: int, out: torch.Tensor) -> None:
        """``out = sparsified[s:e] * weight`` with MergeKit's operands and roundings:
        ``tensor * mask``, then ``* (before / after)`` when rescaled, then ``* weight``."""
        if self.kind == "zero":
            out.zero_()
            return
        if self.kind == "dense":
            torch.mul(self.tv[s:e], self.weight, out=out)
            return
        if self.kind == "rank":
            torch.mul(self.tv[s:e], self.rank_mask(s, e), out=out)
            if self.scale is not None:
                out.mul_(self.scale)
        else:
            src = self.masked[s:e]
            if self.kind == "bytes":  # MergeKit: tensor.to(work dtype) * mask
                src = torch.mul(self.tv[s:e].to(self.wd), src,
                                out=_workspace("from_bytes", e - s, self.wd, out.device))
            if self.scale is not None:
                # MergeKit: ``(tensor * mask) * (before / after)`` in the work dtype ...
                scaled = out if self.wd == out.dtype else _workspace("scaled", e - s, self.wd,
                                                                     out.device)
                src = torch.mul(src, self.scale, out=scaled)
            if src is not out:
                out.copy_(src)  # ... then ``.to(tensor.dtype)``
        out.mul_(self.weight)


def _index_scalar(value: int, like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(value, dtype=torch.int64, device=like.device)


# Elements per call of the compiled mask kernel on MergeKit's MT19937 draws (fewer calls than
# _CPU_CHUNK: each costs ~50 us of dispatch; 4 MB of draws stay cheap).
_STREAM_CHUNK = 1 << 20


def _prepare_masks(ep: _Endpoint, sparsification: str, density: float,
                   rank_norm: torch.Tensor | None, eps: float, key: tuple[int, int] | None,
                   stream: _m_rng.MTStream | None, rescale: bool, fused: bool, chunk: int
                   ) -> torch.Tensor | None:
    """DARE / DELLA masks as one uint8 per element (kind "bytes"), in one pass (compiled when
    ``fused``) that also writes ``|masked|`` for the L1 rescale; returns that full-size buffer
    (or None). Uniforms: counter hashes (``key``, see ``_fused``) or MergeKit's MT19937 draws
    (``stream``)."""
    device, numel = ep.tv.device, ep.tv.numel()
    if sparsification == "random":
        # MergeKit's probability tensor holds density in the work dtype (bf16 rounds it).
        probs = [torch.tensor(density, dtype=ep.wd).float().to(device)]
    else:
        # As torch's eager ops: a tensor times a Python float uses the float in fp32, a tensor
        # plus a Python float rounds it to the tensor's dtype first.
        probs = [rank_norm, torch.tensor(eps, dtype=torch.float32, device=device),
                 torch.tensor(density - eps, dtype=ep.wd, device=device).float()]
    ep.kind = "bytes"
    ep.masked = _workspace(f"mask{ep.j}", numel, torch.uint8, device)
    scratch = _workspace("scratch", numel, ep.wd, device) if rescale else None
    della = sparsification == "della_magprune"
    fn = functools.partial(_fused.random_mask, della, ep.wd)
    source = "counter" if key is not None else "stream"
    variant = (f"mask_{source}", della, ep.wd, ep.tv.dtype, rescale, device.type)
    variant = variant if fused else None
    if key is not None:
        start = torch.zeros((), dtype=torch.int32, device=device)
        args = [ep.tv, start, _fused.key_tensor(key, device), ep.masked, scratch, *probs]
        _fused.run_flat(fn, variant, args, (3, 4), 1, chunk)
        return scratch
    draws = np.empty(min(numel, _STREAM_CHUNK), dtype=np.int32)
    for s in range(0, numel, _STREAM_CHUNK):  # the draws, in MergeKit's element order
        e = min(s + _STREAM_CHUNK, numel)
        args = [ep.tv[s:e], stream.uint24(e - s, draws), None, ep.masked[s:e],
                None if scratch is None else scratch[s:e], *_fused.sliced(probs, numel, slice(s, e))]
        _fused.run_flat(fn, variant, args, (3, 4), None, chunk)
    return scratch


def _prepare(
    j: int,
    tv: torch.Tensor,
    sparsification: str | None,
    p: Mapping[str, float],
    rescale: bool,
    generator: torch.Generator | None,
    stream: _m_rng.MTStream | None,
    cache: dict | None,
    chunk: int,
    counter_key: tuple[int, int] | None = None,
    fused: bool = False,
) -> _Endpoint:
    """Phase 1 for endpoint ``j``: ranks, random draws (MergeKit's order, or counter masks with
    ``counter_key``) and the L1 rescale factor."""
    ep = _Endpoint(j, tv)
    density = p["density"]
    if sparsification is None or density >= 1 or tv.numel() == 0:
        return ep
    numel = tv.numel()
    if sparsification == "magnitude":
        if density <= 0:
            ep.kind = "zero"
            return ep
        ep.kind, ep.hi = "rank", max(1, int(density * numel))
        ep.ranks = _sparsify.magnitude_ranks(tv, cache, j)
    elif sparsification == "magnitude_outliers":
        target_n, n_top = int(density * numel), int(p["gamma"] * numel)
        ep.lo = max(0, numel - target_n - n_top)
        ep.kind, ep.hi = "rank", ep.lo + target_n
        ep.ranks = _sparsify.outlier_ranks(tv, cache, j)
    elif sparsification in ("random", "della_magprune"):
        ep.kind, ep.wd = "stored", _sparsify.work_dtype(tv)
        if sparsification == "della_magprune":
            eps = p["epsilon"]
            if density <= 0:
                ep.kind = "zero"
                return ep
            _sparsify.check_della(density, eps)
            rank_norm = _sparsify.della_rank_norm(tv, cache, j).reshape(-1)
        else:
            eps, rank_norm = 0.0, None
        if counter_key is not None or (stream is not None and fused):
            scratch = _prepare_masks(ep, sparsification, density, rank_norm, eps, counter_key,
                                     stream, rescale, fused, chunk)
            return _rescale(ep, tv, scratch, cache, chunk) if rescale else ep
        ep.masked = _workspace(f"masked{j}", numel, ep.wd, tv.device)
        probs = _workspace("probs", min(chunk, numel), ep.wd, tv.device)
        # |masked| for the L1 rescale, taken while the chunk is in cache (summed below).
        scratch = _workspace("scratch", numel, ep.wd, tv.device) if rescale else None
        # MergeKit's probability tensor holds density in the work dtype (bf16 rounds it).
        p_stored = torch.tensor(density, dtype=ep.wd).item()
        for s in range(0, numel, chunk):
            e = min(s + chunk, numel)
            if sparsification == "random" and stream is not None:
                mask = stream.bernoulli_scalar(
                    p_stored, _workspace("draw", e - s, ep.wd, tv.device)
                )
            else:
                if sparsification == "random":  # MergeKit: full_like(tensor, density)
                    pc = probs[: e - s].fill_(density)
                else:  # MergeKit: (density - epsilon) + rank_norm * 2 * epsilon
                    pc = torch.mul(rank_norm[s:e], 2, out=probs[: e - s])
                    pc.mul_(eps).add_(density - eps)  # the same ops, in place
                if stream is not None:
                    draw = _workspace("draw", e - s, torch.float32, tv.device)
                    mask = stream.bernoulli_tensor(pc, draw)
                else:
                    mask = torch.bernoulli(pc, generator=generator)
            torch.mul(ep.tv[s:e].to(ep.wd), mask, out=ep.masked[s:e])
            if scratch is not None:
                torch.abs(ep.masked[s:e], out=scratch[s:e])
    else:
        raise ValueError(f"Unknown sparsification {sparsification!r}")
    if rescale:  # (stored: |masked| is already in the scratch buffer)
        return _rescale(ep, tv, scratch if ep.kind == "stored" else None, cache, chunk)
    return ep


def _rescale(ep: _Endpoint, tv: torch.Tensor, scratch: torch.Tensor | None, cache: dict | None,
             chunk: int) -> _Endpoint:
    """MergeKit's L1 rescale factor ``before / after``; ``scratch``: ``|masked|`` when already
    computed, summed over the full-size buffer exactly as MergeKit's ``masked.abs().sum()``."""
    before = _sparsify.l1_norm(tv, ep.wd, cache, ep.j)
    numel = tv.numel()
    if scratch is None:
        scratch = _workspace("scratch", numel, ep.wd, tv.device)
        for s in range(0, numel, chunk):
            e = min(s + chunk, numel)
            ep.masked_abs(s, e, scratch[s:e])
    after = scratch.sum()
    if not (before < _sparsify.RESCALE_EPS or after < _sparsify.RESCALE_EPS):
        ep.scale = before / after
    return ep


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
    out: torch.Tensor | None = None,
    fused: bool = False,
    rng: str = "mergekit",
    tensor_name: str = "",
) -> torch.Tensor:
    """MergeKit's ``GeneralizedTaskArithmeticMerge.merge_group`` for one tensor.

    Random masks (``rng="mergekit"``) are drawn endpoint by endpoint in ``tensors`` order, one
    draw per element of each endpoint whose density is below 1 (MergeKit's order within a tensor
    group); ``rng="counter"`` uses ``_fused``'s counter masks keyed by the generator's seed,
    ``tensor_name`` and the endpoint. ``fused`` runs the element-wise merge as one compiled loop
    (``_fused``; same bits). ``out`` (contiguous, the base's shape and dtype, overlapping no
    input; ``merge_tensor`` checks it) receives the result and is returned; without it the
    result is a new tensor.
    """
    if not tensors:
        return base if out is None else out.copy_(base)
    if consensus not in (None, "sum", "count"):
        raise ValueError(f"Unknown consensus_method {consensus!r}; valid: 'count', 'sum'")
    if rng not in RNGS:
        raise ValueError(f"Unknown rng {rng!r}; valid: {', '.join(map(repr, RNGS))}")
    tvs = task_vectors(base, tensors, cache)
    numel, n, dtype = base.numel(), len(tvs), base.dtype
    chunk = _CPU_CHUNK if base.device.type == "cpu" else max(numel, 1)
    rescale = bool(options["rescale"])
    # The fused loop sums endpoints in fp32 row order: only where that is torch.sum's result
    # (self-checked on CPU; on CUDA, untested, up to the same endpoint count).
    fused = (fused and numel > 0 and dtype in (torch.float32, *_REDUCED)
             and (_row_sum_is_torch_sum(dtype, n) if base.device.type == "cpu"
                  else n <= _MAX_FAST_ROWS)
             and _fused.fusion_available(base.device))
    stochastic = sparsification in ("random", "della_magprune")
    stream = None
    if stochastic and rng == "mergekit" and _m_rng.fast_bernoulli_available(generator):
        stream = _m_rng.MTStream(generator)
    try:
        eps = []
        for j, tv in enumerate(tvs):
            key = None
            if stochastic and rng == "counter" and generator is not None:
                key = _fused.mask_key(generator.initial_seed(), tensor_name, j)
            eps.append(_prepare(j, tv, sparsification, params[j], rescale, generator, stream,
                                cache, chunk, key, fused))
    finally:
        if stream is not None:
            stream.close()

    weights = torch.tensor([p["weight"] for p in params], dtype=dtype, device=base.device)
    # ``int8_mask`` only sets the dtype of MergeKit's sign comparison; the mask it yields is
    # boolean either way, so it changes no value.
    normalize, lam = bool(options["normalize"]), options["lambda"]
    plain_divisor = None  # without consensus, ``normalize`` divides by the sum of the weights
    if normalize and not consensus:
        plain_divisor = weights.unsqueeze(-1).sum(dim=0)  # (n, 1) summed as MergeKit's
        plain_divisor[plain_divisor.abs() < 1e-8] = 1
    flat_base = base.reshape(-1)
    result = torch.empty_like(base) if out is None else out
    flat_out = result.view(-1)
    if fused:  # (only what the kernel reads: this runs once per tensor and trial)
        one32 = torch.ones((), dtype=torch.float32, device=base.device)
        divisor32 = one32 if plain_divisor is None else plain_divisor.float().reshape(())
        spec = tuple((ep.fused_kind(), ep.scale is not None, ep.wd) for ep in eps)
        lam32 = (torch.tensor(float(lam), dtype=torch.float32, device=base.device)
                 if lam != 1 else one32)
        args = [flat_base, flat_out, weights.float(), lam32, divisor32]
        for ep in eps:
            args += ep.fused_args()
        fn = functools.partial(_fused.gta_reference, spec, consensus, normalize, lam != 1, dtype)
        key = ("gta", spec, consensus, normalize, lam != 1, dtype, base.device.type)
        _fused.run_flat(fn, key, args, outs=(1,), start_index=None, chunk=chunk)
        return result
    for ep, w in zip(eps, weights, strict=True):
        ep.weight = w
    weights = weights.unsqueeze(-1)  # (n, 1), broadcast over a chunk as MergeKit's (n, 1, ...)
    divisor = plain_divisor  # (consensus: per chunk, below)
    one = torch.ones((), dtype=dtype, device=base.device)
    size = min(chunk, numel)
    stack = _workspace("stack", n * size, dtype, base.device).view(n, size)
    fast = _fast_sum(dtype, n, base.device)
    if fast:
        stack32 = _workspace("stack32", n * size, torch.float32, base.device).view(n, size)
        sign32 = _workspace("sign32", n * size, torch.float32, base.device).view(n, size)
        acc32 = _workspace("acc32", size, torch.float32, base.device)
        mixed_buf = _workspace("mixed", size, dtype, base.device)
        divisor_buf = _workspace("divisor", size, dtype, base.device)
        zero_buf = _workspace("is_zero", size, dtype, base.device)
        elected_buf = _workspace("elected", size, torch.float32, base.device)
        weights32 = weights.float()
        one32 = one.float()
    for s in range(0, numel, chunk):
        e = min(s + chunk, numel)
        deltas = stack[:, : e - s]
        for j, ep in enumerate(eps):
            ep.write(s, e, deltas[j])
        if fast:
            # The same values as the torch.sum branch below, from exact fp32 copies.
            d32 = stack32[:, : e - s]
            d32.copy_(deltas)
            acc = acc32[: e - s]
            if consensus:
                sign = torch.sign(d32, out=sign32[:, : e - s])
                # Only the sign of the total is used (an all-zero column agrees with no sign).
                _rows_sum(d32 if consensus == "sum" else sign, acc, plus_zero=False)
                elected = torch.copysign(one32, acc, out=elected_buf[: e - s])
                agree = sign.mul_(elected).clamp_(0, 1)
                mixed_delta = mixed_buf[: e - s].copy_(_rows_sum(d32.mul_(agree), acc))
                divisor = divisor_buf[: e - s].copy_(_rows_sum(agree.mul_(weights32), acc))
                is_zero = torch.abs(divisor, out=zero_buf[: e - s])
                divisor.add_(is_zero.sign_().neg_().add_(1))  # MergeKit: 0 -> 1
            else:
                mixed_delta = mixed_buf[: e - s].copy_(_rows_sum(d32, acc))
        elif consensus:
            # MergeKit: mask = sign(delta) == elected (+1 where the sum over endpoints of delta,
            # or of sign(delta) for "count", is >= 0, else -1); mixed = (delta * mask).sum(0),
            # divisor = (weights * mask).sum(0). With float masks: agree = clamp(sign * e, 0, 1)
            # and e = copysign(1, sum): the sum is -0.0 only if every delta is a zero, which
            # agrees with neither sign.
            sign = torch.sign(deltas)
            total = deltas.sum(dim=0) if consensus == "sum" else sign.sum(dim=0)
            agree = sign.mul_(torch.copysign(one, total)).clamp_(0, 1)
            mixed_delta = deltas.mul_(agree).sum(dim=0)
            divisor = agree.mul_(weights).sum(dim=0)
            divisor.add_(torch.sign(divisor.abs()).neg_().add_(1))  # MergeKit: 0 -> 1
        else:
            mixed_delta = deltas.sum(dim=0)
        if normalize:
            mixed_delta /= divisor
        if lam != 1:
            mixed_delta *= lam
        torch.add(flat_base[s:e], mixed_delta, out=flat_out[s:e])
    return result
