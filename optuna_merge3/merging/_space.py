"""``MergeSpace``: the genotype of a merge, its Optuna distributions and its MergeKit YAML.

A genotype is a flat ``dict[str, float]`` with stable, readable names:

* ``weight/<endpoint>``, ``density/<endpoint>``, ``epsilon/<endpoint>`` ... per endpoint;
* ``t``, ``lambda`` ... global (method-wide) coefficients;
* ``.../block<i>`` when a coefficient is a gradient of ``blocks`` values across layers;
* ``.../<filter>`` (and ``.../rest``) when a coefficient has one value per tensor filter.

Per-tensor resolution follows MergeKit 0.1.5 (``mergekit/config.py:evaluate_setting`` and
``mergekit/plan.py``): a gradient ``[v_0 .. v_{n-1}]`` is read at ``t = layer / (layers - 1)``
(``t = 1`` for a one-layer model) by piecewise-linear interpolation (``np.interp`` on an even
grid, computed with MergeKit's own formula so the values are bit-identical); tensors outside the
decoder layers (embeddings, final norm, lm_head) use ``t = 0``, i.e. the first value. Filters are
substrings of the tensor name, the first matching filter wins, ``rest`` catches the others.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from optuna_merge3.merging._gradient import gradient_value, layer_t

__all__ = ["MergeSpace"]

_CONFIG_KEYS = ("method", "base", "endpoints", "search", "fixed", "blocks", "filters", "split")
# [merge] keys of the memory plan (optuna_merge3/plan.py): accepted here and ignored.
_PLAN_KEYS = ("memory", "inputs", "device_memory_gb", "host_memory_gb")


def _methods() -> Mapping[str, Any]:
    from optuna_merge3.merging._methods import MERGE_METHODS

    return MERGE_METHODS


def _is_float_param(default: Any) -> bool:
    return default is None or (isinstance(default, (int, float)) and not isinstance(default, bool))


class MergeSpace:
    """Which merge coefficients a study searches, and how a genotype becomes per-tensor values.

    Args:
        method: a key of ``MERGE_METHODS`` (MergeKit method name).
        endpoints: endpoint names in config order (MergeKit's ``models`` order).
        search: parameter -> ``(low, high)``. A bare name (``weight``) applies to every endpoint
            for per-endpoint parameters; ``weight/<endpoint>`` overrides one endpoint.
        fixed: parameter -> value, same naming; booleans (``normalize``, ``int8_mask``,
            ``rescale`` ...) go here. Unset parameters take the method's default.
        blocks: number of gradient values per searched coefficient (1 = one global value).
        filters: tensor-name substrings with their own value (e.g. ``["self_attn", "mlp"]``);
            the remaining tensors use ``.../rest``.
        split: parameters that get blocks / filters (default: every searched one).
        has_base: whether the study has a base model (required by methods with ``needs_base``).
    """

    def __init__(
        self,
        method: str,
        endpoints: Sequence[str],
        *,
        search: Mapping[str, Sequence[float]] | None = None,
        fixed: Mapping[str, Any] | None = None,
        blocks: int = 1,
        filters: Sequence[str] = (),
        split: Sequence[str] | None = None,
        has_base: bool = True,
    ) -> None:
        methods = _methods()
        if method not in methods:
            raise ValueError(f"merge.method: unknown method {method!r}; valid: {sorted(methods)}")
        self.method = method
        self.spec = methods[method]
        self.endpoints = [str(e) for e in endpoints]
        self.blocks = blocks
        self.filters = [str(f) for f in filters]
        self.has_base = has_base
        self._check_structure()
        self.tensor_params = dict(self.spec.tensor_params)
        self.global_params = dict(self.spec.global_params)
        self.search = {k: (float(v[0]), float(v[1])) for k, v in self._checked_search(search)}
        self.fixed = self._checked_fixed(fixed or {})
        self.split = self._checked_split(split)
        self._slots = self._build_slots()

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_config(cls, merge: Mapping[str, Any] | Any) -> MergeSpace:
        """Build from a study TOML ``[merge]`` table (schema in ``docs/merging.md``): a mapping
        or the config's :class:`~optuna_merge3.config.MergeTable`."""
        if hasattr(merge, "to_dict"):
            merge = merge.to_dict()
        if not isinstance(merge, Mapping):
            raise ValueError(f"merge: expected a table, got {type(merge).__name__}")
        unknown = sorted(set(merge) - set(_CONFIG_KEYS) - set(_PLAN_KEYS))
        if unknown:
            raise ValueError(f"merge: unknown key(s) {unknown}; valid: {list(_CONFIG_KEYS)}")
        if "method" not in merge:
            raise ValueError("merge.method: required key is missing")
        endpoints = merge.get("endpoints")
        if not isinstance(endpoints, Mapping) or not endpoints:
            raise ValueError("merge.endpoints: expected a table of name = path entries")
        blocks = merge.get("blocks", 1)
        if not isinstance(blocks, int) or isinstance(blocks, bool) or blocks < 1:
            raise ValueError(f"merge.blocks: expected an integer >= 1, got {blocks!r}")
        filters = merge.get("filters", [])
        if not isinstance(filters, list) or not all(isinstance(f, str) and f for f in filters):
            raise ValueError(f"merge.filters: expected a list of non-empty strings, got {filters!r}")
        for key in ("search", "fixed"):
            if not isinstance(merge.get(key, {}), Mapping):
                raise ValueError(f"merge.{key}: expected a table")
        return cls(
            str(merge["method"]),
            list(endpoints),
            search=merge.get("search", {}),
            fixed=merge.get("fixed", {}),
            blocks=blocks,
            filters=filters,
            split=merge.get("split"),
            has_base=merge.get("base") is not None,
        )

    def _check_structure(self) -> None:
        if len(self.endpoints) < 1 or len(set(self.endpoints)) != len(self.endpoints):
            raise ValueError(f"merge.endpoints: need unique names, got {self.endpoints}")
        bad = [e for e in self.endpoints if not e or "/" in e]
        if bad:
            raise ValueError(f"merge.endpoints: names must be non-empty without '/': {bad}")
        if self.spec.base == "pair" and len(self.endpoints) != 2:
            raise ValueError(
                f"merge.endpoints: {self.method} interpolates exactly two endpoints "
                f"(the first is t = 0), got {len(self.endpoints)}"
            )
        if self.spec.base == "required" and not self.has_base:
            raise ValueError(f"merge.base: method {self.method!r} needs a base model")
        if len(set(self.filters)) != len(self.filters) or "rest" in self.filters:
            raise ValueError(f"merge.filters: must be unique and not 'rest', got {self.filters}")

    def _checked_search(self, search: Mapping[str, Sequence[float]] | None):
        for key, bounds in (search or {}).items():
            param, _ = self._split_key(key, "merge.search")
            if not _is_float_param(self._default(param)):
                raise ValueError(f"merge.search.{key}: {param!r} is not numeric; fix it instead")
            if (
                not isinstance(bounds, (list, tuple))
                or len(bounds) != 2
                or not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
            ):
                raise ValueError(f"merge.search.{key}: expected [low, high], got {bounds!r}")
            low, high = float(bounds[0]), float(bounds[1])
            if not (math.isfinite(low) and math.isfinite(high)) or low > high:
                raise ValueError(f"merge.search.{key}: need finite low <= high, got {bounds!r}")
            yield key, (low, high)

    def _checked_fixed(self, fixed: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for key, value in fixed.items():
            param, _ = self._split_key(key, "merge.fixed")
            default = self._default(param)
            if isinstance(default, bool) and not isinstance(value, bool):
                raise ValueError(f"merge.fixed.{key}: expected true/false, got {value!r}")
            if _is_float_param(default) and (
                isinstance(value, bool) or not isinstance(value, (int, float))
            ):
                raise ValueError(f"merge.fixed.{key}: expected a number, got {value!r}")
            if key in self.search:
                raise ValueError(f"merge.fixed.{key}: also listed under merge.search")
            out[key] = float(value) if _is_float_param(default) else value
        return out

    def _checked_split(self, split: Sequence[str] | None) -> set[str]:
        if split is None:
            return {self._split_key(k, "")[0] for k in self.search}
        if not isinstance(split, (list, tuple)):
            raise ValueError(f"merge.split: expected a list of parameter names, got {split!r}")
        for name in split:
            self._split_key(str(name), "merge.split")
        return {str(s) for s in split}

    def _split_key(self, key: str, where: str) -> tuple[str, str | None]:
        param, _, endpoint = str(key).partition("/")
        valid = sorted(set(self.spec.tensor_params) | set(self.spec.global_params))
        if param not in valid:
            raise ValueError(
                f"{where}.{key}: {param!r} is not a parameter of {self.method}; valid: {valid}"
            )
        if endpoint:
            if param not in self.spec.tensor_params:
                raise ValueError(f"{where}.{key}: {param!r} is global, not per endpoint")
            if endpoint not in self.endpoints:
                raise ValueError(f"{where}.{key}: unknown endpoint {endpoint!r}; valid: "
                                 f"{self.endpoints}")
        return param, endpoint or None

    def _default(self, param: str) -> Any:
        if param in self.spec.tensor_params:
            return self.spec.tensor_params[param]
        return self.spec.global_params[param]

    def _build_slots(self) -> dict[tuple[str, str | None], Any]:
        """(param, endpoint|None) -> ``("search", (low, high))``, ``("fixed", v)`` or default."""
        slots: dict[tuple[str, str | None], Any] = {}
        owners = [(p, e) for p in self.tensor_params for e in self.math_endpoints]
        owners += [(p, None) for p in self.global_params]
        for param, endpoint in owners:
            keys = [f"{param}/{endpoint}", param] if endpoint else [param]
            slot = None
            for key in keys:
                if key in self.search:
                    slot = ("search", self.search[key])
                    break
                if key in self.fixed:
                    slot = ("fixed", self.fixed[key])
                    break
            if slot is None:
                default = self._default(param)
                if default is None:
                    raise ValueError(
                        f"merge: {param!r} is required by {self.method} (no default): add "
                        f"{param} = [low, high] under [merge.search] or {param} = value "
                        "under [merge.fixed]"
                    )
                slot = ("fixed", default)
            slots[(param, endpoint)] = slot
        return slots

    # -- structure ------------------------------------------------------------------------------
    @property
    def math_base(self) -> str | None:
        """Which input is the method's base: ``"base"``, the first endpoint (slerp) or None."""
        if self.spec.base == "pair":
            return self.endpoints[0]
        if self.spec.needs_base or (self.spec.base == "optional" and self.has_base):
            return "base"
        return None

    @property
    def math_endpoints(self) -> list[str]:
        """Endpoints passed as ``tensors`` to ``merge_tensor`` (the non-base inputs)."""
        if self.spec.base == "pair":
            return self.endpoints[1:]
        return list(self.endpoints)

    def _groups(self, param: str) -> list[tuple[str | None, int | None]]:
        if param not in self.split:
            return [(None, None)]
        groups = [*self.filters, "rest"] if self.filters else [None]
        blocks = list(range(self.blocks)) if self.blocks > 1 else [None]
        return [(g, b) for g in groups for b in blocks]

    @staticmethod
    def _gene(prefix: str, group: str | None, block: int | None) -> str:
        name = prefix if group is None else f"{prefix}/{group}"
        return name if block is None else f"{name}/block{block}"

    def _genes(self) -> dict[str, tuple[float, float]]:
        genes = {}
        for (param, endpoint), (kind, value) in self._slots.items():
            if kind != "search":
                continue
            prefix = f"{param}/{endpoint}" if endpoint else param
            for group, block in self._groups(param):
                genes[self._gene(prefix, group, block)] = value
        return genes

    # -- Optuna ---------------------------------------------------------------------------------
    def distributions(self) -> dict[str, Any]:
        """Gene name -> ``optuna.distributions.FloatDistribution`` (insertion order is stable)."""
        from optuna.distributions import FloatDistribution

        return {name: FloatDistribution(lo, hi) for name, (lo, hi) in self._genes().items()}

    @property
    def param_names(self) -> list[str]:
        """Gene names in a stable order."""
        return list(self._genes())

    def suggest(self, trial: Any) -> dict[str, float]:
        """Ask ``trial`` for every gene (``trial.suggest_float`` with the stable names)."""
        return {n: trial.suggest_float(n, lo, hi) for n, (lo, hi) in self._genes().items()}

    def validate(self, params: Mapping[str, float]) -> dict[str, float]:
        """Check a genotype: every gene present, no unknown name, finite and within bounds."""
        genes = self._genes()
        missing = [n for n in genes if n not in params]
        unknown = sorted(set(params) - set(genes))
        if missing or unknown:
            raise ValueError(
                f"merge params: missing {missing}, unknown {unknown}; expected {list(genes)}"
            )
        out = {}
        for name, (low, high) in genes.items():
            value = params[name]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"merge params: {name} must be a number, got {value!r}")
            if not math.isfinite(value) or not low - 1e-12 <= value <= high + 1e-12:
                raise ValueError(f"merge params: {name} = {value!r} is outside [{low}, {high}]")
            out[name] = float(value)
        return out

    def _clipped(self, name: str, value: float) -> float:
        low, high = self._genes()[name]
        return min(max(value, low), high)

    def uniform_params(self) -> dict[str, float]:
        """The uniform merge: ``weight`` 1/n (n = merged endpoints) for every method, so linear
        and task arithmetic both average the endpoints; ``t`` = 0.5; ``density``, ``lambda`` and
        the rest at their method default (midpoint when none); everything clipped to bounds."""
        n = len(self.math_endpoints)
        out = {}
        for name, (low, high) in self._genes().items():
            param = name.split("/")[0]
            if param == "weight":
                value = 1.0 / n
            elif param == "t":
                value = 0.5
            else:
                default = self._default(param)
                value = (low + high) / 2 if default is None else float(default)
            out[name] = self._clipped(name, value)
        return out

    def endpoint_params(self, name: str) -> dict[str, float] | None:
        """A genotype that reproduces endpoint ``name`` (up to float rounding), or None.

        Weight 1 on ``name`` and 0 elsewhere, density 1, lambda 1, t = 0 / 1 for slerp. None when
        a needed value is outside the bounds or a fixed value forbids it (e.g. ``model_stock``).
        """
        if name not in self.endpoints:
            raise ValueError(f"unknown endpoint {name!r}; valid: {self.endpoints}")
        if self.method == "model_stock":
            return None
        wanted: dict[tuple[str, str | None], float] = {}
        if self.spec.base == "pair":
            wanted[("t", None)] = 0.0 if name == self.endpoints[0] else 1.0
        else:
            for e in self.math_endpoints:
                wanted[("weight", e)] = 1.0 if e == name else 0.0
            if "density" in self.tensor_params:
                wanted[("density", name)] = 1.0  # any density >= 1 keeps every entry
            if "lambda" in self.global_params:
                wanted[("lambda", None)] = 1.0
        out = self.uniform_params()
        for (param, endpoint), value in wanted.items():
            kind, slot = self._slots[(param, endpoint)]
            at_least = param == "density"
            if kind == "fixed":
                if float(slot) == value or (at_least and float(slot) >= value):
                    continue
                return None
            low, high = slot
            if at_least and low > value:
                value = low
            if not low <= value <= high:
                return None
            prefix = f"{param}/{endpoint}" if endpoint else param
            for group, block in self._groups(param):
                out[self._gene(prefix, group, block)] = value
        return out

    # -- per-tensor resolution ------------------------------------------------------------------
    def _group_of(self, tensor_name: str) -> str:
        for f in self.filters:  # MergeKit: the first matching filter wins
            if f in tensor_name:
                return f
        return "rest"

    def _value(self, params: Mapping[str, float], param: str, endpoint: str | None,
               tensor_name: str, t: float) -> Any:
        kind, value = self._slots[(param, endpoint)]
        if kind == "fixed":
            return value
        prefix = f"{param}/{endpoint}" if endpoint else param
        groups = self._groups(param)
        group = groups[0][0] if groups[0][0] is None else self._group_of(tensor_name)
        values = [params[self._gene(prefix, group, b)] for g, b in groups if g == group]
        return gradient_value(values, t)

    def resolve(
        self, params: Mapping[str, float], tensor_name: str, n_layers: int
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """Per-tensor values: one dict per ``math_endpoints`` entry, and the method options.

        ``params`` should have been checked with :meth:`validate`.
        """
        t = layer_t(tensor_name, n_layers)
        per_endpoint = [
            {p: self._value(params, p, e, tensor_name, t) for p in self.tensor_params}
            for e in self.math_endpoints
        ]
        options = {p: self._value(params, p, None, tensor_name, t) for p in self.global_params}
        return per_endpoint, options

    # -- MergeKit and resume ---------------------------------------------------------------------
    def to_mergekit_config(
        self,
        params: Mapping[str, float],
        base_path: str | None,
        endpoint_paths: Mapping[str, str],
        dtype: str = "float32",
    ) -> dict[str, Any]:
        """A ``mergekit-yaml`` config (as a dict) that reproduces this genotype's tensors.

        Per-endpoint values go to ``models[i].parameters``, global ones to ``parameters``; block
        gradients become MergeKit lists and filters ``[{filter, value}, ..., {value}]``; slerp's
        first endpoint is ``base_model``. See :func:`~optuna_merge3.merging.mergekit_config`.
        """
        from optuna_merge3.merging._export import mergekit_config

        return mergekit_config(self, params, base_path, endpoint_paths, dtype)

    def signature(self) -> dict[str, Any]:
        """A JSON-able description; a resume with a different signature must be refused."""
        return {
            "method": self.method,
            "endpoints": list(self.endpoints),
            "search": {k: list(v) for k, v in sorted(self.search.items())},
            "fixed": {k: self.fixed[k] for k in sorted(self.fixed)},
            "blocks": self.blocks,
            "filters": list(self.filters),
            "split": sorted(self.split),
            "genes": list(self._genes()),
        }

    def __repr__(self) -> str:
        return (f"MergeSpace(method={self.method!r}, endpoints={self.endpoints}, "
                f"genes={self.param_names})")
