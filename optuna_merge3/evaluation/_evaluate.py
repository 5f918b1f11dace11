"""``evaluate``: prompt, generate (or score choices by log-likelihood) and score a task."""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._generate import generate
from ._task import Task, TaskItem

_logger = logging.getLogger(__name__)


@dataclass
class EvalResult:
    """Per-item correctness (task order of ``indices``), raw answers and wall-clock seconds."""

    correct: np.ndarray
    answers: list[str]
    seconds: float


def render_prompt(task: Task, item: TaskItem, tokenizer: Any) -> str:
    """The item's prompt through the task template (and the chat template when asked and
    available; a tokenizer without one gets the plain template)."""
    text = task.prompt_template.format(prompt=item.prompt)
    if task.use_chat_template and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
    return text


def _loglik_choices(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    items: list[TaskItem],
    norm: bool,
    batch_size: int = 16,
) -> list[str]:
    """lm-eval semantics: sum of log-probs of " choice" given the prompt; acc_norm divides by
    the choice's byte length. Returns the chosen letter per item.

    Every (item, choice) sequence is one row; rows run ``batch_size`` at a time, right-padded
    (a causal model's real tokens keep positions 0..n-1, so padding changes nothing they see).
    """
    import torch

    device = next(model.parameters()).device
    rows: list[tuple[list[int], int, int]] = []  # token ids, n continuation, bytes
    first_row = []  # each item's rows are rows[first_row[k] : first_row[k] + n_choices]
    for prompt, item in zip(prompts, items, strict=True):
        if not item.choices:
            raise ValueError(f"item {item.id!r}: loglik_choice needs 'choices'")
        first_row.append(len(rows))
        n_ctx = len(tokenizer(prompt)["input_ids"])
        for choice in item.choices:
            full = list(tokenizer(prompt + " " + choice)["input_ids"])
            rows.append((full, max(1, len(full) - n_ctx), len((" " + choice).encode("utf-8"))))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    scores = np.empty(len(rows))
    step = max(1, batch_size)
    for start in range(0, len(rows), step):
        chunk = rows[start : start + step]
        width = max(len(r[0]) for r in chunk)
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for j, (full, _, _) in enumerate(chunk):
            ids[j, : len(full)] = torch.tensor(full)
            mask[j, : len(full)] = 1
        ids, mask = ids.to(device), mask.to(device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        # log p(next token) without materialising a second vocab-sized tensor
        token_lp = logits.gather(2, ids[:, 1:, None])[..., 0] - logits.logsumexp(-1)
        for j, (full, n_cont, n_bytes) in enumerate(chunk):
            ll = float(token_lp[j, len(full) - 1 - n_cont : len(full) - 1].sum())
            scores[start + j] = ll / n_bytes if norm else ll
    return [
        string.ascii_uppercase[int(np.argmax(scores[start : start + len(item.choices)]))]
        for start, item in zip(first_row, items, strict=True)
    ]


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task,
    indices: np.ndarray | list[int] | None = None,
    batch_size: int = 16,
    language_check: Any = None,
) -> EvalResult:
    """Correctness of ``model`` on ``task`` (all items or ``indices``, in that order).

    An lm-eval task (``scorer == "lm_eval"``, :func:`load_lm_eval_task`) is scored by its own
    filters and metric (:func:`~optuna_merge3.evaluation.evaluate_lm_eval`).
    """
    if task.scorer == "lm_eval":
        from ._lm_eval_run import evaluate_lm_eval

        return evaluate_lm_eval(model, tokenizer, task, indices, batch_size=batch_size)
    start = time.perf_counter()
    idx = range(len(task.items)) if indices is None else [int(i) for i in indices]
    items = [task.items[i] for i in idx]
    prompts = [render_prompt(task, it, tokenizer) for it in items]
    if task.scorer == "loglik_choice":
        norm = bool(task.scorer_options.get("norm", False))
        answers = _loglik_choices(model, tokenizer, prompts, items, norm, batch_size)
    else:
        answers = generate(
            model,
            tokenizer,
            prompts,
            task.generation.max_new_tokens,
            stop=task.generation.stop,
            batch_size=batch_size,
        )
    correct = np.array(
        [task.score(a, it, language_check) for a, it in zip(answers, items, strict=True)],
        dtype=bool,
    )
    seconds = time.perf_counter() - start
    _logger.debug("%s: %d items in %.3f s", task.name, len(items), seconds)
    return EvalResult(correct=correct, answers=answers, seconds=seconds)
