"""Input tensors delivered one checkpoint tensor at a time, on the merge device.

``host_tensors(name)`` yields each input's tensor on the CPU (a fresh read from the safetensors
memory map, i.e. the page cache, or a tensor kept in host memory). On CPU the tensors are only
converted to the merge dtype. On CUDA each goes through a pinned staging buffer per input (grown to
the largest tensor, reused) and is copied to the device on a side stream, one tensor ahead: while
tensor ``i`` is merged, tensor ``i + 1`` is read and in flight. Peak extra memory is therefore
two tensors per input on the device plus one pinned buffer per input, whatever the depth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch

__all__ = ["device_tensors"]

HostTensors = Callable[[str], dict[str, torch.Tensor]]


def device_tensors(names: Sequence[str], host_tensors: HostTensors, device: torch.device,
                   dtype: torch.dtype) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
    """(name, {input label: tensor on ``device``, floating tensors in ``dtype``}) per name."""
    if device.type != "cuda":
        for name in names:
            yield name, {k: _cast(t.to(device), dtype) for k, t in host_tensors(name).items()}
        return
    yield from _CudaPrefetch(host_tensors, device, dtype).run(names)


def _cast(tensor: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return tensor.to(dtype) if tensor.is_floating_point() else tensor


def _pinned_empty(numel: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(numel, dtype=dtype, pin_memory=True)


def _record_stream(tensor: torch.Tensor, stream: torch.cuda.Stream) -> None:
    tensor.record_stream(stream)


class _CudaPrefetch:
    """Pinned staging + side-stream copies, one tensor ahead (runs only where CUDA exists)."""

    def __init__(self, host_tensors: HostTensors, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.host_tensors, self.device, self.dtype = host_tensors, device, dtype
        self.side = torch.cuda.Stream(device)
        self.pinned: dict[tuple[str, torch.dtype], torch.Tensor] = {}
        self.copied: dict[tuple[str, torch.dtype], torch.cuda.Event] = {}

    def _staged(self, label: str, tensor: torch.Tensor) -> torch.Tensor:
        key = (label, tensor.dtype)
        buf = self.pinned.get(key)
        if key in self.copied:  # the previous copy out of this buffer must have finished
            self.copied[key].synchronize()
        if buf is None or buf.numel() < tensor.numel():
            buf = _pinned_empty(tensor.numel(), tensor.dtype)
            self.pinned[key] = buf
        return buf[: tensor.numel()].view(tensor.shape).copy_(tensor)

    def _launch(self, name: str) -> dict[str, torch.Tensor]:
        out = {}
        for label, tensor in self.host_tensors(name).items():
            staged = self._staged(label, tensor)
            with torch.cuda.stream(self.side):  # (copy=True: never a view of the staging buffer)
                moved = staged.to(self.device, non_blocking=True, copy=True)
                out[label] = _cast(moved, self.dtype)
                event = torch.cuda.Event()
                event.record(self.side)
            self.copied[(label, tensor.dtype)] = event
        return out

    def run(self, names: Sequence[str]) -> Iterator[tuple[str, dict[str, torch.Tensor]]]:
        main = torch.cuda.current_stream(self.device)
        pending = self._launch(names[0]) if names else {}
        for i, name in enumerate(names):
            main.wait_stream(self.side)
            current = pending
            for tensor in current.values():
                _record_stream(tensor, main)  # freed only after the merge's kernels used it
            pending = self._launch(names[i + 1]) if i + 1 < len(names) else {}
            yield name, current
            del current
