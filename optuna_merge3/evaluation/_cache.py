"""On-disk correctness cache keyed by fingerprints of weights, items and scoring config."""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from optuna_merge3._cachefile import read_or_none, write_npz

from ._task import Task

_logger = logging.getLogger(__name__)


def model_fingerprint(model: Any) -> str:
    """SHA-256 over every state-dict tensor's name, dtype, shape and bytes (sound: any changed
    weight changes it; ~1 s per GB on CPU)."""
    import torch

    h = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        t = tensor.detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}".encode())
        if t.dtype in (torch.bfloat16,):
            t = t.view(torch.int16)
        h.update(t.numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def task_fingerprint(task: Task) -> str:
    """SHA-256 over the items and the scoring / generation / prompt config."""
    payload = {"items": [asdict(it) for it in task.items], "config": task.scoring_config()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=list).encode()).hexdigest()


def _read_correct(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["correct"].astype(bool)


class CorrectnessCache:
    """Stores full-task correctness vectors under ``root/<model fp>/<task fp>.npz``."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, model_fp: str, task: Task) -> Path:
        return self.root / model_fp[:32] / f"{task.name}-{task_fingerprint(task)[:32]}.npz"

    def get(self, model_fp: str, task: Task) -> np.ndarray | None:
        """Cached correctness, or None (missing, or unreadable: then with a warning)."""
        return read_or_none(self._path(model_fp, task), _read_correct, "correctness cache file")

    def put(self, model_fp: str, task: Task, correct: np.ndarray) -> None:
        """Store ``correct`` (atomically: a reader never sees half a file)."""
        write_npz(self._path(model_fp, task), correct=np.asarray(correct, dtype=bool))

    def get_or_compute(
        self, model: Any, tokenizer: Any, task: Task, *, fingerprint: str | None = None,
        **eval_kw: Any,
    ) -> np.ndarray:
        """Correctness on the full task, computed with :func:`evaluate` once and then read.

        ``fingerprint``: the model's :func:`model_fingerprint` when the caller already has it
        (hashing the weights once for several tasks).
        """
        from ._evaluate import evaluate

        fp = fingerprint or model_fingerprint(model)
        cached = self.get(fp, task)
        if cached is not None:
            return cached
        correct = evaluate(model, tokenizer, task, **eval_kw).correct
        self.put(fp, task, correct)
        return correct
