"""Fused (torch.compile) merge kernels and counter-based DARE / DELLA masks, against MergeKit.

Fused tests compile real inductor kernels (a C++ compiler is needed; they skip with that reason
where there is none) and check that the kernels really compiled, so a silent fall-back to the
eager path cannot pass for fusion. Counter masks are handed to MergeKit through the documented
hook (``counter_bernoulli`` / ``InMemoryMerger.mergekit_bernoulli``) and must give the same bits.
"""

from __future__ import annotations

import logging
import math
from unittest import mock

import pytest
import torch

pytest.importorskip("mergekit")

from test_methods_vs_mergekit import GTA, assert_matches, mergekit_tensor
from tiny_models import make_world, max_abs_diff, random_params

from optuna_merge3.merging import InMemoryMerger, MergeSpace, _fused
from optuna_merge3.merging._methods import merge_tensor

RANDOM = ["dare_ties", "dare_linear", "della", "della_linear"]
PARAMS = [{"weight": 0.7, "density": 0.35}, {"weight": -0.2, "density": 0.8},
          {"weight": 0.5, "density": 0.55}]
needs_compiler = pytest.mark.skipif(
    not _fused.fusion_available(torch.device("cpu")),
    reason="fused kernels need a C++ compiler for torch.compile (none on PATH)",
)


def ours(method, base, tensors, params, options, seed, **kwargs):
    gen = torch.Generator().manual_seed(seed)
    return merge_tensor(method, base, tensors, params, options, generator=gen,
                        tensor_name="w", cache={}, **kwargs)


def mergekit_counter(method, base, tensors, params, options, seed):
    """MergeKit's merge with our counter masks through the hook (keys in MergeKit's order)."""
    keys = iter([_fused.mask_key(seed, "w", j) for j, p in enumerate(params)
                 if p["density"] < 1])
    with mock.patch("torch.bernoulli", lambda p, *a, **k: _fused.counter_bernoulli(p, next(keys))):
        result = mergekit_tensor(method, base, tensors, params, options)
    assert next(keys, None) is None  # MergeKit drew exactly one mask per sparsified endpoint
    return result


@pytest.fixture
def kernels(monkeypatch):
    """The kernel variants ``run_flat`` asked for during the test."""
    keys: list = []
    real = _fused.get_kernel

    def spy(key, reference):
        keys.append(key)
        return real(key, reference)

    monkeypatch.setattr(_fused, "get_kernel", spy)
    return keys


def assert_compiled(keys):
    """Every variant used ran compiled and passed its check against the reference (a refused or
    failed kernel is stored as None and the eager path runs instead)."""
    assert keys
    for key in keys:
        assert _fused._kernels[key] is not None and key in _fused._verified, key


# ----------------------------------------------------------------------------- counter masks
def test_counter_masks_keep_rate_independence_and_determinism():
    n = 400_000
    probs = torch.full((n,), 0.3)
    a = _fused.counter_bernoulli(probs, _fused.mask_key(1, "w", 0))
    b = _fused.counter_bernoulli(probs, _fused.mask_key(1, "w", 1))
    assert torch.equal(a, _fused.counter_bernoulli(probs, _fused.mask_key(1, "w", 0)))
    sigma = math.sqrt(0.3 * 0.7 / n)
    assert abs(a.mean().item() - 0.3) < 5 * sigma
    assert abs((a * b).mean().item() - 0.09) < 5 * math.sqrt(0.09 * 0.91 / n)
    # neighbouring elements are independent too (a hash of the index, not a stride pattern)
    assert abs((a[1:] * a[:-1]).mean().item() - 0.09) < 5 * math.sqrt(0.09 * 0.91 / n)
    # per-element probabilities; p = 0 never keeps, p = 1 always keeps
    ramp = torch.linspace(0, 1, n)
    kept = _fused.counter_bernoulli(ramp, (5, 6))
    assert kept[0] == 0 and kept[-1] == 1
    assert abs(kept[: n // 2].mean().item() - 0.25) < 0.01
    assert abs(kept[n // 2 :].mean().item() - 0.75) < 0.01
    # 24-bit uniforms fill their range evenly (16 bins)
    u = _fused._uniform24(torch.arange(n, dtype=torch.int32),
                          _fused.key_tensor(_fused.mask_key(3, "x", 2)))
    counts = torch.bincount((u / 2**20).long(), minlength=16).double()
    chi2 = ((counts - n / 16) ** 2 / (n / 16)).sum().item()
    assert chi2 < 50  # 15 degrees of freedom: p < 1e-5 above 50
    assert _fused.mask_key(1, "w", 0) != _fused.mask_key(2, "w", 0) != _fused.mask_key(1, "v", 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", RANDOM)
def test_counter_masks_equal_mergekit_through_the_hook(method, dtype, endpoints):
    base, tensors = endpoints((37, 113), 3, seed=22, dtype=dtype)
    for rescale in (True, False):
        expected = mergekit_counter(method, base, tensors, PARAMS, {"rescale": rescale}, seed=9)
        got = ours(method, base, tensors, PARAMS, {"rescale": rescale}, 9, rng="counter")
        assert torch.equal(got, expected), (got.double() - expected.double()).abs().max()


def test_counter_masks_differ_from_mt19937_and_bad_rng_is_refused(endpoints):
    base, tensors = endpoints((20, 30), 3, seed=1)
    counter = ours("dare_ties", base, tensors, PARAMS, {}, 4, rng="counter")
    mt = ours("dare_ties", base, tensors, PARAMS, {}, 4)
    assert not torch.equal(counter, mt)
    with pytest.raises(ValueError, match="rng"):
        ours("dare_ties", base, tensors, PARAMS, {}, 4, rng="philox")


# ----------------------------------------------------------------------------- fused kernels
@needs_compiler
@pytest.mark.parametrize("method", GTA)
def test_fused_kernels_match_mergekit_bf16(method, endpoints, kernels):
    """Every task-vector method, one compiled loop per tensor, bf16 (MergeKit's roundings after
    every op), an odd size (vector tail), rescale on and off: bit-identical to MergeKit."""
    base, tensors = endpoints((37, 113), 3, seed=22, dtype=torch.bfloat16)
    # Weights summing to 0: MergeKit's no-consensus divisor becomes 1.
    zero_sum = [dict(p, weight=w) for p, w in zip(PARAMS, (0.5, -0.25, -0.25), strict=True)]
    normalized = {"rescale": True, "lambda": 0.8, "normalize": True}
    for params, options in ((PARAMS, {}), (PARAMS, normalized), (zero_sum, normalized)):
        torch.manual_seed(9)
        expected = mergekit_tensor(method, base, tensors, params, options)
        got = ours(method, base, tensors, params, options, 9, fused=True)
        assert torch.equal(got, expected), (got.double() - expected.double()).abs().max()
    assert_compiled(kernels)


@needs_compiler
@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_fused_mt19937_masks_over_several_draw_chunks_match_mergekit(method, endpoints, kernels,
                                                                     monkeypatch):
    """MergeKit's own draws (rng="mergekit") fed chunk by chunk to the compiled mask kernel:
    the element order of the MT19937 stream is kept across chunk boundaries."""
    from optuna_merge3.merging import _m_gta

    monkeypatch.setattr(_m_gta, "_STREAM_CHUNK", 1000)
    base, tensors = endpoints((41, 97), 3, seed=6, dtype=torch.bfloat16)
    torch.manual_seed(17)
    expected = mergekit_tensor(method, base, tensors, PARAMS, {})
    got = ours(method, base, tensors, PARAMS, {}, 17, fused=True)
    assert torch.equal(got, expected), (got.double() - expected.double()).abs().max()
    assert_compiled(kernels)


@needs_compiler
@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "breadcrumbs_ties"])
def test_fused_kernels_match_mergekit_fp32_and_count_consensus(method, endpoints, kernels):
    base, tensors = endpoints((48, 80), 3, seed=3)
    params = [dict(p, gamma=0.02) for p in PARAMS] if "breadcrumbs" in method else PARAMS
    for options in ({}, {"consensus_method": "count"} if method != "task_arithmetic" else {}):
        torch.manual_seed(0)
        expected = mergekit_tensor(method, base, tensors, params, options)
        got = ours(method, base, tensors, params, options, 0, fused=True)
        assert (got - expected).abs().max().item() <= 1e-6
    assert_compiled(kernels)


@needs_compiler
@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_fused_counter_masks_equal_mergekit_through_the_hook(method, endpoints, kernels):
    """Counter masks drawn inside the compiled loop (no mask in memory) and the L1 rescale's
    masked norm from a compiled kernel: the same bits as MergeKit given the same masks."""
    base, tensors = endpoints((41, 97), 3, seed=5, dtype=torch.bfloat16)
    expected = mergekit_counter(method, base, tensors, PARAMS, {}, seed=13)
    got = ours(method, base, tensors, PARAMS, {}, 13, rng="counter", fused=True)
    assert torch.equal(got, expected), (got.double() - expected.double()).abs().max()
    assert_compiled(kernels)


@needs_compiler
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_fused_slerp_equals_the_eager_chunks_and_mergekit(dtype, endpoints, kernels, monkeypatch):
    """slerp's ``coef_a * x + coef_b * y`` as one compiled loop: the same bits as the eager
    chunks (several of them here) and as MergeKit."""
    from optuna_merge3.merging import _m_interp

    base, tensors = endpoints((41, 97), 1, seed=8, dtype=dtype)
    for t in (0.0, 0.3, 1.0):
        expected = mergekit_tensor("slerp", base, tensors, [], {"t": t})
        assert torch.equal(merge_tensor("slerp", base, tensors, [], {"t": t}, fused=True),
                          expected)
    monkeypatch.setattr(_m_interp, "_SLERP_CHUNK_ELEMENTS", 1000)  # several eager chunks
    eager = merge_tensor("slerp", base, tensors, [], {"t": 0.6})
    assert torch.equal(merge_tensor("slerp", base, tensors, [], {"t": 0.6}, fused=True), eager)
    assert_compiled(kernels)


def test_a_kernel_that_disagrees_with_its_reference_is_not_used(endpoints, monkeypatch, caplog):
    """The first-use self-check: a wrong compiled kernel is refused (logged) and the exact
    uncompiled reference runs instead, chunk by chunk."""
    from optuna_merge3.merging import _m_gta

    def broken_compile(fn, name):
        def wrong(*args):
            out = fn(*args)
            out.view(-1)[0] += 1
            return out
        return wrong

    monkeypatch.setattr(_fused, "_kernels", {})
    monkeypatch.setattr(_fused, "_verified", set())
    monkeypatch.setattr(_fused, "_compile", broken_compile)
    monkeypatch.setattr(_fused, "fusion_available", lambda device: True)
    monkeypatch.setattr(_m_gta, "_CPU_CHUNK", 1000)
    base, tensors = endpoints((37, 113), 3, seed=2, dtype=torch.bfloat16)
    with caplog.at_level(logging.WARNING, logger="optuna_merge3.merging._fused"):
        for method in ("ties", "dare_ties"):
            assert_matches(method, base, tensors, PARAMS, {}, seed=3)  # eager
            torch.manual_seed(3)
            expected = mergekit_tensor(method, base, tensors, PARAMS, {})
            assert torch.equal(ours(method, base, tensors, PARAMS, {}, 3, fused=True), expected)
    assert "differs from its reference" in caplog.text
    assert _fused._kernels and all(k is None for k in _fused._kernels.values())


@needs_compiler
def test_fused_needs_the_row_sum_self_check(endpoints, kernels, monkeypatch):
    """The fused loop sums endpoints in fp32 row order, like the eager fast sum: where the
    self-check against torch.sum fails (here: forced), no kernel is used and the merge still
    equals MergeKit's, for fp32 and bf16."""
    from optuna_merge3.merging import _m_gta

    monkeypatch.setattr(_m_gta, "_fast_sum_ok", {})
    monkeypatch.setattr(_m_gta, "_self_check_sum", lambda dtype, n: False)
    for dtype in (torch.float32, torch.bfloat16):
        base, tensors = endpoints((37, 113), 3, seed=5, dtype=dtype)
        torch.manual_seed(4)
        expected = mergekit_tensor("ties", base, tensors, PARAMS, {})
        assert torch.equal(ours("ties", base, tensors, PARAMS, {}, 4, fused=True), expected)
    assert kernels == []


# ----------------------------------------------------------------------------- InMemoryMerger
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("fused_world"))


def _merger(world, method, search, **kwargs):
    base, endpoints = world
    space = MergeSpace.from_config({"method": method, "base": str(base), "search": search,
                                    "endpoints": {k: str(v) for k, v in endpoints.items()}})
    return space, InMemoryMerger(base, endpoints, space, **kwargs)



def test_merger_fused_default_follows_model_size_and_rng_is_checked(world, monkeypatch):
    _, small = _merger(world, "ties", {"weight": [0, 1]})
    assert small.fused is False  # a tiny model: compiling would cost more than it saves
    monkeypatch.setattr(InMemoryMerger, "FUSE_MIN_ELEMENTS", 1)
    _, large = _merger(world, "ties", {"weight": [0, 1]})
    assert large.fused is True and "fused=True" in repr(large)
    with pytest.raises(ValueError, match="rng must be"):
        _merger(world, "ties", {"weight": [0, 1]}, rng="numpy")


def test_merger_counter_masks_reproduce_in_mergekit_through_the_hook(world):
    """A DARE-TIES trial with counter masks (per-block densities), whole model: MergeKit's
    ``merge_state_dicts`` (one tensor per call) with ``mergekit_bernoulli`` gives our tensors."""
    from mergekit.merge_methods.api import merge_state_dicts
    from mergekit.merge_methods.base import BatchOptions
    from safetensors.torch import load_file

    base, endpoints = world
    space, merger = _merger(world, "dare_ties", {"weight": [0, 1], "density": [0.2, 0.9]},
                            rng="counter")
    params = random_params(space, seed=4)
    ours_sd = merger.merged_state_dict(params, seed=21)
    assert max_abs_diff(ours_sd, merger.merged_state_dict(params, seed=21)) == 0.0
    models = {"base": load_file(str(base / "model.safetensors"))}
    models.update({k: load_file(str(v / "model.safetensors")) for k, v in endpoints.items()})
    parameters = {"weight": {k: params[f"weight/{k}"] for k in endpoints},
                  "density": {k: params[f"density/{k}"] for k in endpoints}}
    with mock.patch("torch.bernoulli", merger.mergekit_bernoulli(params, seed=21)):
        theirs = merge_state_dicts(models, "dare_ties", parameters=parameters, base="base",
                                   batch_options=BatchOptions(max_groups=1))
    assert max_abs_diff(ours_sd, theirs) == 0.0


@needs_compiler
def test_merger_fused_apply_equals_eager(world, kernels):
    """``apply`` with fused kernels writes exactly the eager merge into the live model."""
    space, fused = _merger(world, "ties", {"weight": [0, 1], "density": [0.3, 0.9]}, fused=True)
    _, eager = _merger(world, "ties", {"weight": [0, 1], "density": [0.3, 0.9]}, fused=False)
    params = random_params(space, seed=8)
    model = fused.load_model()
    fused.apply(params, model, seed=1)
    expected = eager.merged_state_dict(params, seed=1)
    live = {k: v for k, v in model.state_dict().items() if k in expected}
    assert max_abs_diff(live, expected) == 0.0
    assert_compiled(kernels)
