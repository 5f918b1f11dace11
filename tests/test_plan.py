"""The memory plan: header reading, the bytes table, config keys, ``optuna-merge3 plan``."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from pathlib import Path

import pytest

from optuna_merge3.cli import main
from optuna_merge3.config import ConfigError, load_config
from optuna_merge3.plan import (
    GB,
    NF4_BYTES,
    WORKSPACE_BYTES,
    estimate_mode,
    model_shape,
    plan_memory,
    read_safetensors_header,
)

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "studies" / "mistral7b_24gb.toml"
TINY = ROOT / "studies" / "tiny_world"
MODELS = ("/models/Mistral-7B-v0.1", "/models/MetaMath-Mistral-7B",
          "/models/shisa-gamma-7b-v1", "/models/Mistral-7B-Instruct-v0.2")


def mistral7b_shapes() -> dict[str, list[int]]:
    """Mistral-7B-v0.1's tensors (hidden 4096, 32 layers, 8 KV heads, vocab 32000)."""
    h, kv, inter = 4096, 1024, 14336
    shapes = {"model.embed_tokens.weight": [32000, h], "model.norm.weight": [h],
              "lm_head.weight": [32000, h]}
    for i in range(32):
        p = f"model.layers.{i}."
        shapes |= {p + "self_attn.q_proj.weight": [h, h], p + "self_attn.k_proj.weight": [kv, h],
                   p + "self_attn.v_proj.weight": [kv, h], p + "self_attn.o_proj.weight": [h, h],
                   p + "mlp.gate_proj.weight": [inter, h], p + "mlp.up_proj.weight": [inter, h],
                   p + "mlp.down_proj.weight": [h, inter],
                   p + "input_layernorm.weight": [h], p + "post_attention_layernorm.weight": [h]}
    return shapes


def write_sparse_checkpoint(folder: Path, shapes: dict[str, list[int]]) -> int:
    """A valid bf16 safetensors file whose data region is a hole (all zeros, no disk blocks),
    plus Mistral-7B's config.json; returns the data bytes the header describes."""
    folder.mkdir(parents=True)
    header, offset = {}, 0
    for name in sorted(shapes):
        size = 2 * math.prod(shapes[name])
        header[name] = {"dtype": "BF16", "shape": shapes[name], "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    with (folder / "model.safetensors").open("wb") as handle:
        handle.write(struct.pack("<Q", len(blob)) + blob)
        handle.truncate(8 + len(blob) + offset)
    config = {"architectures": ["MistralForCausalLM"], "model_type": "mistral",
              "hidden_size": 4096, "intermediate_size": 14336, "num_attention_heads": 32,
              "num_key_value_heads": 8, "num_hidden_layers": 32, "vocab_size": 32000,
              "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(config))
    return offset


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The README's 7B recipe with 7B-shaped headers in place of the models and tiny-world
    task files (a 256-token generation) in place of the user's."""
    root = tmp_path_factory.mktemp("recipe")
    shapes = mistral7b_shapes()
    for model in MODELS:
        write_sparse_checkpoint(root / Path(model).name, shapes)
    tasks = root / "tasks"
    tasks.mkdir()
    shutil.copy(TINY / "tasks" / "math_it.jsonl", tasks / "gsm8k_ja.jsonl")
    sidecar = json.loads((TINY / "tasks" / "math_it.json").read_text())
    (tasks / "gsm8k_ja.json").write_text(json.dumps({**sidecar, "max_new_tokens": 256}))
    shutil.copy(TINY / "reference" / "math_it_responses.csv.gz",
                tasks / "gsm8k_ja_responses.csv.gz")
    return root


def recipe(root: Path, **merge: object) -> Path:
    """The recipe with its model paths pointed at ``root`` and [merge] keys replaced."""
    text = RECIPE.read_text()
    for model in MODELS:
        text = text.replace(f'"{model}"', json.dumps(str(root / Path(model).name)))
    text = text.replace('storage = "postgresql://user@dbhost/merge3"',
                        f'storage = {json.dumps(str(root / "study.log"))}')
    for key, value in merge.items():
        line = f"{key} = {json.dumps(value)}"
        text, n = re.subn(rf"^{key} = .*$", line, text, flags=re.M)
        if not n:
            text = text.replace("[merge]\n", f"[merge]\n{line}\n")
    path = root / f"recipe_{abs(hash(text))}.toml"
    path.write_text(text)
    return path


def test_header_reader_counts_what_a_real_file_holds(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file

    tensors = {"model.embed_tokens.weight": torch.zeros(50, 8, dtype=torch.bfloat16),
               "model.layers.0.mlp.up_proj.weight": torch.zeros(16, 8, dtype=torch.bfloat16),
               "model.norm.weight": torch.ones(8, dtype=torch.bfloat16),
               "model.steps": torch.zeros(3, dtype=torch.int64)}
    save_file(tensors, str(tmp_path / "model.safetensors"), metadata={"format": "pt"})
    header = read_safetensors_header(tmp_path / "model.safetensors")
    assert sorted(header) == sorted(tensors)
    shape = model_shape(tmp_path)
    assert (shape.n_params, shape.n_quantizable, shape.largest) == (400 + 128 + 8, 128, 400)
    assert shape.file_bytes == 2 * (400 + 128 + 8)
    data = (tmp_path / "model.safetensors").read_bytes()
    (tmp_path / "model.safetensors").write_bytes(data[:-10])
    with pytest.raises(ValueError, match="truncated safetensors file"):
        read_safetensors_header(tmp_path / "model.safetensors")
    (tmp_path / "model.safetensors").write_bytes(b"\x05")
    with pytest.raises(ValueError, match="not a safetensors file"):
        read_safetensors_header(tmp_path / "model.safetensors")


def test_the_bytes_table_per_method_and_mode(recipe_dir: Path) -> None:
    shape = model_shape(recipe_dir / "Mistral-7B-v0.1")
    assert shape.n_params == 7_241_732_096  # Mistral-7B-v0.1's parameter count
    assert shape.largest == 32000 * 4096 and shape.n_layers == 32 and shape.head_dim == 128
    p, q, t = shape.n_params, shape.n_quantizable, shape.largest
    common = dict(has_base=True, on_gpu=True, dtype_bytes=2, batch_size=20, max_new_tokens=256)
    ties = estimate_mode("resident", shape, "ties", 3, quantization=None, **common)
    assert ties.device["live model"] * GB == p * 2
    assert ties.device["inputs"] * GB == 4 * p * 2  # base + 3 endpoints on the device
    assert ties.device["workspace"] * GB == t * WORKSPACE_BYTES["ties"]
    assert ties.inputs == "device" and ties.page_cache_gb == 0
    stream = estimate_mode("stream", shape, "ties", 3, quantization="nf4", **common)
    assert stream.device["live model"] * GB == pytest.approx(q * NF4_BYTES + (p - q) * 2)
    # the workspace + the 4 inputs of the tensor being merged and of the next one (prefetch)
    assert stream.device["workspace"] * GB == t * (WORKSPACE_BYTES["ties"] + 2 * 4 * 2)
    assert "inputs" not in stream.device and stream.page_cache_gb * GB == 4 * p * 2
    assert stream.inputs == "cpu" and stream.host["runtime"] == 0.5
    assert stream.host["pinned staging"] * GB == 4 * t * 2  # one bf16 buffer per input
    kv = 2 * 32 * 8 * 128 * 2 * 20 * (512 + 256)
    assert stream.device["generation"] * GB > kv
    dare = estimate_mode("stream", shape, "dare_ties", 3, quantization="nf4", **common)
    assert dare.device["workspace"] < stream.device["workspace"]  # no sort
    on_cpu = estimate_mode("resident", shape, "ties", 3, quantization=None,
                           **(common | {"on_gpu": False}))
    # CPU, file dtype = merge dtype: the inputs are the memory map itself (page cache, no copy)
    assert on_cpu.device == {} and "inputs" not in on_cpu.host
    assert on_cpu.page_cache_gb * GB == 4 * p * 2


@pytest.mark.parametrize("method", ["ties", "dare_ties"])
def test_7b_recipe_streams_within_24_gb(recipe_dir: Path, method: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe(recipe_dir, method=method)
    assert main(["plan", str(path)]) == 0
    out = capsys.readouterr().out
    assert "chosen: stream, inputs on cpu" in out
    plan = plan_memory(load_config(path), max_new_tokens=256)
    chosen = plan.check()
    assert chosen.memory == "stream" and plan.stream
    assert chosen.device_gb <= 24 and chosen.host_gb <= 64
    assert re.search(rf"\| stream, inputs on cpu \| {chosen.device_gb:.1f} \| {chosen.host_gb:.2f} \| "
                     r"\d+\.\d \| yes \|", out)
    resident = plan.estimates[0]
    assert resident.label == "resident, inputs on device" and resident.device["inputs"] > 50


def test_7b_resident_is_refused_with_the_numbers(recipe_dir: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = recipe(recipe_dir, memory="resident")
    assert main(["plan", str(path)]) == 2
    err = capsys.readouterr().err
    assert "merge.memory = 'resident' does not fit" in err
    assert re.search(r"resident, inputs on device: no: device \d+\.\d GB > 24\.0 GB", err)
    assert re.search(r"memory = 'stream', inputs = 'cpu' would fit \(device \d+\.\d GB", err)


def test_host_budget_refuses_on_cpu(tmp_path: Path) -> None:
    text = (ROOT / "studies" / "tiny_world.toml").read_text().replace(
        "[merge]\n", "[merge]\nhost_memory_gb = 0.3\n")
    (tmp_path / "tiny_world").symlink_to(TINY)
    (tmp_path / "t.toml").write_text(text)
    plan = plan_memory(load_config(tmp_path / "t.toml"))
    with pytest.raises(ConfigError, match=r"t\.toml: merge\.memory = 'auto' does not fit "
                                          r"\(resident: no: host 0\.\d\d GB > 0\.30 GB"):
        plan.check(str(tmp_path / "t.toml"))


@pytest.mark.parametrize(("line", "message"), [
    ('memory = "fast"', "merge.memory: 'fast' is not one of"),
    ('inputs = "gpu"', "merge.inputs: 'gpu' is not one of"),
    ('memory = "stream"\ninputs = "device"', "merge.inputs: 'device' keeps the inputs"),
    ('memory = "resident"\ninputs = "cpu"', "merge.inputs: 'cpu' reads the inputs from the"),
    ("device_memory_gb = -1", "merge.device_memory_gb: must be > 0"),
    ('host_memory_gb = "64"', "merge.host_memory_gb: expected float, got str '64'"),
])
def test_bad_plan_keys_name_the_key(tmp_path: Path, line: str, message: str) -> None:
    (tmp_path / "tiny_world").symlink_to(TINY)
    text = (ROOT / "studies" / "tiny_world.toml").read_text().replace("[merge]\n",
                                                                       f"[merge]\n{line}\n")
    (tmp_path / "t.toml").write_text(text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(tmp_path / "t.toml")


def test_plan_keys_stay_out_of_the_space_and_the_signature(tmp_path: Path) -> None:
    from optuna_merge3.merging import MergeSpace
    from optuna_merge3.runner import StudyRunner

    (tmp_path / "tiny_world").symlink_to(TINY)
    plain = (ROOT / "studies" / "tiny_world.toml").read_text()
    (tmp_path / "a.toml").write_text(plain)
    (tmp_path / "b.toml").write_text(plain.replace(
        "[merge]\n", '[merge]\nmemory = "stream"\nhost_memory_gb = 16\n'))
    a, b = load_config(tmp_path / "a.toml"), load_config(tmp_path / "b.toml")
    assert a.merge.memory == "auto" and a.merge.host_memory_gb is None
    assert (b.merge.memory, b.merge.inputs, b.merge.host_memory_gb) == ("stream", None, 16)
    assert a.signature_hash() == b.signature_hash()  # how a merge runs, not what it computes
    raw = dict(b.raw["merge"])
    assert "memory" in raw
    assert MergeSpace.from_config(raw).signature() == MergeSpace.from_config(a.merge).signature()
    streamed = StudyRunner(b, progress=lambda _: None)
    assert streamed.merger.stream is True
    assert StudyRunner(a, progress=lambda _: None).merger.stream is False


def test_readme_7b_recipe_is_the_study_file() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## A real 7B recipe", 1)[1].split("\n## ", 1)[0]
    block = re.findall(r"```toml\n(.*?)```", section, flags=re.S)[0]  # the recipe comes first
    assert block.strip() == RECIPE.read_text().strip()
