"""Exact, faster replay of ``torch.bernoulli(p, generator=g)`` for CPU generators.

MergeKit's DARE / DELLA masks are ``torch.bernoulli(p)`` draws. On CPU, PyTorch's kernel
(`aten/src/ATen/native/cpu/DistributionTemplates.h`, ``bernoulli_tensor_cpu_kernel``) walks the
elements in order and, for each, takes one 32-bit output ``x`` of the generator's MT19937 engine
and keeps the element iff ``(x & (2**24 - 1)) * 2**-24 < p`` (``uniform_real_distribution<float>``
then ``bernoulli``). That serial loop costs ~10 ns per element. Here the same MT19937 stream is
produced in bulk by numpy's ``MT19937`` (identical algorithm), started from the generator's state
(``Generator.get_state()``) and written back afterwards, so the generator ends exactly where
``torch.bernoulli`` would have left it. Where a C compiler is available the outputs come from a
compiled, vectorised MT19937 loop instead (``_mt_native``: ~7x faster than numpy's, checked bit
for bit against it).

The state layout is PyTorch's ``CPUGeneratorImplState``; a self-check against ``torch.bernoulli``
(across an MT19937 regeneration boundary, then one more draw after the write-back) runs once per
process, and any mismatch or unexpected layout silently falls back to ``torch.bernoulli``.
"""

from __future__ import annotations

import logging
import math
import struct

import numpy as np
import torch

from optuna_merge3.merging import _mt_native

__all__ = ["MTStream", "fast_bernoulli_available"]

_logger = logging.getLogger(__name__)

_N = 624  # MT19937 state words
_STATE_BYTES = 5056  # sizeof(CPUGeneratorImplState) on 64-bit platforms
_KEY_OFFSET = 24  # int64 seed, int left, int seeded, uint64 next, then uint64 state[624]
_SCALE = float(2**24)  # uniform_real<float> keeps 24 bits
_checked: bool | None = None


class MTStream:
    """The 32-bit MT19937 output stream of a CPU ``torch.Generator``, drawn in bulk (the
    compiled loop of ``_mt_native``, else numpy's ``MT19937``).

    Call :meth:`close` to hand the advanced state back to the torch generator.
    """

    def __init__(self, generator: torch.Generator) -> None:
        self._generator = generator
        self._raw = bytearray(generator.get_state().numpy().tobytes())
        if len(self._raw) != _STATE_BYTES:
            raise ValueError("unexpected torch CPU generator state layout")
        left, _seeded, nxt = struct.unpack_from("<iiQ", self._raw, 8)
        # torch: ``--left == 0`` regenerates, else outputs state[next++] (left + next == 625).
        pos = _N if left <= 1 else nxt
        if not 0 <= pos <= _N:
            raise ValueError("unexpected torch CPU generator state")
        key = np.frombuffer(bytes(self._raw), dtype=np.uint64, count=_N, offset=_KEY_OFFSET)
        # The state as numpy's MT19937 holds it; advanced in place by the compiled loop.
        self._key = key.astype(np.uint32)
        self._pos = np.array([pos], dtype=np.int32)

    def uint24(self, n: int, out: np.ndarray | None = None) -> torch.Tensor:
        """The next ``n`` outputs masked to their low 24 bits, as int32 (into the first ``n``
        elements of the flat int32 array ``out`` when given: chunk loops reuse one buffer)."""
        if out is not None and out.size < n:
            raise ValueError(f"out holds {out.size} elements, fewer than the {n} draws asked")
        out = np.empty(n, dtype=np.int32) if out is None else out[:n]
        if _mt_native.mt19937_uint24(self._key, self._pos, out) is None:
            bitgen = np.random.MT19937(0)
            bitgen.state = {"bit_generator": "MT19937",
                            "state": {"key": self._key, "pos": int(self._pos[0])}}
            raw = np.random.Generator(bitgen).integers(0, 2**32, size=n, dtype=np.uint32)
            np.bitwise_and(raw, 0xFFFFFF, out=out.view(np.uint32))
            state = bitgen.state["state"]
            self._key[:] = state["key"]
            self._pos[0] = state["pos"]
        return torch.from_numpy(out)

    def bernoulli_scalar(self, p: float, out: torch.Tensor) -> torch.Tensor:
        """``torch.bernoulli(full_like(out, p))`` into ``out`` (float 0/1); ``p`` as stored in
        the probability tensor's dtype (converted to float by the kernel)."""
        threshold = math.ceil(p * _SCALE)  # m * 2**-24 < p  <=>  m < ceil(p * 2**24)
        m = self.uint24(out.numel())  # a fresh array we own: computed in place
        return out.copy_(m.sub_(threshold).neg_().clamp_(0, 1))  # threshold - m, clamped

    def bernoulli_tensor(self, probs: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``torch.bernoulli(probs)`` into fp32 ``out`` (float 0/1)."""
        m = self.uint24(probs.numel())
        out.copy_(probs).mul_(_SCALE)  # exact: fp32 copy scaled by a power of two
        out.sub_(m)  # m < 2**24 converts exactly: the exact sign of p * 2**24 - m
        return out.sign_().clamp_(0, 1)

    def close(self) -> None:
        """Write the advanced MT19937 state back into the torch generator."""
        pos = int(self._pos[0])
        key = self._key.astype(np.uint64)
        raw = self._raw
        raw[_KEY_OFFSET : _KEY_OFFSET + 8 * _N] = key.tobytes()
        # pos == 624 means "regenerate on the next draw": torch's left == 1.
        struct.pack_into("<i", raw, 8, _N + 1 - pos)
        struct.pack_into("<Q", raw, 16, pos)
        self._generator.set_state(torch.frombuffer(raw, dtype=torch.uint8).clone())


def _self_check() -> bool:
    gen_torch = torch.Generator().manual_seed(20250)
    gen_fast = torch.Generator().manual_seed(20250)
    probs = torch.rand(1500, generator=torch.Generator().manual_seed(1))
    expected = [torch.bernoulli(probs, generator=gen_torch) for _ in range(2)]
    expected.append(torch.bernoulli(torch.full((700,), 0.3), generator=gen_torch))
    stream = MTStream(gen_fast)
    got = [stream.bernoulli_tensor(probs, torch.empty(1500)) for _ in range(2)]
    got.append(stream.bernoulli_scalar(0.3, torch.empty(700)))
    stream.close()
    same = all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))
    after = torch.equal(
        torch.bernoulli(probs, generator=gen_torch), torch.bernoulli(probs, generator=gen_fast)
    )
    return same and after


def fast_bernoulli_available(generator: torch.Generator | None) -> bool:
    """Whether :class:`MTStream` reproduces ``torch.bernoulli`` for this generator."""
    global _checked
    if generator is None or generator.device.type != "cpu":
        return False
    if _checked is None:
        try:
            _checked = _self_check()
        except Exception:  # any layout surprise: use torch.bernoulli
            _checked = False
        if not _checked:
            _logger.info("fast MT19937 replay unavailable; using torch.bernoulli")
    return _checked
