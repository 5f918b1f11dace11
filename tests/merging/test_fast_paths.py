"""The speed paths of the merge math are bit-identical to the plain ones and to MergeKit.

* ``out=``: the merge written into a given tensor (``InMemoryMerger.apply`` passes the live
  parameter) equals the merge into a fresh tensor, bit for bit.
* bf16 / fp16 endpoint sums through exact fp32 copies (``_m_gta._rows_sum``) equal
  ``torch.sum(dim=0)`` bit for bit (signed zeros included), checked on the merge results with
  and without the fast path, and against MergeKit's ``run_merge`` on a bf16 model.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("mergekit")

from tiny_models import make_world, random_params, run_mergekit

from optuna_merge3.merging import InMemoryMerger, MergeSpace, _m_gta
from optuna_merge3.merging._methods import merge_tensor

GTA = ["task_arithmetic", "ties", "dare_ties", "dare_linear", "breadcrumbs_ties", "della",
       "della_linear"]
BITS = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32}


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.contiguous().view(BITS[a.dtype]), b.contiguous().view(BITS[b.dtype]))


def adversarial(shape, n, dtype, seed):
    """Endpoints whose task vectors hold exact zeros, sign cancellations and mixed exponents."""
    gen = torch.Generator().manual_seed(seed)
    base = torch.randn(shape, generator=gen).to(dtype)
    tensors = []
    for j in range(n):
        tv = 0.05 * torch.randn(shape, generator=gen)
        tv *= torch.exp2(torch.randint(-6, 6, shape, generator=gen).float())
        flat = tv.view(-1)
        flat[j::7] = 0.0  # equal to the base there
        if j == 1:
            flat[3::11] = -tensors[0].float().sub(base.float()).view(-1)[3::11]
        tensors.append((base.float() + tv).to(dtype))
    return base, tensors


def merge(method, base, tensors, params, options, seed, out=None):
    gen = torch.Generator().manual_seed(seed)
    return merge_tensor(method, base, tensors, params, options, generator=gen, cache={},
                        out=out)


def params_for(method, n):
    params = [{"weight": w} for w in (0.7, -0.3, 0.45, 1.1)[:n]]
    if method != "task_arithmetic":
        for p, d in zip(params, (0.35, 0.8, 0.55, 0.6), strict=False):
            p["density"] = d
    return params


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_fp32_row_sum_self_check_passes(dtype, n):
    assert _m_gta._self_check_sum(dtype, n)
    assert _m_gta._fast_sum(dtype, n, torch.device("cpu"))
    assert not _m_gta._fast_sum(torch.float32, n, torch.device("cpu"))
    assert not _m_gta._fast_sum(dtype, _m_gta._MAX_FAST_ROWS + 1, torch.device("cpu"))


@pytest.mark.parametrize("consensus", ["sum", "count"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("method", GTA)
def test_fast_sums_equal_torch_sum_bit_for_bit(method, dtype, consensus, monkeypatch):
    """Several chunks (the last one partial): fast path == torch.sum path, signed zeros too."""
    monkeypatch.setattr(_m_gta, "_CPU_CHUNK", 1000)
    for n in (2, 3, 4):
        base, tensors = adversarial((23, 101), n, dtype, seed=40 + n)
        params = params_for(method, n)
        options = {"normalize": True, "lambda": 0.9} if method != "della" else {}
        if method in ("ties", "dare_ties", "breadcrumbs_ties", "della"):
            options["consensus_method"] = consensus
        elif consensus == "count":
            continue
        fast = merge(method, base, tensors, params, options, seed=5)
        with monkeypatch.context() as m:
            m.setattr(_m_gta, "_MAX_FAST_ROWS", 0)
            plain = merge(method, base, tensors, params, options, seed=5)
        assert same_bits(fast, plain), (method, n)


ALL = [
    ("linear", None, [{"weight": 0.3}, {"weight": 0.9}], {}),
    ("slerp", "base", [], {"t": 0.35}),
    ("nuslerp", "base", [{"weight": 0.4}, {"weight": 0.6}], {}),
    ("model_stock", "base", [], {}),
] + [(m, "base", None, {}) for m in GTA]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize(("method", "with_base", "params", "options"), ALL,
                         ids=[c[0] for c in ALL])
def test_out_receives_the_same_bits(method, with_base, params, options, dtype, monkeypatch):
    monkeypatch.setattr(_m_gta, "_CPU_CHUNK", 1000)
    base, tensors = adversarial((37, 61), 3, dtype, seed=8)
    if method in ("slerp",):
        tensors = tensors[:1]
    elif method in ("linear", "nuslerp"):
        tensors = tensors[:2]
    if params is None:
        params = params_for(method, len(tensors))
    base_arg = base if with_base else None
    fresh = merge(method, base_arg, tensors, params, options, seed=3)
    out = torch.full_like(base, float("nan"))
    got = merge(method, base_arg, tensors, params, options, seed=3, out=out)
    assert got.data_ptr() == out.data_ptr()
    assert same_bits(out, fresh)
    with pytest.raises(ValueError, match="out must be"):
        merge(method, base_arg, tensors, params, options, seed=3, out=out.t())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return make_world(tmp_path_factory.mktemp("world_bf16"))


@pytest.mark.parametrize("method", ["task_arithmetic", "ties", "dare_ties", "della", "slerp"])
def test_bf16_apply_in_place_equals_state_dict_and_mergekit(world, tmp_path, method):
    """bf16 merge (fast sums, written into the live parameters) == merged_state_dict ==
    MergeKit ``run_merge`` with ``dtype: bfloat16``, bit for bit."""
    base, endpoints = world
    search = {"t": [0, 1]} if method == "slerp" else {"weight": [0, 1], "density": [0.3, 0.7]}
    if method == "task_arithmetic":
        search = {"weight": [-0.5, 1]}
    if method == "slerp":
        endpoints = dict(list(endpoints.items())[:2])
    cfg = {"method": method, "base": None if method == "slerp" else str(base),
           "endpoints": {k: str(v) for k, v in endpoints.items()}, "search": search}
    space = MergeSpace.from_config(cfg)
    merger = InMemoryMerger(cfg["base"], endpoints, space, dtype=torch.bfloat16)
    params = random_params(space, seed=4)
    ours = merger.merged_state_dict(params, seed=9)
    model = merger.load_model()
    merger.apply(params, model, seed=9)
    live = model.state_dict()
    assert all(same_bits(live[k], v) for k, v in ours.items())
    config = space.to_mergekit_config(params, cfg["base"],
                                      {k: str(v) for k, v in endpoints.items()}, "bfloat16")
    theirs = run_mergekit(config, tmp_path / "mk", seed=9)
    assert all(same_bits(ours[k], theirs[k].to(torch.bfloat16)) for k in ours)
