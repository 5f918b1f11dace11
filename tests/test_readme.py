"""The README's Quickstart and its Python API block stay true."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def _blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S)


def test_quickstart_holds_exactly_the_two_commands() -> None:
    section = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)```", section, flags=re.S)[0].strip().splitlines()
    assert len(commands) == 2
    assert "optuna-merge3 run studies/tiny_world.toml" in commands[0]
    assert "pip install torch==2.13.0" in commands[0]  # the CPU build first
    assert commands[1] == "python -m pytest -q"
    assert "python -m pytest -q" in (ROOT / ".ci" / "run").read_text()


def test_python_api_from_its_parts_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The block that wires the parts by hand, run in a scratch copy of ``studies/``."""
    (block,) = [b for b in _blocks("python") if "Merge3Objective(" in b]
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "tiny_world").symlink_to(ROOT / "studies" / "tiny_world")
    (studies / "tiny_world.toml").write_text((ROOT / "studies" / "tiny_world.toml").read_text())
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - our own README
    study = namespace["study"]
    assert len(study.trials) == 8
    assert study.metric_names == ["math_it (gmpirt)", "qa_en (gmpirt)"]
    complete = [t for t in study.trials if t.values is not None]
    assert len(complete) >= 6  # NSGA-II may repeat a genotype; repeats are pruned
    assert all(0.0 <= v <= 1.0 and not math.isnan(v) for t in complete for v in t.values)
    assert (tmp_path / "runs" / "tiny_world" / "estimate").is_dir()  # the Estimate cache
