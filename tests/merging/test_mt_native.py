"""The compiled MT19937 loop (``_mt_native``) against numpy's MT19937 and torch.bernoulli."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from optuna_merge3.merging import _m_rng, _mt_native

needs_compiler = pytest.mark.skipif(
    not any(shutil.which(c) for c in ("cc", "gcc", "clang")),
    reason="no C compiler on PATH: the compiled MT19937 loop cannot be built (numpy is used)",
)


def numpy_state(seed: int, skip: int) -> tuple[np.random.MT19937, np.ndarray, np.ndarray]:
    bitgen = np.random.MT19937(seed)
    bitgen.random_raw(skip)
    state = bitgen.state["state"]
    return bitgen, np.array(state["key"], dtype=np.uint32), np.array([state["pos"]], np.int32)


@needs_compiler
@pytest.mark.parametrize(("seed", "skip"), [(0, 0), (7, 623), (2025, 624), (99, 1000)])
def test_compiled_draws_equal_numpy_in_uneven_pieces(seed, skip):
    bitgen, key, pos = numpy_state(seed, skip)
    sizes = [1, 0, 623, 625, 1248, 5000, 3]
    expected = (bitgen.random_raw(sum(sizes)) & 0xFFFFFF).astype(np.int32)
    got = np.concatenate([
        _mt_native.mt19937_uint24(key, pos, np.empty(n, np.int32)) for n in sizes
    ])
    np.testing.assert_array_equal(got, expected)
    state = bitgen.state["state"]
    np.testing.assert_array_equal(key, np.asarray(state["key"], dtype=np.uint32))
    assert int(pos[0]) == state["pos"]


@needs_compiler
def test_stream_is_the_same_with_and_without_the_compiled_loop(monkeypatch):
    """MTStream through the compiled loop and through numpy: same masks, same generator state
    afterwards, and both equal to torch.bernoulli's."""
    probs = torch.rand(3000, generator=torch.Generator().manual_seed(3))
    results = {}
    for backend in ("compiled", "numpy"):
        if backend == "numpy":
            monkeypatch.setattr(_mt_native, "mt19937_uint24", lambda *a, **k: None)
        gen = torch.Generator().manual_seed(11)
        stream = _m_rng.MTStream(gen)
        masks = [stream.bernoulli_tensor(probs, torch.empty(3000)) for _ in range(2)]
        buffer = np.empty(4096, dtype=np.int32)
        draws = stream.uint24(1500, buffer).clone()
        stream.close()
        results[backend] = (masks, draws, gen.get_state())
    reference = torch.Generator().manual_seed(11)
    expected = [torch.bernoulli(probs, generator=reference) for _ in range(2)]
    for backend, (masks, _, _) in results.items():
        assert all(torch.equal(a, b) for a, b in zip(masks, expected, strict=True)), backend
    assert torch.equal(results["compiled"][1], results["numpy"][1])
    assert torch.equal(results["compiled"][2], results["numpy"][2])
    # Both hand the generator back where 2 x 3000 + 1500 bernoulli draws leave it.
    torch.bernoulli(torch.full((1500,), 0.5), generator=reference)
    assert torch.equal(results["compiled"][2], reference.get_state())


@needs_compiler
def test_bad_arguments_are_refused():
    _, key, pos = numpy_state(1, 0)
    with pytest.raises(ValueError, match="624 words"):
        _mt_native.mt19937_uint24(key[:600], pos, np.empty(4, np.int32))
    with pytest.raises(ValueError, match="position"):
        _mt_native.mt19937_uint24(key, np.array([625], np.int32), np.empty(4, np.int32))
    with pytest.raises(ValueError, match="int32"):
        _mt_native.mt19937_uint24(key, pos, np.empty(4, np.int64))
    stream = _m_rng.MTStream(torch.Generator().manual_seed(1))
    with pytest.raises(ValueError, match="fewer than the 9 draws"):
        stream.uint24(9, np.empty(8, np.int32))


@needs_compiler
def test_a_loop_that_differs_from_numpy_is_refused(monkeypatch, tmp_path):
    """A build whose output is not numpy's MT19937 (here: a wrong tempering constant) fails the
    load-time check, so the stream falls back to numpy."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(_mt_native, "_SOURCE", _mt_native._SOURCE.replace("0x9d2c5680u",
                                                                         "0x9d2c5780u"))
    with pytest.raises(ArithmeticError, match="differs from numpy"):
        _mt_native._load()
    monkeypatch.setattr(_mt_native, "_function", None)
    _, key, pos = numpy_state(1, 0)
    before = (key.copy(), pos.copy())
    assert _mt_native.mt19937_uint24(key, pos, np.empty(4, np.int32)) is None
    assert np.array_equal(key, before[0]) and np.array_equal(pos, before[1])  # untouched
    monkeypatch.setattr(_mt_native, "_function", None)  # rebuilt from the real source later


def test_no_compiler_falls_back_to_numpy(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", str(tmp_path))  # no compiler to be found
    monkeypatch.setattr(_mt_native, "_function", None)
    bitgen, key, pos = numpy_state(5, 10)
    assert _mt_native.mt19937_uint24(key, pos, np.empty(8, np.int32)) is None
    gen = torch.Generator().manual_seed(5)
    stream = _m_rng.MTStream(gen)
    draws = stream.uint24(700)
    stream.close()
    expected = np.random.MT19937(0)
    expected.state = {"bit_generator": "MT19937",
                      "state": {"key": np.asarray(
                          torch.Generator().manual_seed(5).get_state()[24:24 + 8 * 624]
                          .view(torch.int64).numpy(), dtype=np.uint32),
                          "pos": 624}}
    np.testing.assert_array_equal(draws.numpy(), expected.random_raw(700) & 0xFFFFFF)
    monkeypatch.setattr(_mt_native, "_function", None)


@needs_compiler
def test_a_damaged_compiled_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch, caplog):
    import logging
    import subprocess
    import sys

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    # built in another process: dlopen would hand this one its already loaded copy
    subprocess.run([sys.executable, "-c", "from optuna_merge3.merging import _mt_native; "
                    "_mt_native._build()"], check=True, timeout=120)
    (built,) = (tmp_path / "optuna_merge3").glob("mt19937_*.so")
    built.write_bytes(built.read_bytes()[:200])  # truncated, e.g. a disk that filled up
    with caplog.at_level(logging.WARNING, logger=_mt_native.__name__):
        lib = _mt_native._build()
    assert any("is unreadable" in r.getMessage() and "rebuilding it" in r.getMessage()
               for r in caplog.records)
    assert lib.mt19937_fill is not None
    assert built.stat().st_size > 1000  # rebuilt whole
