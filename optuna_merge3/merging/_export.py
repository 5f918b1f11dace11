"""Export a chosen genotype: ``save_pretrained`` + tokenizer + the equivalent MergeKit YAML.

``mergekit.yaml`` uses absolute input paths (a LoRA endpoint becomes MergeKit's
``base+adapter`` reference) so ``mergekit-yaml mergekit.yaml out/`` reproduces the tensors: exactly
for the deterministic methods; for DARE / DELLA with ``rng="mergekit"`` the masks match when
MergeKit draws from the same seed (``--random-seed``); with ``rng="counter"`` (the default) the
header says so and :meth:`InMemoryMerger.mergekit_bernoulli` hands the masks to MergeKit (see
``docs/merging.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["export_merge", "mergekit_config", "mergekit_yaml"]

_logger = logging.getLogger(__name__)


def _setting(space: Any, params: Mapping[str, float], param: str, endpoint: str | None) -> Any:
    """One parameter as MergeKit writes it: scalar, gradient list, or filter conditions."""
    kind, value = space._slots[(param, endpoint)]
    if kind == "fixed":
        return value
    prefix = f"{param}/{endpoint}" if endpoint else param
    groups = space._groups(param)
    names = sorted({g for g, _ in groups}, key=[g for g, _ in groups].index)

    def values(group: str | None) -> Any:
        vals = [float(params[space._gene(prefix, g, b)]) for g, b in groups if g == group]
        return vals[0] if len(vals) == 1 else vals

    if names == [None]:
        return values(None)
    # MergeKit tries conditions in order (first matching filter wins); no filter = catch-all.
    return [{"filter": g, "value": values(g)} if g != "rest" else {"value": values(g)}
            for g in names]


def mergekit_config(
    space: Any,
    params: Mapping[str, float],
    base_path: str | None,
    endpoint_paths: Mapping[str, str],
    dtype: str = "float32",
) -> dict[str, Any]:
    """The MergeKit config dict of genotype ``params`` of ``space`` (MergeKit YAML schema)."""
    params = space.validate(params)
    missing = [e for e in space.endpoints if e not in endpoint_paths]
    if missing:
        raise ValueError(f"to_mergekit_config: no path for endpoint(s) {missing}")
    models = []
    for e in space.endpoints:
        entry: dict[str, Any] = {"model": str(endpoint_paths[e])}
        if e in space.math_endpoints and space.tensor_params:
            entry["parameters"] = {p: _setting(space, params, p, e) for p in space.tensor_params}
        models.append(entry)
    config: dict[str, Any] = {"merge_method": space.method, "models": models}
    if space.math_base == "base":
        if base_path is None:
            raise ValueError(f"to_mergekit_config: {space.method} needs base_path")
        config["base_model"] = str(base_path)
    elif space.math_base is not None:
        config["base_model"] = str(endpoint_paths[space.math_base])
    if space.global_params:
        config["parameters"] = {p: _setting(space, params, p, None) for p in space.global_params}
    config["dtype"] = dtype
    return config


def mergekit_yaml(merger: Any, params: Mapping[str, float]) -> str:
    """The MergeKit YAML (text) that reproduces ``params`` on ``merger``'s inputs."""
    import yaml

    paths = {}
    for name, path in merger.endpoint_paths.items():
        path = Path(path).resolve()
        if merger._sources[name].kind == "lora":
            paths[name] = f"{Path(merger.base_path).resolve()}+{path}"
        else:
            paths[name] = str(path)
    base = str(Path(merger.base_path).resolve()) if merger.base_path is not None else None
    dtype = str(merger.dtype).removeprefix("torch.")
    config = merger.space.to_mergekit_config(params, base, paths, dtype=dtype)
    return yaml.safe_dump(config, sort_keys=False)


def export_merge(merger: Any, params: Mapping[str, float], out_dir: str | Path,
                 seed: int = 0) -> Path:
    """Merge ``params`` into a fresh full-precision model and save it to ``out_dir``.

    Writes ``config.json`` + ``model.safetensors`` (``save_pretrained``), the tokenizer files
    and ``mergekit.yaml``; returns ``out_dir``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = merger.load_model(quantization=None)
    merger.apply(params, model, seed=seed)
    model.save_pretrained(str(out))
    try:
        merger.load_tokenizer().save_pretrained(str(out))
    except (OSError, ValueError) as exc:  # a checkpoint without tokenizer files
        _logger.warning("no tokenizer saved with the merge: %s", exc)
    text = mergekit_yaml(merger, params)
    rng = getattr(merger, "rng", "mergekit") if merger.space.spec.stochastic else "none"
    header = f"# optuna-merge3 export; seed={seed}; rng={rng}; genotype={dict(params)}\n"
    (out / "mergekit.yaml").write_text(header + text, encoding="utf-8")
    _logger.info("exported merge to %s", out)
    return out
