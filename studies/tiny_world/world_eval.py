"""Scoring models of the tiny world on its tasks.

Uses ``optuna_merge3.evaluation`` (``load_task`` + ``evaluate``) when it is importable, so the
shipped correctness matrices are exactly what a study computes; otherwise falls back to the small
greedy decoder in :mod:`world_model` and the scorer in :mod:`world_tasks`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from world_model import greedy_generate
from world_tasks import MAX_NEW_TOKENS, WorldTask

_logger = logging.getLogger(__name__)


class Scorer:
    """Evaluates a live model on every task; ``backend`` says which implementation is used."""

    def __init__(self, tasks: dict[str, WorldTask], task_dir: Path, tokenizer) -> None:
        self.tasks = tasks
        self.tokenizer = tokenizer
        self.backend = "fallback"
        self._loaded: dict[str, object] = {}
        try:
            from optuna_merge3 import evaluation

            self._loaded = {
                name: evaluation.load_task(task_dir / f"{name}.jsonl") for name in tasks
            }
            self._evaluate = evaluation.evaluate
            self.backend = "optuna_merge3.evaluation"
        except Exception as exc:  # noqa: BLE001 - any failure means: use the fallback
            _logger.warning("optuna_merge3.evaluation unusable (%s); using the fallback", exc)

    @torch.no_grad()
    def score(self, model, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """Task name -> bool correctness over all its items."""
        out = {}
        for name in names or list(self.tasks):
            if self._loaded:
                result = self._evaluate(model, self.tokenizer, self._loaded[name], batch_size=256)
                out[name] = np.asarray(result.correct, dtype=bool)
            else:
                task = self.tasks[name]
                answers = greedy_generate(
                    model, self.tokenizer, task.prompts, max_new_tokens=MAX_NEW_TOKENS
                )
                out[name] = task.score(answers)
        return out

    def answers(self, model, name: str) -> list[str]:
        """Raw greedy answers (for inspection and the docs)."""
        return greedy_generate(
            model, self.tokenizer, self.tasks[name].prompts, max_new_tokens=MAX_NEW_TOKENS
        )
