"""Counter-based DARE / DELLA masks (``_masks``): rates, independence, invariance, MergeKit hook."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mergekit")

from mergekit.merge_methods import merge_tensors

from optuna_merge3.merging import _masks, counter_bernoulli, mask_key, merge_tensor


def test_keep_rate_follows_the_probability_per_element():
    n = 1 << 20
    mask = counter_bernoulli(torch.full((n,), 0.3), mask_key(1, "w", 0))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert abs(mask.mean().item() - 0.3) < 0.003  # ~6 standard deviations
    probs = torch.linspace(0, 1, n)  # DELLA: one probability per element
    mask = counter_bernoulli(probs, mask_key(1, "w", 0))
    assert mask[probs == 0].sum() == 0 and mask[probs == 1].all()
    for lo in (0.1, 0.5, 0.8):
        band = (probs >= lo) & (probs < lo + 0.1)
        assert abs(mask[band].mean().item() - (lo + 0.05)) < 0.01


def test_masks_differ_by_seed_tensor_and_endpoint_and_are_uncorrelated():
    probs = torch.full((1 << 18,), 0.5)
    keys = [mask_key(1, "a", 0), mask_key(1, "a", 1), mask_key(1, "b", 0), mask_key(2, "a", 0)]
    masks = [counter_bernoulli(probs, k) for k in keys]
    for i in range(len(masks)):
        for j in range(i + 1, len(masks)):
            agree = (masks[i] == masks[j]).float().mean().item()
            assert abs(agree - 0.5) < 0.01, (keys[i], keys[j])
    shifted = (masks[0][1:] == masks[0][:-1]).float().mean().item()  # neighbours
    assert abs(shifted - 0.5) < 0.01


def test_masks_do_not_depend_on_chunking_threads_or_dtype(monkeypatch):
    probs = torch.rand(30001, 11, generator=torch.Generator().manual_seed(0))
    key = mask_key(5, "layers.0.mlp", 2)
    reference = counter_bernoulli(probs, key)
    monkeypatch.setattr(_masks, "_CHUNK", {"cpu": 100_000})  # other chunk edges
    assert torch.equal(counter_bernoulli(probs, key), reference)
    monkeypatch.setattr(_masks, "_CHUNK", {})  # the accelerators' chunk
    assert torch.equal(counter_bernoulli(probs, key), reference)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert torch.equal(counter_bernoulli(probs, key), reference)
    finally:
        torch.set_num_threads(threads)
    half = probs.bfloat16()
    assert torch.equal(counter_bernoulli(half, key).float(),
                       counter_bernoulli(half.float(), key))


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_counter_merge_equals_mergekit_given_the_masks(method, dtype, endpoints, monkeypatch):
    """``rng="counter"`` is MergeKit's merge with our masks in place of its draws."""
    base, tensors = endpoints((33, 71), 3, seed=30, dtype=dtype)
    params = [{"weight": 0.6, "density": d} for d in (0.3, 1.0, 0.45)]
    gen = torch.Generator().manual_seed(8)
    got = merge_tensor(method, base, tensors, params, {}, generator=gen, rng="counter",
                       tensor_name="t")
    keys = iter([mask_key(8, "t", 0), mask_key(8, "t", 2)])  # density 1 draws nothing
    monkeypatch.setattr(torch, "bernoulli", lambda p, *a, **k: counter_bernoulli(p, next(keys)))
    parameters = {"weight": [0.6] * 3, "density": [0.3, 1.0, 0.45]}
    expected = merge_tensors([base, *tensors], method, parameters=parameters, base_index=0)
    assert torch.equal(got, expected)
