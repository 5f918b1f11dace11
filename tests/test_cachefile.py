"""The cache-file helper every on-disk cache uses: atomic writes, corrupt files read as missing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from optuna_merge3._cachefile import atomic_path, read_or_none, write_npz, write_text


def _read(path: Path) -> np.ndarray:
    with np.load(path) as data:
        return data["x"]


def test_write_npz_keeps_the_exact_name_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "entry.cache"
    write_npz(path, x=np.arange(5))
    np.testing.assert_array_equal(_read(path), np.arange(5))
    assert [p.name for p in path.parent.iterdir()] == ["entry.cache"]


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "note.json"
    write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["note.json"]


def test_two_writers_of_one_entry_get_their_own_temporary(tmp_path: Path) -> None:
    path = tmp_path / "e.npz"
    with atomic_path(path) as first, atomic_path(path) as second:
        assert first != second
        first.write_text("a")
        second.write_text("b")
    assert path.read_text() == "a"  # the outer block finished last


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
def test_a_damaged_file_reads_as_missing_with_a_warning(
    damage: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "e.npz"
    write_npz(path, x=np.arange(1000))
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "empty": b"",
                      "garbage": b"not a zip file at all"}[damage])
    with caplog.at_level(logging.WARNING, logger="optuna_merge3._cachefile"):
        assert read_or_none(path, _read, "test cache file") is None
    (record,) = caplog.records
    assert f"test cache file {path} is unreadable (" in record.getMessage()
    assert record.getMessage().endswith("recomputing it")


def test_a_missing_file_reads_as_missing_silently(tmp_path: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    assert read_or_none(tmp_path / "none.npz", _read) is None
    assert not caplog.records
