"""``import_responses``: read public per-item correctness files into one :class:`ResponseMatrix`.

Thin I/O around the pure parsers of :mod:`._formats`: decoding JSONL / JSON / parquet / CSV /
npz / pickle, naming each file's model, and checking that all files hold one task.
"""

from __future__ import annotations

import csv
import gzip
import json
import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _formats as fmt
from ._matrix import ModelTable, ResponseMatrix, assemble

__all__ = ["FORMATS", "import_responses", "parse_file_spec"]

FORMATS = ("lm-eval-samples", "leaderboard-details", "metabench", "matrix")


def parse_file_spec(spec: str) -> tuple[str | None, Path]:
    """``NAME=PATH`` names the model of ``PATH``; a plain path lets the format name it."""
    if "=" in spec and not Path(spec).exists():
        name, _, path = spec.partition("=")
        return name, Path(path)
    return None, Path(spec)


def import_responses(format: str, files: Sequence[str | Path], *, task: Any = None,  # noqa: A002
                     metric: str | None = None, filter_name: str | None = None,
                     item_key: str = "doc_id", scenario: str | None = None) -> ResponseMatrix:
    """Read ``files`` of one ``format`` (see :data:`FORMATS`) into a models x items matrix.

    Args:
        format: "lm-eval-samples" (``samples_<task>_<date>.jsonl``, one model per file; the model
            is the ``model_name`` of the run's ``results_<date>.json`` next to it, else the
            folder name), "leaderboard-details" (parquet / JSON / JSONL details, one model per
            file, named from its ``details_<org>__<model>`` dataset folder), "metabench" (CSV,
            many models per file) or "matrix" (tinyBenchmarks npz / pickle).
        files: paths, or ``NAME=PATH`` to name a file's model.
        task: an :class:`~optuna_merge3.evaluation.Task`: columns in its item order, items it
            does not have are an error.
        metric: per-item metric key (lm-eval samples, details); default: the only 0/1 one.
            lm-eval's ``<metric>,<filter>`` (as in its results and ``lm_eval_metric``) also
            sets the filter.
        filter_name: lm-eval filter (default: the only one of the file).
        item_key: lm-eval item id: ``doc_id`` or ``doc.<field>``.
        scenario: tinyBenchmarks pickle scenario (e.g. ``harness_arc_challenge_25``).

    Raises:
        ValueError: one line naming the file and what is wrong.
    """
    if format not in FORMATS:
        raise ValueError(f"unknown format {format!r}; valid: {list(FORMATS)}")
    if metric and "," in metric and format == "lm-eval-samples":  # lm-eval's "<metric>,<filter>"
        metric, _, given = metric.partition(",")
        filter_name = filter_name or given
    if not files:
        raise ValueError("no input files")
    _check_one_task(format, [parse_file_spec(str(s))[1] for s in files])
    tables: list[ModelTable] = []
    for spec in files:
        name, path = parse_file_spec(str(spec))
        if not path.is_file():
            raise ValueError(f"{path}: file not found")
        if format == "lm-eval-samples":
            tables.append(fmt.lm_eval_samples_table(
                _read_jsonl(path), str(path), name or _lm_eval_model(path), metric=metric,
                filter_name=filter_name, item_key=item_key))
        elif format == "leaderboard-details":
            tables.append(fmt.leaderboard_details_table(
                _read_details(path), str(path), name or _details_model(path), metric=metric))
        elif format == "metabench":
            tables.extend(_renamed(fmt.metabench_tables(_read_csv(path), str(path)), name, path))
        else:
            tables.extend(_renamed(_read_matrix(path, scenario), name, path))
    task_ids = [item.id for item in task.items] if task is not None else None
    task_name = f"task {task.name!r}" if task is not None else "the task"
    return assemble(tables, task_ids, task_name)


def _one_line(exc: BaseException) -> str:
    """A library's message on one line (the CLI promises one-line errors)."""
    return " ".join(str(exc).split())


def _renamed(tables: list[ModelTable], name: str | None, path: Path) -> list[ModelTable]:
    if name is None:
        return tables
    if len(tables) != 1:
        raise ValueError(f"{path}: NAME=FILE names one model, but the file holds {len(tables)}")
    tables[0].model = name
    return tables


def _open_text(path: Path) -> Any:
    opener = gzip.open if path.suffix == ".gz" else open
    return opener(path, "rt", encoding="utf-8", newline="")


def _read_jsonl(path: Path) -> list[tuple[int, Any]]:
    records = []
    try:
        with _open_text(path) as fh:
            for line, text in enumerate(fh, start=1):
                if text.strip():
                    records.append((line, json.loads(text)))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{line}: invalid JSON: {exc.msg}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON lines: {_one_line(exc)}") from exc
    return records


def _read_details(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError as exc:
            raise ImportError("reading parquet details needs pyarrow: pip install "
                              "'optuna-merge3[parquet]'") from exc
        try:
            return pq.read_table(path).to_pylist()
        except Exception as exc:  # pyarrow raises its own ArrowInvalid on a broken file
            raise ValueError(f"{path}: cannot read it as parquet: {_one_line(exc)}") from exc
    if path.suffix == ".jsonl":
        return [rec for _, rec in _read_jsonl(path)]
    try:
        with _open_text(path) as fh:
            rows = json.load(fh)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read it as JSON: {_one_line(exc)}") from exc
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise ValueError(f"{path}: expected a JSON list of detail rows (objects)")
    return rows


def _read_csv(path: Path) -> list[list[str]]:
    try:
        with _open_text(path) as fh:
            return list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # e.g. a .gz that is not gzip
        raise ValueError(f"{path}: cannot read it as a CSV file: {_one_line(exc)}") from exc


class _NumpyUnpickler(pickle.Unpickler):
    """Only plain containers and numpy arrays: a pickle is code, tinyBenchmarks ships data."""

    _ALLOWED = {("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "_reconstruct"),
                ("numpy._core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar")}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_matrix(path: Path, scenario: str | None) -> list[ModelTable]:
    if path.suffix == ".npz":
        import numpy as np

        try:
            with np.load(path, allow_pickle=False) as data:
                if "correctness" not in data or "models" not in data:
                    raise ValueError(f"{path}: expected arrays 'correctness' (items x models) and "
                                     f"'models', got {sorted(data.files)}")
                items = data["items"].tolist() if "items" in data else None
                return fmt.matrix_tables(data["correctness"], data["models"].tolist(), str(path),
                                         items)
        except (OSError, EOFError) as exc:
            raise ValueError(f"{path}: cannot read it as npz: {_one_line(exc)}") from exc
    try:
        with open(path, "rb") as fh:
            data = _NumpyUnpickler(fh).load()
    except (OSError, EOFError, pickle.UnpicklingError, AttributeError) as exc:
        raise ValueError(f"{path}: cannot read it as a tinyBenchmarks pickle: {_one_line(exc)}") from exc
    if not isinstance(data, dict) or "models" not in data or "data" not in data:
        raise ValueError(f"{path}: expected tinyBenchmarks' {{'models': [...], 'data': "
                         "{scenario: {'correctness': ...}}}")
    scenarios = sorted(data["data"])
    if scenario is None and len(scenarios) == 1:
        scenario = scenarios[0]
    if scenario not in data["data"]:
        raise ValueError(f"{path}: choose a scenario with --scenario; it has {scenarios}")
    return fmt.matrix_tables(data["data"][scenario]["correctness"], data["models"],
                             f"{path} [{scenario}]")


def _lm_eval_model(path: Path) -> str:
    """The model of a samples file: ``model_name`` in the results file of the same run (lm-eval
    writes ``results_<date>.json`` and ``samples_<task>_<date>.jsonl`` with one date), else the
    folder lm-eval named after the model."""
    date = path.name[path.name.rfind("_") + 1:].removesuffix(".gz").removesuffix(".jsonl")
    results = path.with_name(f"results_{date}.json")
    if results.is_file():
        try:
            name = json.loads(results.read_text(encoding="utf-8")).get("model_name")
        except (OSError, json.JSONDecodeError, AttributeError):
            name = None
        if isinstance(name, str) and name:
            return name
    return path.parent.name


def _details_model(path: Path) -> str:
    for part in reversed(path.resolve().parent.parts):
        name = fmt.details_model_name(part)
        if name:
            return name
    return path.parent.name


def _task_of(format: str, path: Path) -> str | None:  # noqa: A002
    """The task in an lm-eval / details file name (``samples_<task>_<date>.jsonl``,
    ``details_<task>_<date>.parquet``), None if the file was renamed."""
    prefix = {"lm-eval-samples": "samples_", "leaderboard-details": "details_"}.get(format)
    name = path.name
    if prefix is None or not name.startswith(prefix) or name.rfind("_") < len(prefix):
        return None
    return name[len(prefix):name.rfind("_")]


def _check_one_task(format: str, paths: list[Path]) -> None:  # noqa: A002
    named = [(p, t) for p in paths if (t := _task_of(format, p)) is not None]
    for path, task in named[1:]:
        if task != named[0][1]:
            raise ValueError(f"{path}: task {task!r}, but {named[0][0]} holds task "
                             f"{named[0][1]!r}; a reference population is one task: import one "
                             "task at a time")
