"""DARE / DELLA random masks: a counter-based hash (default) or MergeKit's own draws.

``rng="counter"``: element ``i`` of endpoint ``j`` in tensor ``name`` is kept iff
``u24(i) * 2**-24 < p_i``, where ``u24`` is the top 24 bits of a two-round 32-bit hash of ``i``
under the key :func:`mask_key` ``(seed, name, j)``. The same decision rule as ``torch.bernoulli``
on CPU (24-bit uniforms), but with no generator state: plain torch int64 ops with explicit 32-bit
wrap-around give the same mask on every device and thread count, in any tensor order.
:func:`counter_bernoulli` is the hook that hands these masks to MergeKit (patch
``torch.bernoulli`` during one of its merges) to reproduce a trial there.

``rng="mergekit"``: ``torch.bernoulli(p, generator=g)`` with a CPU generator, i.e. MergeKit's
draws bit for bit when ``g`` is seeded like MergeKit's global RNG and tensors are visited in its
order (``_methods`` docstring). On an accelerator the probabilities are copied to the CPU for the
draw (the same uniforms; the probabilities themselves come from device math).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch

__all__ = ["RNGS", "bernoulli_for", "counter_bernoulli", "mask_key"]

RNGS = ("counter", "mergekit")
_MASK32 = 0xFFFFFFFF
# Elements hashed at once. On CPU a chunk's int64 words stay in L2 across the ~20 in-place ops
# (8x faster than 4M-element chunks, measured); on accelerators large chunks save launches.
# The mask does not depend on it.
_CHUNK = {"cpu": 1 << 16}
_DEVICE_CHUNK = 1 << 24


def mask_key(seed: int, tensor_name: str, endpoint: int) -> tuple[int, int]:
    """Two 32-bit keys for the counter mask of ``endpoint`` (config order) in ``tensor_name``."""
    digest = hashlib.blake2b(f"{int(seed)}\0{tensor_name}\0{int(endpoint)}".encode(),
                             digest_size=8).digest()
    return int.from_bytes(digest[:4], "little"), int.from_bytes(digest[4:], "little")


def _hash32_(x: torch.Tensor) -> torch.Tensor:
    """In place: a bijection of 32-bit words held in int64 (Wellons' "lowbias32" shape,
    hash-prospector constants [16 21f0aaad 15 735a2d97 15]); products stay below 2**63, so
    nothing overflows on any device."""
    x ^= x >> 16
    x *= 0x21F0AAAD
    x &= _MASK32
    x ^= x >> 15
    x *= 0x735A2D97
    x &= _MASK32
    x ^= x >> 15
    return x


def _uniform24_(index: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """In place: top 24 bits of the two-round hash of int64 ``index`` (< 2**32) under ``key``."""
    index ^= key[0]
    _hash32_(index)
    index ^= key[1]
    return _hash32_(index).bitwise_right_shift_(8)


def counter_bernoulli(probs: torch.Tensor, key: tuple[int, int]) -> torch.Tensor:
    """The counter mask for keep probabilities ``probs`` (element ``i`` = flat position ``i``),
    as 0/1 in ``probs``' dtype and device: our DARE / DELLA mask, and the hook for MergeKit
    (patch ``torch.bernoulli`` with ``lambda p, *a, **k: counter_bernoulli(p, next(keys))``, keys
    from :func:`mask_key` in MergeKit's draw order)."""
    flat = probs.reshape(-1)
    if flat.numel() > _MASK32:
        raise ValueError("counter masks support tensors of at most 2**32 - 1 elements")
    out = torch.empty_like(flat)
    chunk = _CHUNK.get(probs.device.type, _DEVICE_CHUNK)
    for s in range(0, flat.numel(), chunk):
        e = min(s + chunk, flat.numel())
        index = torch.arange(s, e, dtype=torch.int64, device=probs.device)
        u24 = _uniform24_(index, key).to(torch.float32)  # < 2**24: exact in fp32
        out[s:e] = u24 < flat[s:e].to(torch.float32) * float(2**24)
    return out.reshape(probs.shape)


def bernoulli_for(rng: str, generator: torch.Generator | None, tensor_name: str,
                  endpoint: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """``probs -> 0/1 mask`` for one endpoint of one tensor (``rng``: one of :data:`RNGS`).

    ``"counter"`` keys the mask by ``generator.initial_seed()``, ``tensor_name`` and
    ``endpoint``; ``"mergekit"`` draws from ``generator`` (a CPU generator)."""
    if rng not in RNGS:
        raise ValueError(f"rng: {rng!r} is not one of {list(RNGS)}")

    def draw(probs: torch.Tensor) -> torch.Tensor:
        if rng == "counter":
            return counter_bernoulli(probs, mask_key(generator.initial_seed(), tensor_name,
                                                     endpoint))
        if generator.device.type != "cpu":
            raise ValueError("rng='mergekit' replays MergeKit's CPU draws: use a CPU generator")
        return torch.bernoulli(probs.cpu(), generator=generator).to(probs.device)

    return draw
