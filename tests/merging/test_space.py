"""MergeSpace: gene names, bounds, per-tensor resolution (MergeKit rules), config errors."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest

pytest.importorskip("mergekit")

from mergekit.config import ConditionalParameter, MergeConfiguration, evaluate_setting

from optuna_merge3.merging import MergeSpace, gradient_value, layer_t

EPS = {"a": "/m/a", "b": "/m/b", "c": "/m/c"}


def space(method="ties", endpoints=("a", "b", "c"), **kw) -> MergeSpace:
    merge = {"method": method, "base": "/m/base", "endpoints": {e: EPS[e] for e in endpoints}}
    merge.update(kw)
    return MergeSpace.from_config(merge)


def test_gene_names_global_blocks_filters():
    s = space(search={"weight": [0, 1.5], "density": [0.1, 1]})
    assert s.param_names == [f"weight/{e}" for e in "abc"] + [f"density/{e}" for e in "abc"]
    s = space("task_arithmetic", search={"weight": [0, 1], "lambda": [0.5, 2]}, blocks=2)
    assert s.param_names == [f"weight/{e}/block{i}" for e in "abc" for i in (0, 1)] + [
        "lambda/block0", "lambda/block1"]
    s = space("slerp", ("a", "b"), search={"t": [0, 1]}, blocks=3)
    assert s.param_names == ["t/block0", "t/block1", "t/block2"]
    s = space("linear", ("a", "b"), search={"weight": [0, 1]}, filters=["self_attn", "mlp"])
    assert s.param_names == [f"weight/{e}/{f}" for e in "ab" for f in ("self_attn", "mlp", "rest")]
    s = space("linear", ("a", "b"), search={"weight": [0, 1]}, filters=["mlp"], blocks=2)
    assert s.param_names[:4] == ["weight/a/mlp/block0", "weight/a/mlp/block1",
                                 "weight/a/rest/block0", "weight/a/rest/block1"]


def test_split_limits_blocks_to_chosen_params_and_overrides_per_endpoint():
    s = space(search={"weight": [0, 1], "density": [0.2, 1], "weight/b": [0.5, 2]},
              fixed={"density/c": 0.7}, blocks=2, split=["weight"])
    d = s.distributions()
    assert list(d) == [f"weight/{e}/block{i}" for e in "abc" for i in (0, 1)] + [
        "density/a", "density/b"]
    assert (d["weight/b/block0"].low, d["weight/b/block0"].high) == (0.5, 2.0)
    assert all(isinstance(x, optuna.distributions.FloatDistribution) for x in d.values())
    per_ep, _ = s.resolve(s.uniform_params(), "model.layers.0.mlp.up_proj.weight", 2)
    assert per_ep[2]["density"] == 0.7


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_gradient_value_is_mergekit_and_np_interp(n):
    rng = np.random.default_rng(n)
    values = list(rng.uniform(-1, 2, size=n))
    for t in [0.0, 0.2, 1 / 3, 0.5, 2 / 3, 0.999, 1.0]:
        ours = gradient_value(values, t)
        assert ours == evaluate_setting("x", values, t, validate=float)
        assert ours == pytest.approx(np.interp(t, np.linspace(0, 1, n), values), abs=1e-12)


def test_layer_t_follows_mergekit_planner():
    assert layer_t("model.embed_tokens.weight", 4) == 0.0
    assert layer_t("model.norm.weight", 4) == 0.0
    assert layer_t("lm_head.weight", 4) == 0.0
    assert layer_t("model.layers.0.mlp.up_proj.weight", 4) == 0.0
    assert layer_t("model.layers.2.mlp.up_proj.weight", 4) == 2 / 3
    assert layer_t("model.layers.3.self_attn.q_proj.weight", 4) == 1.0
    assert layer_t("model.layers.0.self_attn.q_proj.weight", 1) == 1.0  # one layer: t = 1


def test_resolve_filters_first_match_wins_and_blocks_interpolate():
    s = space("task_arithmetic", search={"weight": [0, 2]},
              filters=["q_proj", "self_attn"], blocks=2)
    params = {n: 0.0 for n in s.param_names}
    params.update({"weight/a/q_proj/block0": 0.2, "weight/a/q_proj/block1": 1.0,
                   "weight/a/self_attn/block0": 0.4, "weight/a/self_attn/block1": 0.8,
                   "weight/a/rest/block0": 1.5, "weight/a/rest/block1": 0.1})
    s.validate(params)

    def w(name):
        return s.resolve(params, name, 3)[0][0]["weight"]

    assert w("model.layers.1.self_attn.q_proj.weight") == pytest.approx(0.6)
    assert w("model.layers.2.self_attn.k_proj.weight") == 0.8
    assert w("model.layers.0.mlp.up_proj.weight") == 1.5
    assert w("model.embed_tokens.weight") == 1.5  # outside layers: t = 0, first value
    assert w("model.norm.weight") == 1.5
    # Same values through MergeKit's own evaluate_setting on the exported setting.
    setting = s.to_mergekit_config(params, "/m/base", EPS)["models"][0]["parameters"]["weight"]
    conds = [ConditionalParameter(**c) for c in setting]
    for name in ["model.layers.1.self_attn.q_proj.weight", "model.layers.2.self_attn.k_proj.weight",
                 "model.layers.1.mlp.down_proj.weight", "model.embed_tokens.weight"]:
        t = layer_t(name, 3)
        assert w(name) == evaluate_setting(name, conds, t, validate=float)


def test_resolve_options_and_defaults():
    s = space("dare_ties", search={"weight": [0, 1]}, fixed={"lambda": 1.3, "rescale": False})
    per_ep, options = s.resolve(s.uniform_params(), "model.layers.0.mlp.up_proj.weight", 2)
    assert per_ep == [{"weight": pytest.approx(1 / 3), "density": 1.0}] * 3
    assert options == {"int8_mask": False, "normalize": False, "rescale": False, "lambda": 1.3}


def test_suggest_with_a_real_trial_and_validate():
    s = space(search={"weight": [0, 1.5], "density": [0.1, 1]}, blocks=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask(s.distributions())
    params = s.suggest(trial)
    assert list(params) == s.param_names
    assert s.validate(params) == params
    assert trial.params == params


def test_validate_errors():
    s = space(search={"weight": [0, 1.5]})
    good = s.uniform_params()
    with pytest.raises(ValueError, match=r"missing \['weight/a'\]"):
        s.validate({k: v for k, v in good.items() if k != "weight/a"})
    with pytest.raises(ValueError, match=r"unknown \['weight/zz'\]"):
        s.validate({**good, "weight/zz": 0.1})
    with pytest.raises(ValueError, match=r"weight/b = 1.6 is outside \[0.0, 1.5\]"):
        s.validate({**good, "weight/b": 1.6})
    with pytest.raises(ValueError, match="must be a number"):
        s.validate({**good, "weight/b": "x"})
    with pytest.raises(ValueError, match="outside"):
        s.validate({**good, "weight/b": float("nan")})


def test_uniform_and_endpoint_params():
    s = space(search={"weight": [0, 1.5], "density": [0.1, 1], "lambda": [0.5, 2]})
    u = s.uniform_params()
    assert u["weight/a"] == pytest.approx(1 / 3) and u["density/b"] == 1.0 and u["lambda"] == 1.0
    e = s.endpoint_params("b")
    assert (e["weight/a"], e["weight/b"], e["weight/c"], e["density/b"], e["lambda"]) == (
        0, 1, 0, 1, 1)
    s.validate(e)
    t = space("slerp", ("a", "b"), search={"t": [0, 1]}, blocks=2)
    assert t.endpoint_params("a") == {"t/block0": 0.0, "t/block1": 0.0}
    assert t.endpoint_params("b") == {"t/block0": 1.0, "t/block1": 1.0}
    assert t.uniform_params() == {"t/block0": 0.5, "t/block1": 0.5}
    # Not representable: weight cannot be 0, density cannot reach 1, model_stock has no genes.
    assert space(search={"weight": [0.2, 1]}).endpoint_params("a") is None
    assert space(search={"weight": [0, 1], "density": [0.1, 0.9]}).endpoint_params("a") is None
    assert space("model_stock").endpoint_params("a") is None
    assert space(fixed={"weight": 1.0}).endpoint_params("a") is None
    with pytest.raises(ValueError, match="unknown endpoint 'zz'"):
        s.endpoint_params("zz")


def test_mergekit_config_is_valid_mergekit_yaml():
    s = space("ties", search={"weight": [0, 1], "density": [0.2, 1]}, blocks=3,
              filters=["mlp"], fixed={"int8_mask": True})
    cfg = s.to_mergekit_config(s.uniform_params(), "/m/base", EPS, dtype="bfloat16")
    parsed = MergeConfiguration.model_validate(cfg)
    assert parsed.merge_method == "ties" and parsed.base_model.model.path == "/m/base"
    assert cfg["parameters"]["int8_mask"] is True and cfg["dtype"] == "bfloat16"
    assert cfg["models"][1]["parameters"]["weight"][0]["filter"] == "mlp"
    # slerp: the first endpoint is MergeKit's base_model (t = 0); linear: no base_model.
    sl = space("slerp", ("a", "b"), search={"t": [0, 1]})
    assert sl.to_mergekit_config({"t": 0.3}, "/m/base", EPS)["base_model"] == "/m/a"
    li = space("linear", ("a", "b"), search={"weight": [0, 1]})
    assert "base_model" not in li.to_mergekit_config(li.uniform_params(), "/m/base", EPS)
    with pytest.raises(ValueError, match="no path for endpoint"):
        s.to_mergekit_config(s.uniform_params(), "/m/base", {"a": "/m/a"})


def test_signature_is_json_and_tracks_the_space():
    a = space(search={"weight": [0, 1.5]})
    b = space(search={"weight": [0, 1.0]})
    assert json.loads(json.dumps(a.signature())) == a.signature()
    assert a.signature() == space(search={"weight": [0, 1.5]}).signature()
    assert a.signature() != b.signature()
    assert a.signature() != space(search={"weight": [0, 1.5]}, blocks=2).signature()


@pytest.mark.parametrize(
    ("merge", "message"),
    [
        ({"method": "nope"}, r"unknown method 'nope'; valid: \[.*'ties'"),
        ({"colour": 1}, r"merge: unknown key\(s\) \['colour'\]"),
        ({"search": {"weight": [0, 1], "wieght": [0, 1]}}, r"'wieght' is not a parameter of ties"),
        ({"search": {"weight": [1, 0]}}, "need finite low <= high"),
        ({"search": {"weight": [0]}}, r"expected \[low, high\]"),
        ({"search": {"weight": [0, 1], "normalize": [0, 1]}}, "not numeric; fix it instead"),
        ({"fixed": {"weight": 1, "normalize": 1}}, "normalize: expected true/false"),
        ({"fixed": {"weight": True}}, "weight: expected a number"),
        ({"search": {"density": [0, 1]}}, "'weight' is required by ties"),
        ({"search": {"weight": [0, 1], "weight/zz": [0, 1]}}, "unknown endpoint 'zz'"),
        ({"search": {"weight": [0, 1], "lambda/a": [0, 1]}}, "'lambda' is global"),
        ({"search": {"weight": [0, 1]}, "fixed": {"weight": 1}}, "also listed under merge.search"),
        ({"search": {"weight": [0, 1]}, "blocks": 0}, "merge.blocks: expected an integer >= 1"),
        ({"search": {"weight": [0, 1]}, "filters": "mlp"}, "merge.filters: expected a list"),
        ({"search": {"weight": [0, 1]}, "filters": ["rest"]}, "not 'rest'"),
        ({"search": {"weight": [0, 1]}, "base": None}, "method 'ties' needs a base model"),
        ({"method": "slerp", "search": {"t": [0, 1]}}, "exactly two endpoints"),
        ({"search": {"weight": [0, 1]}, "endpoints": {}}, "merge.endpoints"),
    ],
)
def test_config_errors_name_the_key(merge, message):
    full = {"method": "ties", "base": "/m/base", "endpoints": EPS}
    full.update(merge)
    with pytest.raises(ValueError, match=message):
        MergeSpace.from_config(full)
