"""Generation on a tiny real transformers Llama (fp32, CPU)."""

from __future__ import annotations

import pytest

from optuna_merge3.evaluation import generate

PROMPTS = [
    "q : what colour is the sky ? a :",
    "q : anna has 3 apples . how many apples does anna have now ? a :",
    "q : 2 ? a :",
    "q : what is the answer and how many red green apples does anna have ? a :",
    "sky",
]


def test_tokenizer_has_no_pad_token(tiny) -> None:
    _, tokenizer = tiny
    assert tokenizer.pad_token is None


def test_batched_equals_one_by_one(tiny) -> None:
    model, tokenizer = tiny
    single = [generate(model, tokenizer, [p], max_new_tokens=8)[0] for p in PROMPTS]
    batched = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=5)
    batched_2 = generate(model, tokenizer, PROMPTS, max_new_tokens=8, batch_size=2)
    assert batched == single
    assert batched_2 == single
    assert len(set(single)) > 1  # outputs depend on the prompt
    assert all(len(s.split()) >= 1 for s in single)
    assert tokenizer.pad_token is None  # restored


def test_deterministic(tiny) -> None:
    model, tokenizer = tiny
    a = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    b = generate(model, tokenizer, PROMPTS, max_new_tokens=6, batch_size=3)
    assert a == b


def test_stop_strings_cut_the_answer(tiny) -> None:
    model, tokenizer = tiny
    full = generate(model, tokenizer, PROMPTS, max_new_tokens=8)
    # stop at the second generated word of each answer, whatever it is
    for prompt, text in zip(PROMPTS, full, strict=True):
        words = text.split()
        if len(words) < 2:
            continue
        cut = generate(model, tokenizer, [prompt], max_new_tokens=8, stop=[" " + words[1]])[0]
        assert cut == words[0]
        assert len(cut) < len(text)


def test_oom_backoff_halves_the_batch(tiny, monkeypatch, caplog) -> None:
    """SIMULATED: CPU has no OOM; the real model's forward raises the CUDA OOM message for
    batches larger than 2, as torch does on a GPU."""
    import torch

    model, tokenizer = tiny
    expected = generate(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=1)
    original = model.forward
    sizes = []

    def forward(*args, **kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        sizes.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    with caplog.at_level("WARNING"):
        got = generate(model, tokenizer, PROMPTS, max_new_tokens=5, batch_size=8)
    assert got == expected
    assert max(s for s in sizes if s <= 2) == 2
    assert "batch size 4" in caplog.text and "batch size 2" in caplog.text


def test_other_errors_are_not_swallowed(tiny, monkeypatch) -> None:
    model, tokenizer = tiny

    def forward(*args, **kwargs):
        raise RuntimeError("shape mismatch")

    monkeypatch.setattr(model, "forward", forward)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        generate(model, tokenizer, PROMPTS, max_new_tokens=3, batch_size=4)


def test_nf4_model_on_cpu(tiny_dir) -> None:
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("bitsandbytes")
    import torch

    qconf = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(
        tiny_dir, quantization_config=qconf, device_map="cpu"
    ).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    assert any("4bit" in type(m).__name__ for m in model.modules())
    single = [generate(model, tokenizer, [p], max_new_tokens=5)[0] for p in PROMPTS[:3]]
    batched = generate(model, tokenizer, PROMPTS[:3], max_new_tokens=5, batch_size=3)
    assert all(s for s in single)
    assert batched == single


def test_stop_string_ends_decoding_early(tiny, monkeypatch) -> None:
    model, tokenizer = tiny
    prompt = PROMPTS[1]
    words = generate(model, tokenizer, [prompt], max_new_tokens=8)[0].split()
    if len(words) < 3:
        pytest.skip("random model answered in fewer than 3 words")
    calls = []
    original = model.forward

    def forward(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)
    generate(model, tokenizer, [prompt], max_new_tokens=8, stop=[" " + words[1]])
    assert len(calls) < 8  # stopped after the second word, not at max_new_tokens
