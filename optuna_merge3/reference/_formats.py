"""Pure parsers of the public per-item correctness formats into :class:`ModelTable` rows.

Each takes what its reader decoded (JSON records, CSV rows, arrays) and the file's name for the
error messages; nothing here touches the disk.

- lm-eval ``--log_samples`` (``samples_<task>_<date>.jsonl``): one JSON object per document and
  filter, with ``doc_id``, ``doc``, ``target``, ``filtered_resps``, ``filter``, ``metrics`` (the
  names of the metric keys) and each metric's value (``exact_match``, ``acc``, ``acc_norm``...).
- Open LLM Leaderboard (v1) "details" (lighteval's ``Detail`` rows, one parquet per model and
  task): ``example``, ``full_prompt``, ``predictions``, ``gold`` ... and the per-item metrics,
  either as a ``metrics`` struct (``{"acc": 1.0, "acc_norm": 0.0}``) or as top-level columns.
  Items are the 1-based row numbers, as metabench and tinyBenchmarks number them.
- metabench CSV: the reduced matrices (``model,<item ids>``, ``NA`` for missing, what
  ``write.csv`` of an R data frame gives) or the scraped long table (``source,item,correct``).
- tinyBenchmarks matrix: ``correctness`` of shape (items, models) with the model names.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ._matrix import ModelTable

__all__ = [
    "details_model_name",
    "leaderboard_details_table",
    "lm_eval_samples_table",
    "matrix_tables",
    "metabench_tables",
    "pick_metric",
]

# Keys of an lm-eval sample that are not per-item metrics.
_SAMPLE_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter",
                "metrics", "doc_hash", "prompt_hash", "target_hash"}
# lighteval Detail fields that hold numbers but are not metrics.
_DETAIL_NUMBERS = {"num_effective_few_shots", "num_asked_few_shots", "gold_index", "truncated",
                   "padded"}
_MISSING = {"", "NA", "NaN", "nan", "null", "None"}
_TRUE, _FALSE = {"1", "1.0", "TRUE", "True", "true"}, {"0", "0.0", "FALSE", "False", "false"}
# "open-llm-leaderboard/details_org__model", "datasets--open-llm-leaderboard--details_org__model"
_DETAILS_NAME = re.compile(r"details_(?P<org>[^/]+?)__(?P<model>[^/]+)$")


def details_model_name(text: str) -> str | None:
    """``org/model`` from a leaderboard details dataset name or path component, else None."""
    match = _DETAILS_NAME.search(text)
    return f"{match['org']}/{match['model']}" if match else None


def _binary(value: Any) -> float | None:
    """1.0 / 0.0 for a correct / wrong answer, NaN for a missing one, None if not binary."""
    if value is None:
        return math.nan
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        if math.isnan(value):
            return math.nan
        return float(value) if value in (0, 1) else None
    return None


def pick_metric(candidates: Sequence[str], values: dict[str, list[Any]], metric: str | None,
                source: str) -> str:
    """The per-item metric to read: ``metric`` if given, else the only 0/1-valued candidate."""
    if metric is not None:
        if metric not in candidates:
            raise ValueError(f"{source}: no metric {metric!r}; it has {sorted(candidates)}")
        return metric
    binary = [m for m in candidates if all(_binary(v) is not None for v in values[m])]
    if len(binary) == 1:
        return binary[0]
    if not binary:
        raise ValueError(f"{source}: no 0/1 per-item metric among {sorted(candidates)}; "
                         "IRT needs correct / wrong per item")
    raise ValueError(f"{source}: several 0/1 per-item metrics {sorted(binary)}; choose one "
                     "with --metric")


def _scores(items: list[str], raw: list[Any], metric: str, source: str,
            where: Sequence[str]) -> dict[str, float]:
    scores: dict[str, float] = {}
    for item, value, place in zip(items, raw, where, strict=True):
        number = _binary(value)
        if number is None:
            raise ValueError(f"{source}: {place}: {metric} = {value!r} is not 0 or 1 (IRT needs "
                             "correct / wrong per item)")
        if item in scores:
            raise ValueError(f"{source}: {place}: item {item!r} appears twice")
        scores[item] = number
    return scores


def lm_eval_samples_table(records: Sequence[tuple[int, dict]], source: str, model: str, *,
                          metric: str | None = None, filter_name: str | None = None,
                          item_key: str = "doc_id") -> ModelTable:
    """One model's answers from the lines of an lm-eval ``samples_<task>_<date>.jsonl``.

    Args:
        records: (line number, decoded JSON object) per line.
        source: the file, for messages.
        model: the model's name.
        metric: the metric key to read (default: the only 0/1 metric of the samples).
        filter_name: the lm-eval filter to read (each document is logged once per filter, e.g.
            GSM8K's ``strict-match`` and ``flexible-extract``); default: the only one.
        item_key: ``doc_id`` (the document's index in the task's split) or ``doc.<field>``.
    """
    if not records:
        raise ValueError(f"{source}: no samples in the file")
    for line, rec in records:
        if not isinstance(rec, dict) or "doc_id" not in rec:
            raise ValueError(f"{source}:{line}: not an lm-eval --log_samples line (no 'doc_id')")
    filters = list(dict.fromkeys(rec.get("filter", "none") for _, rec in records))
    if filter_name is None and len(filters) > 1:
        raise ValueError(f"{source}: samples of several filters {filters}; choose one with "
                         "--filter")
    chosen = filter_name or filters[0]
    if chosen not in filters:
        raise ValueError(f"{source}: no filter {chosen!r}; it has {filters}")
    records = [(line, rec) for line, rec in records if rec.get("filter", "none") == chosen]
    names = records[0][1].get("metrics") or [k for k in records[0][1] if k not in _SAMPLE_KEYS]
    values = {m: [rec.get(m) for _, rec in records] for m in names}
    name = pick_metric(list(names), values, metric, source)
    items = [_item_id(rec, item_key, source, line) for line, rec in records]
    where = [f"line {line}" for line, _ in records]
    return ModelTable(model, source, _scores(items, values[name], name, source, where))


def _item_id(rec: dict, key: str, source: str, line: int) -> str:
    if key == "doc_id":
        return str(rec["doc_id"])
    field_name = key.removeprefix("doc.")
    doc = rec.get("doc")
    if not key.startswith("doc.") or not isinstance(doc, dict) or field_name not in doc:
        raise ValueError(f"{source}:{line}: no item id {key!r} (use doc_id or doc.<field>; the "
                         f"doc has {sorted(doc) if isinstance(doc, dict) else 'no fields'})")
    return str(doc[field_name])


def leaderboard_details_table(rows: Sequence[dict], source: str, model: str, *,
                              metric: str | None = None) -> ModelTable:
    """One model's answers from an Open LLM Leaderboard (v1) details file (rows as dicts)."""
    if not rows:
        raise ValueError(f"{source}: no rows in the details file")
    first = rows[0]
    if "doc_id" in first and "filtered_resps" in first:
        raise ValueError(f"{source}: an lm-eval samples file (leaderboard v2 details); use "
                         "--format lm-eval-samples")
    nested = isinstance(first.get("metrics"), dict)
    if nested:
        names = list(first["metrics"])
        values = {m: [(r.get("metrics") or {}).get(m) for r in rows] for m in names}
    else:
        names = [k for k, v in first.items() if k not in _DETAIL_NUMBERS
                 and isinstance(v, (int, float, bool, np.number))]
        values = {m: [r.get(m) for r in rows] for m in names}
    if not names:
        raise ValueError(f"{source}: no per-item metrics (neither a 'metrics' column nor metric "
                         f"columns such as acc / acc_norm); columns: {sorted(first)}")
    name = pick_metric(names, values, metric, source)
    items = [str(k) for k in range(1, len(rows) + 1)]
    where = [f"row {k}" for k in items]
    return ModelTable(model, source, _scores(items, values[name], name, source, where))


def _cell(value: str, source: str, line: int, item: str) -> float:
    text = value.strip()
    if text in _MISSING:
        return math.nan
    if text in _TRUE:
        return 1.0
    if text in _FALSE:
        return 0.0
    raise ValueError(f"{source}: line {line}, item {item!r}: {value!r} is not 0, 1 or NA")


def metabench_tables(rows: Sequence[list[str]], source: str) -> list[ModelTable]:
    """Models from a metabench CSV: wide (``model,<item ids>``, optionally after R's row-name
    column) or long (``source,item,correct``, metabench's scraped tables)."""
    if not rows or not rows[0]:
        raise ValueError(f"{source}: empty CSV")
    header = [h.strip() for h in rows[0]]
    if header[:3] == ["source", "item", "correct"]:
        return _metabench_long(rows, source)
    skip = 1 if header[:2] == ["", "model"] else 0
    if header[skip] != "model":
        raise ValueError(f"{source}: not a metabench CSV: expected a header 'model,<item ids>' "
                         f"or 'source,item,correct', got {header[:3]}")
    items = header[skip + 1:]
    if len(set(items)) != len(items):
        raise ValueError(f"{source}: item ids repeat in the header")
    tables: dict[str, ModelTable] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{source}: line {line}: {len(row)} fields, expected {len(header)}")
        name = row[skip]
        if name in tables:
            raise ValueError(f"{source}: line {line}: model {name!r} appears twice")
        tables[name] = ModelTable(name, source, {
            item: _cell(v, source, line, item) for item, v in zip(items, row[skip + 1:],
                                                                   strict=True)})
    return list(tables.values())


def _metabench_long(rows: Sequence[list[str]], source: str) -> list[ModelTable]:
    tables: dict[str, ModelTable] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        if len(row) < 3:
            raise ValueError(f"{source}: line {line}: expected source,item,correct")
        name, item, value = row[0], row[1].strip(), row[2]
        table = tables.setdefault(name, ModelTable(name, source))
        if item in table.scores:
            raise ValueError(f"{source}: line {line}: model {name!r} answers item {item!r} twice")
        table.scores[item] = _cell(value, source, line, item)
    return list(tables.values())


def matrix_tables(correctness: Any, models: Iterable[Any], source: str,
                  item_ids: Sequence[str] | None = None) -> list[ModelTable]:
    """Models from a tinyBenchmarks-style matrix: ``correctness`` (n_items, n_models), as
    tinyBenchmarks stores ``data['data'][scenario]['correctness']``; items are the 1-based row
    numbers (the leaderboard details rows) unless ``item_ids`` are given. Leaderboard dataset
    names (``open-llm-leaderboard/details_org__model``) become ``org/model``."""
    arr = np.asarray(correctness, dtype=float)
    names = [str(m) for m in models]
    if arr.ndim != 2 or arr.shape[1] != len(names):
        raise ValueError(f"{source}: correctness must be (items, models) = (?, {len(names)}), "
                         f"got shape {arr.shape}")
    items = [str(i) for i in item_ids] if item_ids is not None else [
        str(k) for k in range(1, arr.shape[0] + 1)]
    if len(items) != arr.shape[0]:
        raise ValueError(f"{source}: {len(items)} item ids for {arr.shape[0]} rows")
    bad = ~np.isnan(arr) & (arr != 0) & (arr != 1)
    if bad.any():
        i, m = np.argwhere(bad)[0]
        raise ValueError(f"{source}: correctness[{i}, {m}] = {arr[i, m]:g} is not 0 or 1 "
                         "(IRT needs correct / wrong per item; binarize it first)")
    tables: list[ModelTable] = []
    for m, name in enumerate(names):
        label = details_model_name(name) or name
        if any(t.model == label for t in tables):
            raise ValueError(f"{source}: model {label!r} appears twice")
        tables.append(ModelTable(label, source, dict(zip(items, arr[:, m].tolist(),
                                                         strict=True))))
    return tables
