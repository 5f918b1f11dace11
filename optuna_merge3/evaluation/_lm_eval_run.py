"""lm-eval tasks on the live in-memory model: the subset's requests through a backend, then the
task's own filters and metric (loading: ``_lm_eval``).

Backends (identical per-item correctness, tested; speed in
``benchmarks/results/lm_eval_backends.md``):

- ``"harness"``: lm-eval's own ``HFLM`` wrapped around our model object and tokenizer.
- ``"generate"``: this package's batched greedy :func:`~optuna_merge3.evaluation.generate`
  (OOM back-off) with lm-eval's stop rule. Log-likelihood requests (multiple choice) always go
  through ``HFLM``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import string
import time
import weakref
from typing import Any

import numpy as np

from ._lm_eval import DEFAULT_BACKEND, LmEvalSource, _check_backend
from ._task import Task

__all__ = ["evaluate_lm_eval"]

_logger = logging.getLogger(__name__)


_HFLM_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _hflm(model: Any, tokenizer: Any, batch_size: int) -> Any:
    """lm-eval's HF wrapper around the live model (one per model object: weights change in
    place, the wrapper stays valid)."""
    from lm_eval.models.huggingface import HFLM

    cached = _HFLM_CACHE.get(model)
    if cached is None or cached.tokenizer is not tokenizer:
        pad = tokenizer.pad_token  # HFLM sets a pad token when there is none: restore it
        hf_logger = logging.getLogger("lm_eval.models.huggingface")
        level = hf_logger.level
        hf_logger.setLevel(logging.ERROR)  # its warnings about a model object are expected here
        try:
            cached = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size,
                          device=str(next(model.parameters()).device))
        finally:
            hf_logger.setLevel(level)
        tokenizer.pad_token = pad
        _HFLM_CACHE[model] = cached
    cached.batch_size_per_gpu = batch_size
    return cached


def _generate_responses(model: Any, tokenizer: Any, requests: list[Any], batch_size: int
                        ) -> list[str]:
    """``generate_until`` requests through our batched greedy generation, with lm-eval's stop
    rule (the YAML's ``until`` plus the tokenizer's EOS) and no stripping, as ``HFLM`` does."""
    from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs

    from ._generate import generate

    eos = tokenizer.decode([tokenizer.eos_token_id], skip_special_tokens=False) \
        if tokenizer.eos_token_id is not None else None
    out: list[str | None] = [None] * len(requests)
    groups: dict[str, list[int]] = {}
    for k, request in enumerate(requests):
        groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(k)
    for members in groups.values():
        kwargs = normalize_gen_kwargs(dict(requests[members[0]].args[1]), 256)
        if kwargs.get("do_sample"):
            raise ValueError("backend 'generate' decodes greedily; the task samples "
                             "(do_sample: true): use backend 'harness'")
        stop = handle_stop_sequences(kwargs.get("until"), eos=eos)
        contexts = [requests[k].args[0] for k in members]
        # HFLM's rule: a context that already starts with BOS (a chat template's) gets no second
        bos = getattr(tokenizer, "bos_token", None)
        texts = generate(model, tokenizer, contexts, int(kwargs["max_gen_toks"]), stop=stop,
                         batch_size=batch_size, strip=False,
                         add_special_tokens=not (bos and contexts[0].startswith(bos)))
        for k, text in zip(members, texts, strict=True):
            out[k] = text
    return out  # type: ignore[return-value]


def _run_requests(model: Any, tokenizer: Any, requests: list[Any], batch_size: int,
                  backend: str) -> None:
    by_type: dict[str, list[Any]] = {}
    for request in requests:
        by_type.setdefault(request.request_type, []).append(request)
    for request_type, group in by_type.items():
        if backend == "generate" and request_type == "generate_until":
            responses = _generate_responses(model, tokenizer, group, batch_size)
        else:
            lm = _hflm(model, tokenizer, batch_size)
            responses = getattr(lm, request_type)(group, disable_tqdm=True)
        for request, response in zip(group, responses, strict=True):
            request.resps.append(response)


def evaluate_lm_eval(
    model: Any,
    tokenizer: Any,
    task: Task,
    indices: np.ndarray | list[int] | None = None,
    batch_size: int = 16,
    backend: str | None = None,
) -> Any:
    """Per-item correctness of the live ``model`` on an lm-eval task (all items or ``indices``).

    Returns an :class:`~optuna_merge3.evaluation.EvalResult`: ``correct`` is the task metric's
    per-document value (0 / 1), ``answers`` the raw generated text (multiple choice: the letter of
    the highest-scoring choice).
    """
    from ._evaluate import EvalResult

    backend = backend or task.meta.get("lm_eval_backend", DEFAULT_BACKEND)
    _check_backend(backend)
    source: LmEvalSource = task.meta["lm_eval_source"]
    start = time.perf_counter()
    idx = range(len(task.items)) if indices is None else [int(i) for i in indices]
    # Fresh copies: the built requests stay untouched, so evaluations never share responses.
    per_doc = [[dataclasses.replace(r, resps=[], filtered_resps={}) for r in source.requests[i]]
               for i in idx]
    flat = [r for requests in per_doc for r in requests]
    if flat:
        _run_requests(model, tokenizer, flat, batch_size, backend)
        for ensemble in getattr(source.task, "_filters", []):
            ensemble.apply(flat)
    correct, answers = [], []
    for requests in per_doc:
        responses = [r.filtered_resps.get(source.filter_name, r.resps[0]) for r in requests]
        value = source.task.process_results(requests[0].doc, responses)[source.metric]
        if value not in (0, 1):
            raise ValueError(f"task {task.name!r}: metric {source.metric!r} gave {value!r}, not "
                             "0 / 1; choose a per-item 0 / 1 metric with lm_eval_metric")
        correct.append(bool(value))
        answers.append(_answer_text(requests, responses, source.output_type))
    seconds = time.perf_counter() - start
    _logger.debug("%s: %d lm-eval items in %.3f s (%s)", task.name, len(per_doc), seconds, backend)
    return EvalResult(correct=np.array(correct, dtype=bool), answers=answers, seconds=seconds)


def _answer_text(requests: list[Any], responses: list[Any], output_type: str) -> str:
    """The model's raw answer (multiple choice: the highest-scoring choice's letter)."""
    if output_type == "multiple_choice":
        scores = [r[0] if isinstance(r, (tuple, list)) else r for r in responses]
        return string.ascii_uppercase[int(np.argmax(scores))]
    raw = requests[0].resps[0]
    return raw if isinstance(raw, str) else json.dumps(raw, default=str)
