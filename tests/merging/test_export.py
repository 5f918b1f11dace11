"""Export: save_pretrained + tokenizer + a mergekit.yaml that MergeKit turns into the same model."""

from __future__ import annotations

import pytest
import torch
import yaml

pytest.importorskip("mergekit")

from tiny_models import TINY_ENDPOINTS, TINY_WORLD, max_abs_diff, random_params, run_mergekit

from optuna_merge3.merging import InMemoryMerger, MergeSpace


@pytest.mark.parametrize(
    ("method", "merge", "rng"),
    [
        ("ties", {"search": {"weight": [0, 1.5], "density": [0.2, 1]}, "blocks": 2,
                  "filters": ["self_attn"]}, "counter"),
        ("dare_linear", {"search": {"weight": [0, 1], "density": [0.3, 0.9]}}, "mergekit"),
        ("dare_linear", {"search": {"weight": [0, 1], "density": [0.3, 0.9]}}, "counter"),
    ],
)
def test_export_roundtrip_through_mergekit(tmp_path, monkeypatch, method, merge, rng):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    endpoints = {n: TINY_WORLD / n for n in TINY_ENDPOINTS}
    space = MergeSpace(method, list(endpoints), **merge)
    merger = InMemoryMerger(TINY_WORLD / "base", endpoints, space, rng=rng)
    params = random_params(space, 21)
    out = merger.export(params, tmp_path / "merge", seed=5)
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "mergekit.yaml", "tokenizer.json"} <= names
    ours = merger.merged_state_dict(params, seed=5)
    saved = load_file(str(out / "model.safetensors"))
    assert max_abs_diff({k: saved[k] for k in ours}, ours) == 0.0
    reloaded = AutoModelForCausalLM.from_pretrained(str(out), dtype=torch.float32)
    assert reloaded.config.tie_word_embeddings
    tok = AutoTokenizer.from_pretrained(str(out))
    assert tok.get_vocab() == merger.load_tokenizer().get_vocab()
    # The YAML (absolute paths, seed and rng in the header) reproduces the tensors in MergeKit:
    # alone with MergeKit's draws, with the mergekit_bernoulli hook for counter masks.
    text = (out / "mergekit.yaml").read_text()
    stochastic = method != "ties"
    assert f"seed=5; rng={rng if stochastic else 'none'};" in text.splitlines()[0]
    if stochastic and rng == "counter":
        monkeypatch.setattr(torch, "bernoulli", merger.mergekit_bernoulli(params, seed=5))
    theirs = run_mergekit(yaml.safe_load(text), tmp_path / "mk", seed=5)
    assert max_abs_diff(ours, theirs) <= 1e-6


def test_export_without_tokenizer_still_writes_the_model(tmp_path):
    from tiny_models import make_world

    base, endpoints = make_world(tmp_path / "w", n_endpoints=2)
    space = MergeSpace("task_arithmetic", list(endpoints), search={"weight": [0, 1]})
    merger = InMemoryMerger(base, endpoints, space)
    out = merger.export(space.uniform_params(), tmp_path / "merge")
    assert (out / "model.safetensors").is_file() and (out / "mergekit.yaml").is_file()
    assert yaml.safe_load((out / "mergekit.yaml").read_text())["merge_method"] == \
        "task_arithmetic"
