"""A tiny random Llama and a word-level tokenizer without a pad token, built in a tmp dir."""

from __future__ import annotations

from pathlib import Path

import pytest

WORDS = (
    "q a the answer is what how many apples does anna have gives now ? . : "
    "blue red green sky grass 0 1 2 3 4 5 6 7 8 9 è la risposta stop here and"
).split()


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny_llama")
    vocab = {"<unk>": 0, "<bos>": 1, "<eos>": 2}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.save_pretrained(out)
    config = transformers.LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = transformers.LlamaForCausalLM(config).float().eval()
    with torch.no_grad():  # larger weights: a non-trivial, non-constant greedy output
        for p in model.parameters():
            p.mul_(8.0) if p.ndim == 2 else None
    model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def tiny(tiny_dir: Path):
    transformers = pytest.importorskip("transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype="float32").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    return model, tokenizer
