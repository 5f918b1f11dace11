"""Helpers of the plugin tests: tiny-world study configs in tmp folders, a TOML writer, the CLI
in process, trial snapshots.

A module with a unique name (not ``conftest``): ``tests/`` holds several ``conftest.py`` files, so
``from conftest import ...`` depends on import order, and a spawned worker process imports the
test module again from scratch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import shutil
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
STUDIES = REPO / "studies"
TINY_TOML = STUDIES / "tiny_world.toml"
TINY_RUN_TRIALS = 4

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


# -- configs --------------------------------------------------------------------------------------
def tiny_raw(out_dir: Path, *, n_trials: int = TINY_RUN_TRIALS, name: str = "tiny") -> dict:
    """``studies/tiny_world.toml`` as a dict: paths resolved against ``studies/`` (absolute, so
    the file can live anywhere), ``out_dir`` and the budget replaced."""
    raw = tomllib.loads(TINY_TOML.read_text(encoding="utf-8"))
    raw["study"].update(name=name, out_dir=str(out_dir), n_trials=n_trials)
    merge = raw["merge"]
    merge["base"] = str((STUDIES / merge["base"]).resolve())
    merge["endpoints"] = {k: str((STUDIES / v).resolve()) for k, v in merge["endpoints"].items()}
    for task in raw["tasks"]:
        task["path"] = str((STUDIES / task["path"]).resolve())
        task["reference"] = str((STUDIES / task["reference"]).resolve())
    return raw


def dump_toml(raw: dict) -> str:
    """A small TOML writer for study configs (tables, arrays of tables, scalars, lists)."""
    lines: list[str] = []

    def key(k: str) -> str:
        return k if k.replace("_", "").replace("-", "").isalnum() else json.dumps(k)

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        if isinstance(v, str):
            return json.dumps(v)
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        raise TypeError(f"cannot write {v!r} as TOML")

    def table(header: str, body: dict, array: bool = False) -> None:
        lines.append(f"[[{header}]]" if array else f"[{header}]")
        subtables = {k: v for k, v in body.items() if isinstance(v, dict)}
        for k, v in body.items():
            if not isinstance(v, dict):
                lines.append(f"{key(k)} = {value(v)}")
        lines.append("")
        for k, v in subtables.items():
            table(f"{header}.{key(k)}", v)

    for name, body in raw.items():
        if isinstance(body, list) and all(isinstance(x, dict) for x in body):
            for entry in body:
                table(name, entry, array=True)
        elif isinstance(body, dict):
            table(name, body)
        else:
            raise TypeError(f"top-level {name!r} must be a table")
    return "\n".join(lines)


def write_config(path: Path, raw: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_toml(raw), encoding="utf-8")
    return path


def run_cli(*argv: str) -> tuple[int, str, str]:
    """``optuna-merge3 ARGV`` in process: (exit code, stdout, stderr)."""
    from optuna_merge3.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


# -- studies ---------------------------------------------------------------------------------------
def sqlite_url(out_dir: Path) -> str:
    return f"sqlite:///{(out_dir / 'study.db').resolve()}"


def trial_snapshot(storage: str | optuna.storages.BaseStorage, name: str) -> list[tuple]:
    """Everything a bad input must not change: number, state, values, params, user attrs."""
    study = optuna.load_study(study_name=name, storage=storage)
    return [
        (t.number, t.state.name, t.values, t.params, json.dumps(t.user_attrs, sort_keys=True))
        for t in study.get_trials(deepcopy=False)
    ]


@dataclass
class TinyStudy:
    """A tiny-world study on disk: its config (file and dict), folder and storage."""

    config_path: Path
    raw: dict
    out_dir: Path
    output: str = ""
    _storage: Any = None

    @property
    def name(self) -> str:
        return self.raw["study"]["name"]

    @property
    def storage(self) -> str:
        return sqlite_url(self.out_dir)

    def snapshot(self) -> list[tuple]:
        if self._storage is None:  # one storage object: opening one costs ~0.1 s (alembic)
            self._storage = optuna.storages.RDBStorage(self.storage)
        return trial_snapshot(self._storage, self.name)

    def variant(self, path: Path, **study: Any) -> tuple[Path, dict]:
        """A copy of the config dict (to break), written to ``path`` by the caller."""
        raw = copy.deepcopy(self.raw)
        raw["study"].update(study)
        return path, raw


def copy_study(tiny_run: TinyStudy, root: Path) -> TinyStudy:
    """A copy of the finished study (SQLite file, Estimate cache, artifacts) under ``root``."""
    out_dir = root / "existing"
    shutil.copytree(tiny_run.out_dir, out_dir)
    raw = copy.deepcopy(tiny_run.raw)
    raw["study"]["out_dir"] = str(out_dir)
    study = TinyStudy(write_config(root / "existing.toml", raw), raw, out_dir)
    assert len([t for t in study.snapshot() if t[1] == "COMPLETE"]) == TINY_RUN_TRIALS
    return study


def copy_estimate_cache(tiny_run: TinyStudy, out_dir: Path) -> None:
    """Reuse the finished study's IRT fit and endpoint correctness (same world, same seed)."""
    shutil.copytree(tiny_run.out_dir / "estimate", out_dir / "estimate")


def copy_world(dst: Path) -> Path:
    """``studies/tiny_world.toml`` and the files it names, under ``dst`` (a moved repo)."""
    world = STUDIES / "tiny_world"
    for rel in ("models/base", "models/math_en", "models/lang_it", "tasks", "reference"):
        shutil.copytree(world / rel, dst / "tiny_world" / rel)
    shutil.copy(STUDIES / "tiny_world.toml", dst / "tiny_world.toml")
    return dst / "tiny_world.toml"


# ``python -c HANG_IN_SECOND_TRIAL MARKER run CONFIG ...``: the real CLI, whose second trial's
# merge writes MARKER and then sleeps until the test kills or signals the process.
HANG_IN_SECOND_TRIAL = """
import sys, time
from pathlib import Path
from optuna_merge3.merging import InMemoryMerger

marker, argv = Path(sys.argv[1]), sys.argv[2:]
apply, calls = InMemoryMerger.apply, []

def hanging_apply(self, params, model, seed=0):
    calls.append(params)
    if len(calls) == 2:  # the second trial's merge: tell the test, then wait to be killed
        marker.write_text("in trial")
        time.sleep(600)
    return apply(self, params, model, seed=seed)

InMemoryMerger.apply = hanging_apply
from optuna_merge3.cli import main
sys.exit(main(argv))
"""
