"""Shared fixtures for the merging tests: one BLAS/ATen thread, random endpoint tensors."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

torch = pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    # Other jobs share the 2 CI cores; results do not depend on the thread count.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_endpoints(
    shape: tuple[int, ...],
    n: int,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    scale: float = 0.05,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A base tensor and ``n`` fine-tuned-like endpoints (base + small random task vector)."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen)
    tensors = [base + scale * torch.randn(shape, generator=gen) for _ in range(n)]
    return base.to(dtype), [t.to(dtype) for t in tensors]


@pytest.fixture
def endpoints():
    """Factory fixture: ``endpoints(shape, n, seed=..., dtype=...)`` -> (base, tensors)."""
    return make_endpoints
