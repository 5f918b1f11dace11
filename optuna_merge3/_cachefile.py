"""On-disk cache files: written atomically, and a corrupt one is recomputed, not fatal.

Every cache under ``out_dir/estimate`` (IRT fits, endpoint correctness) goes through here, so a
worker killed mid-write, two workers writing the same entry, or a disk that filled up leave
either the old file or the new one, never half of one; and a file that is damaged anyway (copied
halfway, truncated by hand) costs one recomputation and a warning instead of a traceback on every
later run.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

__all__ = ["atomic_path", "read_or_none", "write_npz", "write_text"]

_logger = logging.getLogger(__name__)

T = TypeVar("T")

# What reading a damaged .npz / .json raises: a truncated zip (BadZipFile, EOFError), a bad CRC
# (BadZipFile), a missing array or key (KeyError), bad JSON (JSONDecodeError is a ValueError),
# a missing sidecar (OSError).
_CORRUPT = (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A fresh temporary file next to ``path`` that replaces ``path`` when the block succeeds.

    The temporary name is unique per writer, so concurrent writers of one entry never share it;
    ``os.replace`` is atomic on POSIX and Windows. On an exception the temporary file is removed
    and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_npz(path: str | Path, **arrays: Any) -> None:
    """``np.savez`` to exactly ``path`` (no added suffix), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)


def write_text(path: str | Path, text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_or_none(path: str | Path, read: Callable[[Path], T], what: str = "cache file") -> T | None:
    """``read(path)``, or None when ``path`` is missing or cannot be read (then with a warning
    naming the file and the error, so the caller recomputes and overwrites it)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        return read(path)
    except _CORRUPT as exc:
        _logger.warning("%s %s is unreadable (%s: %s); recomputing it", what, path,
                        type(exc).__name__, exc)
        return None
