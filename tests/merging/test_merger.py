"""InMemoryMerger against MergeKit 0.1.5 (in process), on random and on the tiny world models."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("mergekit")

from tiny_models import (
    TINY_ENDPOINTS,
    TINY_WORLD,
    make_world,
    max_abs_diff,
    random_params,
    run_mergekit,
    save_random_llama,
)

from optuna_merge3.merging import InMemoryMerger, MergeSpace

TOL = 1e-6


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A 3-layer random Llama (untied lm_head) and three endpoints = base + task vectors."""
    return make_world(tmp_path_factory.mktemp("world"))


def build(method, base, endpoints, stream=False, merger_kwargs=None, **merge):
    cfg = {"method": method, "base": str(base) if base else None,
           "endpoints": {k: str(v) for k, v in endpoints.items()}, **merge}
    space = MergeSpace.from_config(cfg)
    kwargs = {"stream": stream, **(merger_kwargs or {})}
    return space, InMemoryMerger(base, endpoints, space, **kwargs)


CASES = [
    ("linear", {"search": {"weight": [0.1, 1]}, "blocks": 3}),
    ("task_arithmetic", {"search": {"weight": [0, 1], "lambda": [0.5, 2]},
                         "filters": ["self_attn", "mlp"]}),
    ("ties", {"search": {"weight": [0, 1.5], "density": [0.2, 1]}, "blocks": 2,
              "filters": ["q_proj", "self_attn"]}),
    ("dare_ties", {"search": {"weight": [0, 1.5], "density": [0.2, 0.9]}, "blocks": 2}),
    ("della", {"search": {"weight": [0, 1], "density": [0.4, 0.6], "epsilon": [0.05, 0.1]}}),
    ("breadcrumbs_ties", {"search": {"weight": [0, 1], "density": [0.5, 1], "gamma": [0, 0.05]}}),
    ("model_stock", {}),
    ("slerp", {"search": {"t": [0, 1]}, "blocks": 3}),
    ("nuslerp", {"search": {"weight": [0.1, 1]}, "filters": ["mlp"]}),
]


@pytest.mark.parametrize(("method", "merge"), CASES, ids=[c[0] for c in CASES])
def test_apply_equals_state_dict_equals_mergekit(world, tmp_path, monkeypatch, method, merge):
    """Resident inputs and the stream from the mmap write the same model;
    MergeKit's run_merge of the exported YAML gives it too (counter masks handed to MergeKit
    through ``mergekit_bernoulli``)."""
    base, endpoints = world
    if method in ("slerp", "nuslerp"):
        endpoints = dict(list(endpoints.items())[:2])
    space, merger = build(method, base, endpoints, **merge)
    params = random_params(space, seed=3)
    ours = merger.merged_state_dict(params, seed=11)
    for kwargs in ({}, {"stream": True}):
        _, other = build(method, base, endpoints, merger_kwargs=kwargs, **merge)
        model = other.load_model()
        other.apply(params, model, seed=11)
        live = {k: v for k, v in model.state_dict().items() if k in ours}
        assert max_abs_diff(live, ours) == 0.0, kwargs
    config = space.to_mergekit_config(params, str(base), {k: str(v) for k, v in endpoints.items()})
    with monkeypatch.context() as m:
        if space.spec.stochastic:
            m.setattr(torch, "bernoulli", merger.mergekit_bernoulli(params, seed=11))
        theirs = run_mergekit(config, tmp_path / "mk", seed=11)
    assert max_abs_diff(ours, theirs) <= TOL
    # Merging never modifies the inputs it keeps across trials.
    from safetensors.torch import load_file

    assert max_abs_diff({k: merger._resident[k]["base"] for k in ours},
                        load_file(str(base / "model.safetensors"))) == 0.0


@pytest.mark.parametrize("method", ["dare_ties", "della"])
def test_mergekit_rng_replays_run_merge_draws(world, tmp_path, method):
    """``rng="mergekit"``: MergeKit's own draws, seeded alike, bit for bit (stream mode)."""
    base, endpoints = world
    merge = dict(CASES)[method]
    space, merger = build(method, base, endpoints, stream=True,
                          merger_kwargs={"rng": "mergekit"}, **merge)
    params = random_params(space, seed=4)
    ours = merger.merged_state_dict(params, seed=12)
    config = space.to_mergekit_config(params, str(base), {k: str(v) for k, v in endpoints.items()})
    assert max_abs_diff(ours, run_mergekit(config, tmp_path / "mk", seed=12)) == 0.0
    _, counter = build(method, base, endpoints, **merge)
    assert max_abs_diff(ours, counter.merged_state_dict(params, seed=12)) > 1e-4


def test_mergekit_merge_state_dicts_in_process(world):
    """Global coefficients through MergeKit's in-memory API ``merge_state_dicts``."""
    from mergekit.merge_methods.api import merge_state_dicts
    from safetensors.torch import load_file

    base, endpoints = world
    space, merger = build("ties", base, endpoints, search={"weight": [0, 1], "density": [0.3, 1]},
                          fixed={"lambda": 0.8})
    params = random_params(space, seed=5)
    models = {"base": load_file(str(base / "model.safetensors"))}
    models.update({k: load_file(str(v / "model.safetensors")) for k, v in endpoints.items()})
    parameters = {"lambda": 0.8,
                  "weight": {k: params[f"weight/{k}"] for k in endpoints},
                  "density": {k: params[f"density/{k}"] for k in endpoints}}
    theirs = merge_state_dicts(models, "ties", parameters=parameters, base="base")
    assert max_abs_diff(merger.merged_state_dict(params), theirs) <= TOL


def test_tiny_world_endpoints_and_no_state_leak():
    endpoints = {n: TINY_WORLD / n for n in TINY_ENDPOINTS}
    space, merger = build("ties", TINY_WORLD / "base", endpoints,
                          search={"weight": [0, 1.5], "density": [0.1, 1]}, blocks=2)
    model = merger.load_model()
    ids = torch.tensor([[2, 5, 9, 11, 7]])
    logits_base = model(ids).logits.detach().clone()
    first, second = random_params(space, 1), random_params(space, 2)
    merger.apply(first, model)
    snap = {k: v.clone() for k, v in model.state_dict().items()}
    logits_first = model(ids).logits.detach().clone()
    assert not torch.allclose(logits_first, logits_base)
    merger.apply(second, model)
    assert max_abs_diff(model.state_dict(), snap) > 1e-4
    merger.apply(first, model)  # back to the first genotype: bit-identical weights and logits
    assert max_abs_diff(model.state_dict(), snap) == 0.0
    assert torch.equal(model(ids).logits, logits_first)
    # Tied embeddings: the lm_head follows the merged embedding.
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    # An endpoint's genotype reproduces it up to rounding; write_endpoint exactly.
    from safetensors.torch import load_file

    lang_it = load_file(str(TINY_WORLD / "lang_it" / "model.safetensors"))
    merger.apply(space.endpoint_params("lang_it"), model)
    live = {k: v for k, v in model.state_dict().items() if k in lang_it}
    assert max_abs_diff(live, lang_it) <= TOL
    merger.write_endpoint("lang_it", model)
    assert max_abs_diff({k: v for k, v in model.state_dict().items() if k in lang_it},
                        lang_it) == 0.0
    merger.write_base(model)
    assert torch.equal(model(ids).logits, logits_base)


def test_seeds_are_deterministic_and_stream_mode_agrees(world):
    base, endpoints = world
    merge = {"search": {"weight": [0, 1], "density": [0.3, 0.7]}}
    space, merger = build("dare_ties", base, endpoints, **merge)
    _, streamed = build("dare_ties", base, endpoints, stream=True, **merge)
    params = random_params(space, 4)
    a = merger.merged_state_dict(params, seed=1)
    assert max_abs_diff(a, merger.merged_state_dict(params, seed=1)) == 0.0
    assert max_abs_diff(a, merger.merged_state_dict(params, seed=2)) > 1e-4
    assert max_abs_diff(a, streamed.merged_state_dict(params, seed=1)) == 0.0
    model = streamed.load_model()
    streamed.apply(params, model, seed=1)
    assert max_abs_diff({k: v for k, v in model.state_dict().items() if k in a}, a) == 0.0


def test_timings_are_reported(world):
    base, endpoints = world
    space, merger = build("task_arithmetic", base, endpoints, search={"weight": [0, 1]})
    timings = merger.apply(space.uniform_params(), merger.load_model())
    assert set(timings) == {"merge_s", "write_s", "total_s", "n_tensors", "n_quantized"}
    assert timings["n_tensors"] == len(merger.tensor_names) and timings["n_quantized"] == 0


def _copy_with(src: Path, dst: Path, edit) -> Path:
    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    tensors = load_file(str(dst / "model.safetensors"))
    edit(tensors)
    save_file(tensors, str(dst / "model.safetensors"), metadata={"format": "pt"})
    return dst


def test_bad_inputs_give_clear_errors(world, tmp_path):
    base, endpoints = world
    ok = {"search": {"weight": [0, 1]}}
    vocab = save_random_llama(tmp_path / "vocab", 1, vocab_size=100)
    with pytest.raises(ValueError, match="vocab size mismatch: endpoint 'ep1'"):
        build("task_arithmetic", base, {"ep0": endpoints["ep0"], "ep1": vocab}, **ok)
    shape = save_random_llama(tmp_path / "shape", 1, intermediate_size=96)
    with pytest.raises(ValueError, match=r"shape mismatch: endpoint 'ep1' tensor 'model.layers"):
        build("task_arithmetic", base, {"ep0": endpoints["ep0"], "ep1": shape}, **ok)
    dropped = _copy_with(endpoints["ep1"], tmp_path / "dropped",
                         lambda t: t.pop("model.norm.weight"))
    with pytest.raises(ValueError, match=r"different tensor names.*missing \['model.norm.weight'\]"):
        build("task_arithmetic", base, {"ep0": endpoints["ep0"], "ep1": dropped}, **ok)
    space = MergeSpace("task_arithmetic", ["ep0", "ep1"], search={"weight": [0, 1]})
    two = {"ep0": endpoints["ep0"], "ep1": endpoints["ep1"]}
    with pytest.raises(ValueError, match="needs a base model; base is None"):
        InMemoryMerger(None, two, space)
    with pytest.raises(ValueError, match="do not match the merge space"):
        InMemoryMerger(base, {"ep1": endpoints["ep1"], "ep0": endpoints["ep0"]}, space)
    with pytest.raises(ValueError, match="checkpoint not found"):
        InMemoryMerger(base, {"ep0": endpoints["ep0"], "ep1": tmp_path / "nowhere"}, space)
    merger = InMemoryMerger(base, two, space)
    model = merger.load_model()
    with pytest.raises(ValueError, match=r"weight/ep0 = 3.0 is outside \[0.0, 1.0\]"):
        merger.apply({"weight/ep0": 3.0, "weight/ep1": 0.5}, model)
    with pytest.raises(ValueError, match=r"unknown \['weight/ep9'\]"):
        merger.apply({"weight/ep0": 0.3, "weight/ep1": 0.5, "weight/ep9": 0.1}, model)
    with pytest.raises(ValueError, match="is not one of"):
        merger.load_model(quantization="int3")
    with pytest.raises(ValueError, match="unknown endpoint"):
        merger.write_endpoint("nope", model)
    other = InMemoryMerger(base, two, space).load_model()
    other.model.norm = torch.nn.Identity()  # a model that lacks a checkpoint tensor
    with pytest.raises(ValueError, match="no parameter for checkpoint tensor"):
        merger.apply(space.uniform_params(), other)


def test_linear_without_base_uses_first_endpoint_config(world):
    _, endpoints = world
    space = MergeSpace("linear", list(endpoints), search={"weight": [0, 1]}, has_base=False)
    merger = InMemoryMerger(None, endpoints, space)
    assert merger.model_dir == endpoints["ep0"]
    assert json.loads((merger.model_dir / "config.json").read_text())["num_hidden_layers"] == 3
    model = merger.load_model()
    merger.apply(space.endpoint_params("ep2"), model)
    from safetensors.torch import load_file

    ep2 = load_file(str(endpoints["ep2"] / "model.safetensors"))
    assert max_abs_diff({k: v for k, v in model.state_dict().items() if k in ep2}, ep2) <= TOL
