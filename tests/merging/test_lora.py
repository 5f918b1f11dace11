"""PEFT LoRA adapters as endpoints equal the dense endpoints ``merge_and_unload`` makes."""

from __future__ import annotations

import json
from pathlib import Path

import peft
import pytest
import torch
from tiny_models import max_abs_diff, random_params, save_random_llama

from optuna_merge3.merging import InMemoryMerger, MergeSpace


def _adapter(base: Path, out: Path, seed: int, **config) -> tuple[Path, dict]:
    """A LoRA adapter with random (non-zero) A and B, and its dense merge_and_unload weights."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype=torch.float32)
    torch.manual_seed(seed)  # peft initialises A / B from the global RNG; tests only
    lora = peft.get_peft_model(model, peft.LoraConfig(init_lora_weights=False, **config))
    lora.save_pretrained(str(out / "adapter"))
    dense = lora.merge_and_unload()
    dense.save_pretrained(str(out / "dense"))
    return out / "adapter", {k: v.detach().clone() for k, v in dense.state_dict().items()}


@pytest.fixture(scope="module")
def lora_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("lora")
    base = save_random_llama(root / "base", 0)
    plain, plain_sd = _adapter(base, root / "plain", 1, r=4, lora_alpha=8,
                               target_modules=["q_proj", "v_proj", "down_proj"])
    fancy, fancy_sd = _adapter(base, root / "fancy", 2, r=4, lora_alpha=16, use_rslora=True,
                               target_modules=["k_proj", "up_proj", "embed_tokens"],
                               rank_pattern={"up_proj": 2}, alpha_pattern={"k_proj": 3})
    return base, {"plain": (plain, plain_sd), "fancy": (fancy, fancy_sd)}, root


@pytest.mark.parametrize("stream", [False, True])
def test_lora_endpoint_equals_merge_and_unload(lora_world, stream):
    base, adapters, _ = lora_world
    endpoints = {name: path for name, (path, _) in adapters.items()}
    space = MergeSpace("task_arithmetic", list(endpoints), search={"weight": [0, 1]})
    merger = InMemoryMerger(base, endpoints, space, stream=stream)
    model = merger.load_model()
    for name, (_, dense) in adapters.items():
        merger.write_endpoint(name, model)
        live = {k: v for k, v in model.state_dict().items() if k in merger.tensor_names}
        assert max_abs_diff(live, {k: dense[k] for k in live}) == 0.0
    assert "model.embed_tokens.weight" in merger._sources["fancy"].adapted()


def test_merge_with_lora_endpoints_equals_merge_of_dense_endpoints(lora_world):
    base, adapters, root = lora_world
    lora_eps = {name: path for name, (path, _) in adapters.items()}
    dense_eps = {name: root / name / "dense" for name in adapters}
    merge = {"search": {"weight": [0, 1], "density": [0.3, 1]}, "blocks": 2}
    s1 = MergeSpace("ties", list(lora_eps), **merge)
    s2 = MergeSpace("ties", list(dense_eps), **merge)
    params = random_params(s1, 3)
    ours = InMemoryMerger(base, lora_eps, s1).merged_state_dict(params)
    dense = InMemoryMerger(base, dense_eps, s2).merged_state_dict(params)
    assert max_abs_diff(ours, dense) == 0.0


def test_lora_errors(lora_world, tmp_path):
    base, adapters, _ = lora_world
    plain = adapters["plain"][0]
    space = MergeSpace("linear", ["a", "b"], search={"weight": [0, 1]}, has_base=False)
    with pytest.raises(ValueError, match="LoRA adapter, which needs a base model"):
        InMemoryMerger(None, {"a": plain, "b": plain}, space)
    dora = tmp_path / "dora"
    dora.mkdir()
    cfg = json.loads((plain / "adapter_config.json").read_text())
    (dora / "adapter_config.json").write_text(json.dumps({**cfg, "use_dora": True}))
    (dora / "adapter_model.safetensors").write_bytes(
        (plain / "adapter_model.safetensors").read_bytes())
    space = MergeSpace("task_arithmetic", ["a", "b"], search={"weight": [0, 1]})
    with pytest.raises(ValueError, match="DoRA adapters are not supported"):
        InMemoryMerger(base, {"a": plain, "b": dora}, space)
    other = save_random_llama(tmp_path / "other", 3, intermediate_size=96)
    with pytest.raises(ValueError, match=r"delta of .*down_proj has shape"):
        InMemoryMerger(other, {"a": plain, "b": plain}, space)
