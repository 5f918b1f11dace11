"""Fixtures of the plugin tests (helpers live in ``plugin_helpers``).

``postgres_url`` (a throw-away database on the local server, skipped when none is reachable)
comes from ``tests/conftest.py``; ``pg_study`` adds a unique study name that is deleted after
the test.

The finished study (``tiny_run``) is run once per session with the real CLI
(``optuna-merge3 run``, in process) on the shipped tiny world; tests that need a study with
complete trials copy it (``existing_study``) so that none of them can change another's input.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from plugin_helpers import TinyStudy, copy_study, run_cli, tiny_raw, write_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> TinyStudy:
    """A finished tiny-world study: ``optuna-merge3 run`` with a budget of 4 complete trials."""
    root = tmp_path_factory.mktemp("tiny_run")
    raw = tiny_raw(root / "out")
    config_path = write_config(root / "tiny.toml", raw)
    code, out, err = run_cli("run", config_path)
    assert code == 0, err[-3000:]
    return TinyStudy(config_path, raw, root / "out", output=out)


@pytest.fixture
def existing_study(tiny_run: TinyStudy, tmp_path: Path) -> TinyStudy:
    """A private copy of the finished study."""
    return copy_study(tiny_run, tmp_path)


@pytest.fixture
def pg_study(postgres_url: str) -> Iterator[tuple[str, str]]:
    """(PostgreSQL URL, unique study name); the study is deleted afterwards."""
    name = f"merge3_{uuid.uuid4().hex[:10]}"
    yield postgres_url, name
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=name, storage=postgres_url)
