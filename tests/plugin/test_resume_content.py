"""A resume compares content, not names: swapped weights under the same folder name, an edited
reference CSV or another dtype is refused saying what changed; a moved copy still resumes."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
from plugin_helpers import STUDIES, TinyStudy, copy_world, write_config

from optuna_merge3 import study as study_lib
from optuna_merge3.config import load_config
from optuna_merge3.runner import StudyRunner


@pytest.fixture
def moved(existing_study: TinyStudy, tmp_path: Path) -> tuple[Path, dict]:
    """The finished study's config pointing at a private copy of the tiny world."""
    toml = copy_world(tmp_path / "world")
    raw = dict(load_config(toml).raw, study=dict(existing_study.raw["study"]))
    return toml, raw


def _check(toml: Path, raw: dict) -> bool:
    return StudyRunner(write_config(toml.parent / "moved.toml", raw)).check()


def test_a_moved_copy_resumes(moved: tuple[Path, dict]) -> None:
    assert _check(*moved) is True


def test_swapped_endpoint_weights_are_refused(moved: tuple[Path, dict]) -> None:
    toml, raw = moved
    models = toml.parent / "tiny_world" / "models"
    shutil.copy(models / "lang_it" / "model.safetensors", models / "math_en" / "model.safetensors")
    with pytest.raises(study_lib.SignatureMismatchError, match=r"changed: inputs\.endpoints"
                       r"\.math_en: \"[0-9a-f]+\" -> \"[0-9a-f]+\""):
        _check(toml, raw)


def test_an_edited_reference_csv_is_refused(moved: tuple[Path, dict]) -> None:
    toml, raw = moved
    path = toml.parent / "tiny_world" / "reference" / "math_it_responses.csv.gz"
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    row = lines[1].split(",")
    row[1] = "1" if row[1] == "0" else "0"  # one reference answer flipped
    path.write_bytes(gzip.compress("\n".join([lines[0], ",".join(row), *lines[2:]]).encode()))
    with pytest.raises(study_lib.SignatureMismatchError,
                       match=r"changed: tasks\[0\]\.reference_sha: "):
        _check(toml, raw)


def test_another_dtype_is_refused(moved: tuple[Path, dict]) -> None:
    toml, raw = moved
    raw["evaluation"] = dict(raw["evaluation"], dtype="bfloat16")
    with pytest.raises(study_lib.SignatureMismatchError,
                       match=r'changed: dtype added \("bfloat16"\)'):
        _check(toml, raw)


def test_fingerprints_do_not_depend_on_the_path(tmp_path: Path) -> None:
    from optuna_merge3.fingerprint import weights_fingerprint

    models = STUDIES / "tiny_world" / "models"
    shutil.copytree(models / "math_en", tmp_path / "elsewhere")
    assert weights_fingerprint(tmp_path / "elsewhere") == weights_fingerprint(models / "math_en")
    assert weights_fingerprint(models / "lang_it") != weights_fingerprint(models / "math_en")
