"""Tiny Llama models of the world: tokenizer, config, training loop, saving, merging, decoding.

Sizes follow DESIGN.md section 4 (hidden 128, 2 layers, 4 heads, intermediate 512, tied
embeddings, word-level tokenizer), small enough to train on one CPU thread in minutes.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from world_data import Example, Sampler, all_words

SPECIAL = ["<pad>", "<unk>", "<bos>", "<eos>"]
MAX_LEN = 48  # longest example is ~30 tokens


def build_tokenizer(words: list[str] | None = None):
    """A ``PreTrainedTokenizerFast`` over a WordLevel vocabulary of every word in the world.

    ``words`` (sorted, no specials) defaults to :func:`world_data.all_words`; the XL world passes
    its larger vocabulary.

    Whitespace splitting (no punctuation splitting: "Q:" is one token), BOS added by the
    post-processor so that ``tokenizer(prompt)`` gives exactly what the model was trained on,
    left padding so batched greedy decoding continues every prompt at the same position.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIAL + (all_words() if words is None else words))}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.post_processor = processors.TemplateProcessing(
        single="<bos> $A", pair="<bos> $A $B", special_tokens=[("<bos>", vocab["<bos>"])]
    )
    # WordLevel has no decoder of its own; join words with single spaces.
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
        padding_side="left",
        model_max_length=MAX_LEN,
    )


def build_model(
    vocab_size: int,
    pad_id: int,
    bos_id: int,
    eos_id: int,
    seed: int,
    *,
    num_hidden_layers: int = 2,
    intermediate_size: int = 512,
):
    """A freshly initialised tiny ``LlamaForCausalLM`` (weights from ``torch.manual_seed(seed)``).

    The defaults are the tiny world's shape; the XL world uses 4 layers with an MLP of 256 (about
    the same compute per token, and one layer block per gene).
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=64,
        tie_word_embeddings=True,
        pad_token_id=pad_id,
        bos_token_id=bos_id,
        eos_token_id=eos_id,
        initializer_range=0.02,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config)


def encode_batch(
    examples: list[Example], tokenizer, answer_only: bool
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` for training.

    ``answer_only`` masks the prompt out of the loss (the fine-tunes); the base learns the full
    sequence, so that it also learns the language of the questions.
    """
    vocab = tokenizer.get_vocab()
    bos, eos, pad = vocab["<bos>"], vocab["<eos>"], vocab["<pad>"]
    rows, starts = [], []
    for ex in examples:
        prompt = [vocab[w] for w in ex.prompt().split()]
        answer = [vocab[w] for w in ex.completion().split()]
        rows.append([bos, *prompt, *answer, eos])
        starts.append(1 + len(prompt))
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (row, start) in enumerate(zip(rows, starts, strict=True)):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        labels[i, start if answer_only else 1 : len(row)] = torch.tensor(
            row[start if answer_only else 1 :]
        )
    return ids, mask, labels


def train(
    model,
    tokenizer,
    sampler: Sampler,
    *,
    steps: int,
    lr: float,
    seed: int,
    answer_only: bool,
    batch_size: int = 64,
    warmup: int = 100,
    checkpoint_every: int | None = None,
    on_checkpoint: Callable[[int, object], None] | None = None,
    log: Callable[[str], None] = print,
) -> list[float]:
    """AdamW (betas .9/.98, no weight decay), linear warm-up then cosine decay to 0.

    Batches come from ``sampler`` driven by ``np.random.default_rng(seed)``, so a run is a pure
    function of (initial weights, sampler, seed). Returns the per-step losses.
    """
    rng = np.random.default_rng(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.0)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    t0 = time.time()
    for step in range(steps):
        ids, mask, labels = encode_batch(
            [sampler(rng) for _ in range(batch_size)], tokenizer, answer_only
        )
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if (step + 1) % 100 == 0 or step == steps - 1:
            avg = float(np.mean(losses[-100:]))
            log(f"  step {step + 1}/{steps} loss {avg:.4f} ({time.time() - t0:.0f}s)")
        if checkpoint_every and on_checkpoint and (step + 1) % checkpoint_every == 0:
            on_checkpoint(step + 1, model)
    model.eval()
    return losses


def state_dict_copy(model) -> dict[str, torch.Tensor]:
    """A detached fp32 copy of the model's weights (tied embeddings stored once)."""
    return {k: v.detach().clone().float() for k, v in model.state_dict().items()}


def task_arithmetic(
    base: dict[str, torch.Tensor],
    endpoints: list[dict[str, torch.Tensor]],
    weights: list[float] | list[list[float]],
) -> dict[str, torch.Tensor]:
    """base + sum_j w_j (endpoint_j - base): MergeKit's ``task_arithmetic`` without rescaling.

    ``weights[j]`` is one number, or one number per layer (``model.layers.<i>.``); tensors outside
    the decoder layers take the first value, as MergeKit reads a gradient at t = 0 there.
    """
    return {
        k: base[k]
        + sum(_at_layer(w, k) * (ep[k] - base[k]) for w, ep in zip(weights, endpoints, strict=True))
        for k in base
    }


def _at_layer(weight: float | list[float], key: str) -> float:
    """The weight of tensor ``key``: a number, or the entry of its decoder layer (else the first)."""
    if not isinstance(weight, (list, tuple)):
        return weight
    match = re.match(r"model\.layers\.(\d+)\.", key)
    return float(weight[int(match.group(1))]) if match else float(weight[0])


def linear(
    endpoints: list[dict[str, torch.Tensor]], weights: list[float]
) -> dict[str, torch.Tensor]:
    """sum_j w_j endpoint_j / sum_j w_j: MergeKit's ``linear`` with normalisation."""
    total = float(sum(weights))
    return {
        k: sum(w * ep[k] for w, ep in zip(weights, endpoints, strict=True)) / total
        for k in endpoints[0]
    }


def save_model(model, tokenizer, out_dir: Path, dtype: torch.dtype = torch.float32) -> None:
    """``save_pretrained`` (safetensors) + tokenizer files, loadable with ``from_pretrained``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(dtype).save_pretrained(out_dir, safe_serialization=True)
    model.to(torch.float32)
    tokenizer.save_pretrained(out_dir)


@torch.no_grad()
def greedy_generate(
    model, tokenizer, prompts: list[str], max_new_tokens: int = 6, batch_size: int = 256
) -> list[str]:
    """Minimal batched greedy decoding (left padding, stops at EOS), used only as a fallback
    when ``optuna_merge3.evaluation`` is not importable."""
    eos = tokenizer.eos_token_id
    out: list[str] = []
    for start in range(0, len(prompts), batch_size):
        enc = tokenizer(prompts[start : start + batch_size], return_tensors="pt", padding=True)
        gen = model.generate(
            **enc,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id,
        )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    return [s.strip() for s in out]
