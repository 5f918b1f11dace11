"""Content fingerprints of a study's weights, so that a resume compares content, not names.

A resume (or a second worker) must refuse a study whose fitness values would come from other
inputs: other weights under the same folder name, an edited reference CSV, another dtype.
Weights are fingerprinted cheaply, without reading a 15 GB checkpoint: per file its size, the
safetensors header (tensor names, shapes, dtypes, offsets) and a hash of 16 evenly spaced 64 KiB
samples plus the last one; fingerprints are cached per file by (size, mtime). Task and reference
files are small and hashed whole (``file_sha``). Paths never enter, so a moved checkout still
resumes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

__all__ = ["file_sha", "input_fingerprints", "weights_fingerprint"]

_SAMPLES = 16
_SAMPLE_BYTES = 64 * 1024
# Files of a model folder whose content changes its answers (weights, adapter, architecture,
# tokenizer).
_MODEL_FILES = ("*.safetensors", "*.bin", "config.json", "adapter_config.json", "tokenizer.json",
                "tokenizer_config.json")
_cache: dict[tuple[str, int, int], str] = {}


def _file_fingerprint(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _cache:
        digest = hashlib.sha256(str(stat.st_size).encode())
        with open(path, "rb") as fh:
            if path.suffix == ".safetensors":  # u64 header length, then the JSON header
                head = fh.read(8)
                digest.update(head + fh.read(int.from_bytes(head, "little")) if len(head) == 8
                              else head)
            step = max(stat.st_size // _SAMPLES, 1)
            for offset in [*range(0, stat.st_size, step)][:_SAMPLES] + [
                    max(stat.st_size - _SAMPLE_BYTES, 0)]:
                fh.seek(offset)
                digest.update(fh.read(_SAMPLE_BYTES))
        _cache[key] = digest.hexdigest()[:16]
    return _cache[key]


def weights_fingerprint(path: str | Path) -> str:
    """A fingerprint of a model folder (or one weights file) from its weight and config files."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        {f for pattern in _MODEL_FILES for f in path.glob(pattern) if f.is_file()})
    digest = hashlib.sha256()
    for f in files:
        digest.update(f"{f.name}:{_file_fingerprint(f)};".encode())
    return digest.hexdigest()[:16]


def file_sha(path: str | Path) -> str:
    """The first 16 hex digits of a file's SHA-256 (task and reference files)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def input_fingerprints(config: Any) -> dict[str, Any]:
    """The content of the base and endpoint weights, which the config names only by path.

    ``config`` is a :class:`~optuna_merge3.config.StudyConfig`; its signature already holds the
    content hashes of the task and reference files and the dtype / quantization.
    """
    base = config.merge.base
    return {
        "base": weights_fingerprint(base) if isinstance(base, str) and os.path.exists(base)
        else base,
        "endpoints": {k: weights_fingerprint(v) for k, v in config.merge.endpoints.items()},
    }
