"""A reference population's correctness as a models x items matrix: assembled from per-model
tables, checked against a task, written as the project's responses CSV, summarised."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["ModelTable", "ResponseMatrix", "assemble", "write_responses"]


@dataclass
class ModelTable:
    """One model's answers read from one file: item id -> 1.0, 0.0 or NaN (missing)."""

    model: str
    source: str
    scores: dict[str, float] = field(default_factory=dict)


@dataclass
class ResponseMatrix:
    """models x items correctness (float 0/1, NaN = missing) with the file each model came from."""

    models: list[str]
    item_ids: list[str]
    values: np.ndarray
    sources: list[str]

    def summary(self) -> str:
        """A few lines for the user: shape, coverage, accuracies."""
        observed = ~np.isnan(self.values)
        per_model = observed.sum(axis=1)
        acc = np.nanmean(np.where(observed, self.values, np.nan), axis=1)
        empty = int((~observed.any(axis=0)).sum())
        lines = [
            f"{len(self.models)} models x {len(self.item_ids)} items, "
            f"{observed.mean():.1%} of the cells observed "
            f"({int(observed.sum())} of {observed.size})",
            f"items per model: {int(per_model.min())} to {int(per_model.max())}; "
            f"accuracy per model: {np.nanmin(acc):.3f} to {np.nanmax(acc):.3f} "
            f"(mean {np.nanmean(acc):.3f})",
        ]
        if empty:
            lines.append(f"{empty} item(s) answered by no model")
        return "\n".join(lines)


def assemble(tables: Sequence[ModelTable], task_ids: Sequence[str] | None = None,
             task_name: str = "the task") -> ResponseMatrix:
    """Join per-model tables into one matrix.

    A model read from several files is one row when the files answer disjoint items (metabench's
    v1 + v2 halves of a benchmark); the same answer given twice is an error. With ``task_ids``
    the columns are the task's items in task order, and an item the task does not have, or a
    task item no file answers, is an error.

    Raises:
        ValueError: naming the file and what is wrong.
    """
    if not tables:
        raise ValueError("no model read from the given files")
    rows: dict[str, dict[str, float]] = {}
    origin: dict[tuple[str, str], str] = {}  # (model, item) -> file
    sources: dict[str, list[str]] = {}
    for table in tables:
        if table.source in sources.get(table.model, []):
            raise ValueError(f"{table.source}: model {table.model!r} appears twice in the input")
        row = rows.setdefault(table.model, {})
        for item, value in table.scores.items():
            first = origin.setdefault((table.model, item), table.source)
            if first != table.source:
                raise ValueError(
                    f"{table.source}: model {table.model!r} appears twice: {first} also answers "
                    f"item {item!r}; keep one file per model (or name them apart with NAME=FILE)"
                )
            row[item] = value
        sources.setdefault(table.model, []).append(table.source)
    seen: dict[str, None] = {}
    for table in tables:
        seen.update(dict.fromkeys(table.scores))
    item_ids = list(seen)
    if task_ids is not None:
        known = set(task_ids)
        for table in tables:
            alien = [i for i in table.scores if i not in known]
            if alien:
                raise ValueError(
                    f"{table.source}: {len(alien)} item id(s) are not items of {task_name}, "
                    f"e.g. {alien[:3]} (its ids look like {list(task_ids)[:3]})"
                )
        unanswered = [i for i in task_ids if i not in seen]
        if unanswered:
            raise ValueError(
                f"no file answers {len(unanswered)} of the {len(task_ids)} items of {task_name}, "
                f"e.g. {unanswered[:3]}"
            )
        item_ids = list(task_ids)
    column = {item: k for k, item in enumerate(item_ids)}
    values = np.full((len(rows), len(item_ids)), np.nan)
    for m, row in enumerate(rows.values()):
        for item, value in row.items():
            values[m, column[item]] = value
    return ResponseMatrix(list(rows), item_ids, values,
                          [" + ".join(sources[name]) for name in rows])


def write_responses(path: str | Path, models: Sequence[str], item_ids: Sequence[str],
                    values: np.ndarray) -> Path:
    """Write the project's responses CSV: header ``model,<item ids>``, one row per model, cells
    ``0`` / ``1`` / empty (missing). ``.gz`` is gzipped with a fixed mtime (byte-identical
    rebuilds, no file name in the header). Written to a temporary name and renamed, so a failure leaves no half file."""
    path = Path(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["model", *item_ids])
    for name, row in zip(models, np.asarray(values, dtype=float), strict=True):
        writer.writerow([name, *("" if np.isnan(v) else str(int(v)) for v in row)])
    data = buf.getvalue().encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        if path.suffix == ".gz":
            with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as gz:
                gz.write(data)
        else:
            raw.write(data)
    tmp.replace(path)
    return path
