"""Tensor-by-tensor input delivery (``_stream``).

The CUDA prefetch (pinned staging, side-stream copies one tensor ahead) cannot run here: this
machine has no GPU. Its test replaces the four CUDA-only pieces (streams, events, pinned
allocation, ``record_stream``) by recording fakes on CPU and checks the schedule: tensor ``i + 1``
is read and launched before tensor ``i`` is handed out, a staging buffer is reused only after
the event of its previous copy was waited for, and every delivered tensor equals its input.
"""

from __future__ import annotations

import contextlib

import torch

from optuna_merge3.merging import _stream


def _host(names, log):
    gen = torch.Generator().manual_seed(0)
    data = {n: {"base": torch.randn(4, 5, generator=gen).bfloat16(),
                "ep0": torch.randn(4, 5, generator=gen).bfloat16()} for n in names}

    def host_tensors(name):
        log.append(("read", name))
        return data[name]

    return data, host_tensors


def test_cpu_delivery_converts_dtype_and_keeps_integer_buffers():
    names = ["a", "b"]
    data, host = _host(names, [])
    data["b"]["idx"] = torch.arange(3)
    got = list(_stream.device_tensors(names, host, torch.device("cpu"), torch.float32))
    assert [n for n, _ in got] == names
    assert got[0][1]["base"].dtype == torch.float32
    assert torch.equal(got[0][1]["base"], data["a"]["base"].float())
    assert got[1][1]["idx"].dtype == torch.int64


class _FakeEvent:
    def __init__(self, log):
        self.log, self.recorded = log, False

    def record(self, stream):
        self.recorded = True

    def synchronize(self):
        assert self.recorded
        self.log.append(("sync", id(self)))


class _FakeStream:
    def __init__(self, log):
        self.log = log

    def wait_stream(self, other):
        self.log.append(("wait",))


def test_cuda_prefetch_schedule_with_fake_streams(monkeypatch):
    """Mocked CUDA pieces (no GPU here); the schedule and the staging-buffer reuse are real."""
    log: list = []
    names = ["a", "b", "c"]
    data, host = _host(names, log)
    pinned = []
    main = _FakeStream(log)
    monkeypatch.setattr(torch.cuda, "Stream", lambda device: _FakeStream(log))
    monkeypatch.setattr(torch.cuda, "stream", lambda s: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "Event", lambda: _FakeEvent(log))
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device: main)
    monkeypatch.setattr(_stream, "_pinned_empty",
                        lambda n, dtype: pinned.append(n) or torch.empty(n, dtype=dtype))
    monkeypatch.setattr(_stream, "_record_stream", lambda t, s: log.append(("keep", s is main)))
    prefetch = _stream._CudaPrefetch(host, torch.device("cpu"), torch.float32)
    delivered = []
    for name, tensors in prefetch.run(names):
        log.append(("use", name))
        delivered.append((name, {k: v.clone() for k, v in tensors.items()}))
    for name, tensors in delivered:  # copies, never views of a reused staging buffer
        assert all(torch.equal(tensors[k], data[name][k].float()) for k in data[name])
    events = [e[0] for e in log if e[0] in ("read", "use")]
    assert events == ["read", "read", "use", "read", "use", "use"]  # one tensor ahead
    assert pinned == [20, 20]  # one staging buffer per input, reused for every tensor
    syncs = [e for e in log if e[0] == "sync"]
    assert len(syncs) == 2 * (len(names) - 1)  # each reuse waits for the previous copy
    assert ("keep", True) in log and log.count(("wait",)) == len(names)
