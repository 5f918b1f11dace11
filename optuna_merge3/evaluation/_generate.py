"""Batched greedy generation with left padding, KV cache, stop strings and OOM back-off."""

from __future__ import annotations

import logging
from typing import Any

_logger = logging.getLogger(__name__)


def _is_oom(exc: BaseException) -> bool:
    import torch

    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()


def _cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    cut = len(text)
    for s in stop:
        pos = text.find(s)
        if s and pos != -1:
            cut = min(cut, pos)
    return text[:cut]


def _stop_criteria(tokenizer: Any, stop: tuple[str, ...], prompt_len: int) -> Any:
    """A per-row criterion: a row is done once its decoded answer contains a stop string."""
    import torch
    from transformers import StoppingCriteria, StoppingCriteriaList

    class _StopStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            texts = tokenizer.batch_decode(input_ids[:, prompt_len:], skip_special_tokens=True)
            done = [any(s in t for s in stop) for t in texts]
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([_StopStrings()])


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    stop: tuple[str, ...] | list[str] = (),
    batch_size: int = 16,
    strip: bool = True,
    add_special_tokens: bool = True,
) -> list[str]:
    """Greedy answers (prompt excluded; stripped unless ``strip=False``) for ``prompts``.

    Left padding so every row's last prompt token sits at the same position; decoding with the
    model's KV cache (``model.generate``); deterministic (no sampling). A stop string that is a
    special token of the tokenizer also ends decoding of its row; the text is cut at the first
    stop string. A tokenizer without a pad token pads with its EOS token. ``add_special_tokens``
    is passed to the tokenizer (False for prompts that already start with BOS). On an out-of-memory
    error the batch size is halved and the batch retried (down to 1).
    """
    import torch

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    stop = tuple(stop)
    eos_ids = set()
    if tokenizer.eos_token_id is not None:
        eos_ids.add(int(tokenizer.eos_token_id))
    special = set(getattr(tokenizer, "all_special_tokens", []))
    for s in stop:
        if s in special:
            eos_ids.add(int(tokenizer.convert_tokens_to_ids(s)))
    text_stops = tuple(s for s in stop if s and s not in special)
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = tokenizer.eos_token_id
    old_side = tokenizer.padding_side
    old_pad = tokenizer.pad_token
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    try:
        out: list[str] = []
        start = 0
        size = batch_size
        device = next(model.parameters()).device
        while start < len(prompts):
            chunk = prompts[start : start + size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True,
                            add_special_tokens=add_special_tokens).to(device)
            enc.pop("token_type_ids", None)
            try:
                with torch.no_grad():
                    gen = model.generate(
                        **enc,
                        max_new_tokens=max_new_tokens,
                        do_sample=False,
                        num_beams=1,
                        eos_token_id=sorted(eos_ids) or None,
                        pad_token_id=pad_id,
                        use_cache=True,
                        stopping_criteria=(
                            _stop_criteria(tokenizer, text_stops, enc["input_ids"].shape[1])
                            if text_stops
                            else None
                        ),
                    )
            except Exception as exc:
                if not _is_oom(exc) or size == 1:
                    raise
                size = max(1, size // 2)
                _logger.warning("out of memory; retrying with batch size %d", size)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            new = gen[:, enc["input_ids"].shape[1] :]
            texts = tokenizer.batch_decode(new, skip_special_tokens=True)
            cut = (_cut_at_stop(t, stop) for t in texts)
            out.extend(t.strip() if strip else t for t in cut)
            start += len(chunk)
        return out
    finally:
        tokenizer.padding_side = old_side
        if old_pad is None:
            tokenizer.pad_token = None
