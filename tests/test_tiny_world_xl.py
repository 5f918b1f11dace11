"""The XL tiny world (studies/tiny_world_xl, issue 16): shipped artefacts and a byte-exact rebuild.

The shipped checks read files only; the rebuild test runs the quick variant of
``build_xl.py`` twice and compares every output byte (the full build takes ~30 minutes).
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
WORLD = ROOT / "studies" / "tiny_world_xl"
MANIFEST = json.loads((WORLD / "world.json").read_text(encoding="utf-8"))
SHIPPED = list(MANIFEST["models"])
ENDPOINTS = [m for m in SHIPPED if m != "base"]


def _responses(task: str) -> tuple[list[str], list[str], np.ndarray]:
    with gzip.open(WORLD / MANIFEST["tasks"][task]["reference"], "rt", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    return (
        [r[0] for r in rows[1:]],
        rows[0][1:],
        np.array([[int(v) for v in r[1:]] for r in rows[1:]]),
    )


def test_manifest_meets_issue_16() -> None:
    assert not MANIFEST["quick"], "the shipped XL world must come from a full build"
    assert MANIFEST["tasks"]["math_it"]["n_items"] >= 1000  # 20 items = 50x fewer
    assert MANIFEST["tasks"]["math_en"]["n_items"] >= 1000
    assert len(ENDPOINTS) >= 3
    assert MANIFEST["reference_population"]["n_models"] >= 100
    assert MANIFEST["model_shape"]["num_hidden_layers"] == 4


def test_shipped_size_is_under_20_mb() -> None:
    total = sum(p.stat().st_size for p in WORLD.rglob("*") if p.is_file())
    assert total <= 20 * 1024 * 1024, f"{total / 2**20:.1f} MiB"


def test_reference_matrices_match_the_tasks_and_the_manifest() -> None:
    n_models = MANIFEST["reference_population"]["n_models"]
    for task, entry in MANIFEST["tasks"].items():
        models, item_ids, values = _responses(task)
        lines = (WORLD / entry["path"]).read_text(encoding="utf-8").splitlines()
        assert item_ids == [json.loads(line)["id"] for line in lines]
        assert values.shape == (n_models, entry["n_items"]) and set(np.unique(values)) <= {0, 1}
        for name in SHIPPED:
            row = values[models.index(name)]
            assert row.mean() == pytest.approx(MANIFEST["accuracy"][name][task], abs=1e-3)


def test_each_endpoint_carries_a_skill_the_target_needs() -> None:
    acc = MANIFEST["accuracy"]
    # no shipped model solves the Italian target (an operation AND Italian answers)
    assert max(acc[m]["math_it"] for m in SHIPPED) < 0.3
    assert acc["lang_it"]["qa_it"] > 0.9 > acc["base"]["qa_it"]
    # each operation endpoint beats the base on English math (both operations mixed)
    assert min(acc["add_en"]["math_en"], acc["mul_en"]["math_en"]) > acc["base"]["math_en"]


def test_tasks_are_the_generator_s_items() -> None:
    sys.path.insert(0, str(WORLD))
    from build_xl import TASK_SEED
    from xl_data import build_tasks

    tasks = build_tasks(TASK_SEED)
    for name, entry in MANIFEST["tasks"].items():
        lines = (WORLD / entry["path"]).read_text(encoding="utf-8").splitlines()
        assert [ex.prompt() for ex in tasks[name].examples] == [
            json.loads(line)["prompt"] for line in lines
        ]


def _build(out: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, str(WORLD / "build_xl.py"), "--quick", "--out", str(out)],
        env=env, capture_output=True, text=True, check=False, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.slow
def test_quick_build_is_reproducible_byte_for_byte(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _build(a)
    _build(b)
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert any(f.suffix == ".safetensors" for f in files)
    for rel in files:
        if rel.name == "world.json":  # the build time differs; everything else must not
            ja, jb = (json.loads((d / rel).read_text(encoding="utf-8")) for d in (a, b))
            ja.pop("build_seconds"), jb.pop("build_seconds")
            assert ja == jb
        else:
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), str(rel)


def test_the_xl_study_config_searches_one_weight_per_endpoint_per_layer() -> None:
    from optuna_merge3.config import load_config
    from optuna_merge3.merging import MergeSpace

    config = load_config(ROOT / "studies" / "tiny_world_xl.toml")
    space = MergeSpace.from_config(config.merge)
    assert len(space.param_names) == len(ENDPOINTS) * MANIFEST["model_shape"]["num_hidden_layers"]
    assert "weight/mul_en/block3" in space.param_names
    assert [t.name for t in config.tasks] == ["math_it", "math_en"]
