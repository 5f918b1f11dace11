"""Export a chosen genotype: ``save_pretrained`` + tokenizer + the equivalent MergeKit YAML.

``mergekit.yaml`` uses absolute input paths (a LoRA endpoint becomes MergeKit's
``base+adapter`` reference) so ``mergekit-yaml mergekit.yaml out/`` reproduces the tensors: exactly
for the deterministic methods; for DARE / DELLA the masks match when MergeKit draws from the same
seed in the same order (``--random-seed``; see ``docs/merging.md``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["export_merge", "mergekit_yaml"]

_logger = logging.getLogger(__name__)


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
    header = f"# optuna-merge3 export; seed={seed}; genotype={dict(params)}\n"
    (out / "mergekit.yaml").write_text(header + text, encoding="utf-8")
    _logger.info("exported merge to %s", out)
    return out
