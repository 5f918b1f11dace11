"""``evaluate``: prompt, generate (or score choices by log-likelihood) and score a task."""

from __future__ import annotations

import logging
import string
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._generate import generate
from ._scoring import score_answer
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
    model: Any, tokenizer: Any, prompts: list[str], items: list[TaskItem], norm: bool
) -> list[str]:
    """lm-eval semantics: sum of log-probs of " choice" given the prompt; acc_norm divides by
    the choice's byte length. Returns the chosen letter per item."""
    import torch

    device = next(model.parameters()).device
    letters = []
    for prompt, item in zip(prompts, items, strict=True):
        if not item.choices:
            raise ValueError(f"item {item.id!r}: loglik_choice needs 'choices'")
        ctx = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        scores = []
        for choice in item.choices:
            full = tokenizer(prompt + " " + choice, return_tensors="pt")["input_ids"][0]
            n_cont = max(1, len(full) - len(ctx))
            with torch.no_grad():
                logits = model(full[None].to(device)).logits[0].float()
            logp = torch.log_softmax(logits[:-1], dim=-1)
            target = full[1:].to(device)
            ll = float(logp[-n_cont:].gather(1, target[-n_cont:, None]).sum())
            scores.append(ll / len((" " + choice).encode("utf-8")) if norm else ll)
        letters.append(string.ascii_uppercase[int(np.argmax(scores))])
    return letters


def evaluate(
    model: Any,
    tokenizer: Any,
    task: Task,
    indices: np.ndarray | list[int] | None = None,
    batch_size: int = 16,
    language_check: Any = None,
) -> EvalResult:
    """Correctness of ``model`` on ``task`` (all items or ``indices``, in that order)."""
    start = time.perf_counter()
    idx = range(len(task.items)) if indices is None else [int(i) for i in indices]
    items = [task.items[i] for i in idx]
    prompts = [render_prompt(task, it, tokenizer) for it in items]
    if task.scorer == "loglik_choice":
        norm = bool(task.scorer_options.get("norm", False))
        answers = _loglik_choices(model, tokenizer, prompts, items, norm)
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
        [
            score_answer(
                a, it, task.scorer, task.scorer_options, task.require_regex, language_check
            )
            for a, it in zip(answers, items, strict=True)
        ],
        dtype=bool,
    )
    seconds = time.perf_counter() - start
    _logger.debug("%s: %d items in %.3f s", task.name, len(items), seconds)
    return EvalResult(correct=correct, answers=answers, seconds=seconds)
