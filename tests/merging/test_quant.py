"""Writing merges into a bitsandbytes nf4 model (real ``Linear4bit`` on CPU)."""

from __future__ import annotations

from pathlib import Path

import bitsandbytes as bnb
import pytest
import torch
from tiny_models import TINY_ENDPOINTS, TINY_WORLD, make_world, random_params

from optuna_merge3.merging import InMemoryMerger, MergeSpace
from optuna_merge3.merging._quant import dequantized, load_causal_lm, model_targets


@pytest.fixture(scope="module")
def merger(tmp_path_factory) -> InMemoryMerger:
    base, endpoints = make_world(tmp_path_factory.mktemp("qworld"))
    space = MergeSpace("ties", list(endpoints), search={"weight": [0, 1], "density": [0.3, 1]},
                       blocks=2)
    return InMemoryMerger(base, endpoints, space)


def _requantized(tensor: torch.Tensor, like) -> torch.Tensor:
    packed, state = bnb.functional.quantize_4bit(
        tensor, blocksize=like.blocksize, quant_type="nf4",
        compress_statistics=like.compress_statistics, quant_storage=like.quant_storage)
    return bnb.functional.dequantize_4bit(packed, state)


def test_apply_requantizes_each_linear4bit(merger):
    model = merger.load_model(quantization="nf4")
    targets = model_targets(model)
    quantized = [n for n, t in targets.items() if t.quantized]
    assert len(quantized) == 7 * 3  # q, k, v, o, gate, up, down per layer; lm_head stays fp
    params = random_params(merger.space, 7)
    timings = merger.apply(params, model, seed=3)
    assert timings["n_quantized"] == len(quantized)
    merged = merger.merged_state_dict(params, seed=3)
    for name in merger.tensor_names:
        target = targets[name]
        if target.quantized:
            expected = _requantized(merged[name], target.module.weight)
            assert torch.equal(dequantized(target), expected), name
            assert not torch.equal(dequantized(target), merged[name])  # really 4-bit
        else:
            assert torch.equal(target.param, merged[name]), name
    # Another genotype, then the first again: bit-identical packed weights (no state leak).
    before = {n: dequantized(targets[n]).clone() for n in quantized}
    merger.apply(random_params(merger.space, 8), model, seed=3)
    assert any(not torch.equal(dequantized(targets[n]), before[n]) for n in quantized)
    merger.apply(params, model, seed=3)
    assert all(torch.equal(dequantized(targets[n]), before[n]) for n in quantized)


def test_logits_match_a_4bit_model_loaded_from_the_saved_merge(merger, tmp_path: Path):
    params = random_params(merger.space, 9)
    model = merger.load_model(quantization="nf4")
    merger.apply(params, model)
    merger.export(params, tmp_path / "merge")
    reloaded = load_causal_lm(tmp_path / "merge", device=torch.device("cpu"),
                              dtype=torch.float32, quantization="nf4")
    ids = torch.tensor([[1, 5, 9, 33, 70, 2]])
    with torch.no_grad():
        ours, theirs = model(ids).logits, reloaded(ids).logits
    assert torch.equal(ours, theirs)
    full = merger.load_model()
    merger.apply(params, full)
    with torch.no_grad():
        assert not torch.equal(full(ids).logits, ours)  # 4-bit differs from full precision


def test_tiny_world_tied_embeddings_in_4bit():
    endpoints = {n: TINY_WORLD / n for n in TINY_ENDPOINTS[:2]}
    space = MergeSpace("task_arithmetic", list(endpoints), search={"weight": [0, 1]})
    merger = InMemoryMerger(TINY_WORLD / "base", endpoints, space)
    model = merger.load_model(quantization="nf4")
    merger.write_endpoint("math_en", model)
    merged = merger.merged_state_dict(space.endpoint_params("math_en"))
    emb = model.get_input_embeddings().weight
    assert model.lm_head.weight.data_ptr() == emb.data_ptr()
    assert torch.allclose(emb, merged["model.embed_tokens.weight"], atol=1e-6)
