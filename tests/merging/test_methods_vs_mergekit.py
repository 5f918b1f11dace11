"""Every merge method and parameter form against MergeKit 0.1.5 itself (in process).

The oracle is ``mergekit.merge_methods.merge_tensors`` (the per-tensor entry point MergeKit's own
``merge_state_dicts`` and graph executor call) and ``merge_state_dicts`` for whole state dicts.
DARE / DELLA are compared bit for bit: MergeKit after ``torch.manual_seed(S)`` vs ours with a
``torch.Generator`` seeded ``S``, tensors visited in MergeKit's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest
import torch

pytest.importorskip("mergekit")

from mergekit.merge_methods import GeneralizedTaskArithmeticMerge, merge_state_dicts, merge_tensors
from mergekit.merge_methods.generalized_task_arithmetic import ConsensusMethod

from optuna_merge3.merging._methods import MERGE_METHODS, MethodSpec, merge_tensor

TOL = 1e-6
GTA = [
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
]
SHAPES = [(97,), (48, 80), (4, 6, 10)]


def _count_consensus_method(name: str) -> GeneralizedTaskArithmeticMerge:
    """MergeKit's GTA row for ``name`` with ConsensusMethod.count instead of sum."""
    from mergekit import merge_methods

    row = merge_methods.get(name)
    return GeneralizedTaskArithmeticMerge(
        consensus_method=ConsensusMethod.count,
        sparsification_method=row.sparsification_method,
        default_normalize=row.default_normalize,
        default_rescale=row.default_rescale,
        method_name=f"{name}_count",
        method_pretty_name=None,
        method_reference_url=None,
    )


def mergekit_tensor(
    method: str,
    base: torch.Tensor | None,
    tensors: Sequence[torch.Tensor],
    params: Sequence[Mapping[str, float]],
    options: Mapping[str, Any],
) -> torch.Tensor:
    """The same merge through MergeKit's ``merge_tensors`` (config-order inputs, base first)."""
    options = dict(options)
    mk_method: Any = method
    if options.pop("consensus_method", "sum") == "count":
        mk_method = _count_consensus_method(method)
    parameters = dict(options)
    for name, default in MERGE_METHODS[method].tensor_params.items():
        if any(name in p for p in params):
            parameters[name] = [p.get(name, default) for p in params]
    if base is None or method == "linear":
        return merge_tensors(list(tensors), mk_method, parameters=parameters)
    return merge_tensors([base, *tensors], mk_method, parameters=parameters, base_index=0)


def ours(method, base, tensors, params, options, seed=None, **kwargs):
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    return merge_tensor(method, base, tensors, params, options, generator=gen, **kwargs)


def assert_matches(method, base, tensors, params, options, seed=1234):
    stochastic = MERGE_METHODS[method].stochastic
    torch.manual_seed(seed)
    expected = mergekit_tensor(method, base, tensors, params, options)
    got = ours(method, base, tensors, params, options, seed=seed if stochastic else None)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    if stochastic:
        assert torch.equal(got, expected), (got - expected).abs().max()
    else:
        diff = (got.double() - expected.double()).abs().max().item()
        assert diff <= TOL, diff
    return got


# ----------------------------------------------------------------------------- task vectors
GTA_FORMS = [
    ("weights", [{"weight": 0.5}, {"weight": 0.3}, {"weight": 0.8}], {}),
    ("neg_weight", [{"weight": 1.0}, {"weight": -0.4}, {"weight": 0.6}], {}),
    (
        "densities",
        [{"weight": 0.5, "density": 0.5}, {"weight": 0.3, "density": 0.8}, {"weight": 0.8}],
        {},
    ),
    (
        "normalize_on_lambda",
        [{"weight": 0.4, "density": 0.3}, {"weight": 0.9, "density": 0.6}, {"weight": 0.2}],
        {"normalize": True, "lambda": 0.7},
    ),
    (
        "normalize_off_int8",
        [{"weight": 0.4, "density": 0.3}, {"weight": 0.9, "density": 0.6}, {"weight": 0.2}],
        {"normalize": False, "int8_mask": True},
    ),
    (
        "rescale_flipped",
        [{"weight": 0.6, "density": 0.4}, {"weight": 0.6, "density": 0.7}, {"weight": 0.3}],
        {"rescale": "flip"},
    ),
]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("form", GTA_FORMS, ids=lambda f: f[0])
@pytest.mark.parametrize("method", GTA)
def test_task_vector_methods_match_mergekit(method, form, shape, endpoints):
    _, params, options = form
    options = dict(options)
    if options.get("rescale") == "flip":
        options["rescale"] = not MERGE_METHODS[method].global_params["rescale"]
    base, tensors = endpoints(shape, 3, seed=len(shape))
    assert_matches(method, base, tensors, params, options)


@pytest.mark.parametrize("method", ["ties", "dare_ties", "breadcrumbs_ties", "della"])
@pytest.mark.parametrize("consensus", ["sum", "count"])
def test_consensus_methods_match_mergekit(method, consensus, endpoints):
    base, tensors = endpoints((40, 56), 4, seed=3)
    params = [{"weight": w, "density": 0.5} for w in (0.3, 0.7, 0.5, 1.1)]
    assert_matches(method, base, tensors, params, {"consensus_method": consensus})


@pytest.mark.parametrize("gamma", [0.0, 0.01, 0.2])
@pytest.mark.parametrize("method", ["breadcrumbs", "breadcrumbs_ties"])
def test_breadcrumbs_gamma_matches_mergekit(method, gamma, endpoints):
    base, tensors = endpoints((64, 30), 3, seed=5)
    params = [{"weight": 0.6, "density": d, "gamma": gamma} for d in (0.9, 0.5, 0.7)]
    assert_matches(method, base, tensors, params, {})


@pytest.mark.parametrize("epsilon", [0.05, 0.15, 0.29])
@pytest.mark.parametrize("method", ["della", "della_linear"])
def test_della_epsilon_matches_mergekit(method, epsilon, endpoints):
    base, tensors = endpoints((32, 50), 3, seed=6)
    params = [{"weight": 0.5, "density": d, "epsilon": epsilon} for d in (0.5, 0.6, 0.4)]
    assert_matches(method, base, tensors, params, {})


@pytest.mark.parametrize("method", GTA)
def test_task_vector_methods_bf16_match_mergekit(method, endpoints):
    # bf16 inputs: MergeKit computes in bf16 (ties in magnitude broken by its sort order).
    base, tensors = endpoints((48, 64), 3, seed=7, dtype=torch.bfloat16)
    params = [
        {"weight": 0.5, "density": 0.4},
        {"weight": 0.3, "density": 0.7},
        {"weight": 0.8, "density": 0.6},
    ]
    got = assert_matches(method, base, tensors, params, {})
    assert got.dtype == torch.bfloat16


# ----------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_linear_matches_mergekit(normalize, shape, endpoints):
    base, tensors = endpoints(shape, 3, seed=8)
    params = [{"weight": w} for w in (0.2, 0.5, 1.3)]
    assert_matches("linear", None, tensors, params, {"normalize": normalize})
    # The config's base model listed among the models: one more weighted input.
    assert_matches("linear", base, [base, *tensors], [{"weight": 0.4}, *params], {})


def test_linear_bf16_matches_mergekit(endpoints):
    _, tensors = endpoints((33, 17), 2, seed=9, dtype=torch.bfloat16)
    got = assert_matches("linear", None, tensors, [{"weight": 0.3}, {"weight": 0.9}], {})
    assert got.dtype == torch.bfloat16


def _slerp_pairs(shape, seed):
    gen = torch.Generator().manual_seed(seed)
    v0 = torch.randn(shape, generator=gen)
    noise = torch.randn(shape, generator=gen)
    return {
        "random": (v0, torch.randn(shape, generator=gen)),
        "finetuned": (v0, v0 + 0.05 * noise),
        "near_colinear": (v0, 1.5 * v0 + 1e-3 * noise),
        "antipodal": (v0, -v0),
        "zero": (v0, torch.zeros(shape)),
    }


@pytest.mark.parametrize("kind", ["random", "finetuned", "near_colinear", "antipodal", "zero"])
@pytest.mark.parametrize("t", [0.0, 0.25, 0.5, 0.9, 1.0])
@pytest.mark.parametrize("shape", [(130,), (40, 70)], ids=lambda s: "x".join(map(str, s)))
def test_slerp_matches_mergekit(kind, t, shape):
    v0, v1 = _slerp_pairs(shape, seed=10)[kind]
    assert_matches("slerp", v0, [v1], [], {"t": t})


def test_slerp_chunked_and_bf16_match_mergekit():
    # More than one of MergeKit's 1M-element chunks, and bf16 storage of the result.
    v0, v1 = _slerp_pairs((1100, 1000), seed=11)["finetuned"]
    assert_matches("slerp", v0, [v1], [], {"t": 0.35})
    got = assert_matches("slerp", v0.bfloat16(), [v1.bfloat16()], [], {"t": 0.6})
    assert got.dtype == torch.bfloat16


@pytest.mark.parametrize("with_base", [True, False])
@pytest.mark.parametrize(
    "flags",
    [
        {},
        {"nuslerp_flatten": False},
        {"nuslerp_flatten": False, "nuslerp_row_wise": True},
        {"nuslerp_row_wise": True},
    ],
    ids=["default", "columns", "rows", "rowwise_flat"],
)
@pytest.mark.parametrize("shape", [(90,), (24, 36)], ids=lambda s: "x".join(map(str, s)))
def test_nuslerp_matches_mergekit(with_base, flags, shape, endpoints):
    base, tensors = endpoints(shape, 2, seed=12)
    for weights in ((0.3, 0.7), (1.0, 1.0), (0.5, -0.5)):
        params = [{"weight": w} for w in weights]
        assert_matches("nuslerp", base if with_base else None, tensors, params, flags)


def test_nuslerp_colinear_and_bf16_match_mergekit(endpoints):
    base, tensors = endpoints((24, 36), 2, seed=13)
    colinear = [tensors[0], base + 2.0 * (tensors[0] - base)]
    assert_matches("nuslerp", base, colinear, [{"weight": 0.4}, {"weight": 0.6}], {})
    base, tensors = endpoints((24, 36), 2, seed=13, dtype=torch.bfloat16)
    assert_matches("nuslerp", base, tensors, [{"weight": 0.4}, {"weight": 0.6}], {})


@pytest.mark.parametrize("filter_wise", [False, True])
@pytest.mark.parametrize("n", [2, 3, 5])
@pytest.mark.parametrize("shape", [(77,), (30, 44)], ids=lambda s: "x".join(map(str, s)))
def test_model_stock_matches_mergekit(filter_wise, n, shape, endpoints):
    base, tensors = endpoints(shape, n, seed=14)
    assert_matches("model_stock", base, tensors, [], {"filter_wise": filter_wise})


def test_model_stock_bf16_matches_mergekit(endpoints):
    base, tensors = endpoints((30, 44), 3, seed=15, dtype=torch.bfloat16)
    assert_matches("model_stock", base, tensors, [], {})


# ----------------------------------------------------------------------------- whole state dicts
def _state_dicts(n_models: int, seed: int) -> list[dict[str, torch.Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    shapes = {"embed.weight": (50, 16), "layers.0.norm": (16,), "layers.0.q": (16, 16)}
    shapes.update({"layers.0.mlp": (40, 16), "lm_head.weight": (50, 16)})
    base = {k: torch.randn(s, generator=gen) for k, s in shapes.items()}
    models = [base]
    for _ in range(n_models):
        models.append({k: v + 0.05 * torch.randn(v.shape, generator=gen) for k, v in base.items()})
    return models


@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_random_masks_replay_mergekit_state_dict_order(method):
    """torch.manual_seed(S) + merge_state_dicts == one generator seeded S over tensors in the
    state dict's key order, models in config order (bit for bit)."""
    sds = _state_dicts(3, seed=16)
    densities = [0.4, 1.0, 0.7]  # density 1 draws nothing: the next endpoint's draw shifts.
    weights = [0.5, 0.8, 0.3]
    torch.manual_seed(77)
    expected = merge_state_dicts(
        {"base": sds[0], "a": sds[1], "b": sds[2], "c": sds[3]},
        method,
        base="base",
        parameters={"weight": weights, "density": densities},
    )
    gen = torch.Generator().manual_seed(77)
    params = [{"weight": w, "density": d} for w, d in zip(weights, densities, strict=True)]
    for name in sds[0]:
        got = merge_tensor(
            method, sds[0][name], [sd[name] for sd in sds[1:]], params, {}, generator=gen
        )
        assert torch.equal(got, expected[name]), name


# ----------------------------------------------------------------------------- seeds
@pytest.mark.parametrize("method", ["dare_ties", "dare_linear", "della", "della_linear"])
def test_seeded_generator_is_reproducible_and_leaves_global_rng(method, endpoints):
    base, tensors = endpoints((30, 30), 3, seed=20)
    params = [{"weight": 0.5, "density": 0.5}] * 3
    state = torch.get_rng_state()
    a = ours(method, base, tensors, params, {}, seed=5)
    b = ours(method, base, tensors, params, {}, seed=5)
    c = ours(method, base, tensors, params, {}, seed=6)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(state, torch.get_rng_state())


# ----------------------------------------------------------------------------- errors and spec
def test_registry_matches_mergekit_names_and_defaults():
    from mergekit import merge_methods

    for name, spec in MERGE_METHODS.items():
        assert isinstance(spec, MethodSpec)
        mk_params = {p.name: p for p in merge_methods.get(name).spec.parameters}
        assert set(mk_params) == set(spec.tensor_params) | set(spec.global_params), name
        for pname, default in {**spec.tensor_params, **spec.global_params}.items():
            expected = None if mk_params[pname].required else mk_params[pname].default
            assert default == expected, (name, pname)


def test_invalid_inputs_raise_clear_value_errors(endpoints):
    base, tensors = endpoints((8, 8), 3, seed=21)
    w = [{"weight": 1.0}] * 3
    with pytest.raises(ValueError, match="valid methods: .*dare_ties.*ties"):
        merge_tensor("tie", base, tensors, w, {})
    with pytest.raises(ValueError, match="missing required parameter 'weight'"):
        merge_tensor("ties", base, tensors, [{}, {}, {}], {}, tensor_name="q")
    with pytest.raises(ValueError, match="requires a base"):
        merge_tensor("task_arithmetic", None, tensors, w, {})
    with pytest.raises(ValueError, match="torch.Generator"):
        merge_tensor("dare_ties", base, tensors, [{"weight": 1.0, "density": 0.5}] * 3, {})
    with pytest.raises(ValueError, match="Epsilon"):
        merge_tensor(
            "della",
            base,
            tensors,
            [{"weight": 1.0, "density": 0.9}] * 3,
            {},
            generator=torch.Generator(),
        )
    with pytest.raises(ValueError, match="exactly 1"):
        merge_tensor("slerp", base, tensors, [], {"t": 0.5})
    with pytest.raises(ValueError, match="missing required option 't'"):
        merge_tensor("slerp", base, tensors[:1], [], {})
    with pytest.raises(ValueError, match="unknown option"):
        merge_tensor("linear", None, tensors, w, {"lambda": 2.0})
    with pytest.raises(ValueError, match="unknown parameter"):
        merge_tensor("linear", None, tensors, [{"weight": 1.0, "density": 0.5}] * 3, {})
    with pytest.raises(ValueError, match="consensus_method"):
        merge_tensor("ties", base, tensors, w, {"consensus_method": "max"})
    with pytest.raises(ValueError, match="shape mismatch"):
        merge_tensor("linear", None, [tensors[0], tensors[1][:4]], w[:2], {})


# ----------------------------------------------------------------------------- larger tensors
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("method", GTA)
def test_larger_tensors_match_mergekit(method, dtype, endpoints):
    """160 x 999 tensors (bf16: thousands of magnitudes tied at every threshold), rescale on and
    off, a negative weight: bit for bit MergeKit's."""
    base, tensors = endpoints((160, 999), 3, seed=22, dtype=dtype)
    for rescale in (True, False):
        params = [
            {"weight": 0.7, "density": 0.35},
            {"weight": -0.2, "density": 0.8},
            {"weight": 0.5, "density": 0.55},
        ]
        assert_matches(method, base, tensors, params, {"rescale": rescale}, seed=9)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs_ties"])
def test_fp32_without_ties_is_exact_without_a_sort(method, endpoints, monkeypatch):
    """fp32 task vectors have no tie at the k-th value: the threshold alone gives MergeKit's
    mask, and no full sort runs (the sort is the cost this avoids)."""
    base, tensors = endpoints((64, 257), 3, seed=24)
    params = [{"weight": 0.6, "density": d} for d in (0.3, 0.6, 0.45)]
    torch.manual_seed(0)
    expected = mergekit_tensor(method, base, tensors, params, {})

    def no_sort(*args, **kwargs):
        raise AssertionError("a full sort ran")

    monkeypatch.setattr(torch, "argsort", no_sort)
    monkeypatch.setattr(torch, "sort", no_sort)
    assert torch.equal(ours(method, base, tensors, params, {}), expected)


@pytest.mark.parametrize("method", ["ties", "breadcrumbs"])
def test_index_order_ties_keep_mergekits_magnitudes(method, endpoints):
    """``exact=False`` (the accelerator default) keeps ties at the threshold in index order:
    per endpoint the same number of kept entries with the same multiset of magnitudes as
    MergeKit's mask; the merge differs from MergeKit's only where an endpoint's magnitude
    equals its threshold, and there by at most that endpoint's |weight| x threshold x rescale."""
    from optuna_merge3.merging import _sparsify

    base, tensors = endpoints((96, 333), 3, seed=25, dtype=torch.bfloat16)
    tv = tensors[0] - base
    for density in (0.2, 0.5, 0.77):
        if method == "ties":
            exact = _sparsify.magnitude(tv, density, False, exact=True)
            loose = _sparsify.magnitude(tv, density, False, exact=False)
        else:
            exact = _sparsify.magnitude_outliers(tv, density, 0.05, False, exact=True)
            loose = _sparsify.magnitude_outliers(tv, density, 0.05, False, exact=False)
        assert torch.equal(exact.abs().flatten().sort().values, loose.abs().flatten().sort().values)
        differ = exact != loose
        assert differ.any()  # bf16: the threshold splits a tie group (else the test is moot)
        tied = exact.abs().flatten()[exact.flatten() != 0]
        edges = {tied.min().item(), tied.max().item()}
        assert set(torch.cat([exact[differ], loose[differ]]).abs().unique().tolist()) <= edges | {0}
