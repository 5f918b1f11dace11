"""Extract and Estimate: everything a study computes once, before its first trial.

For each task: load the items, fit (or load) the IRT item parameters on the task's reference
population, evaluate every endpoint on the FULL task (cached on disk), fit each endpoint's
ability, and draw the evaluation subset. The result, :class:`FitnessSetup`, is what
:class:`~optuna_merge3.objective.Merge3Objective` needs per trial. Everything is cached under
``<out_dir>/estimate/`` so a resumed study or a second worker reuses it.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optuna_merge3._cachefile import read_or_none
from optuna_merge3.config import ConfigError, StudyConfig, TaskConfig
from optuna_merge3.irt import DEFAULT_LAMBDA_CONSTRAINT

__all__ = [
    "FitnessSetup",
    "TaskSetup",
    "check_inputs",
    "correctness_cache",
    "load_reference_responses",
    "load_task",
    "prepare_fitness",
]

_logger = logging.getLogger(__name__)

Progress = Callable[[str], None]


@dataclass
class TaskSetup:
    """What one task contributes to every trial's fitness."""

    config: TaskConfig
    task: Any  # optuna_merge3.evaluation.Task
    irt: Any  # optuna_merge3.irt.IRTParams
    subset: Any  # optuna_merge3.irt.Subset
    endpoint_correct: np.ndarray  # (n_endpoints, n_items) bool, full data
    endpoint_abilities: np.ndarray  # (n_endpoints, d)


@dataclass
class FitnessSetup:
    """The Estimate step's output for all tasks, in config order."""

    endpoint_names: list[str]
    tasks: list[TaskSetup]
    seconds: float
    lambda_constraint: str = DEFAULT_LAMBDA_CONSTRAINT  # [irt], for the merge-aware estimators

    def summary(self, details: bool = False) -> dict[str, Any]:
        """A JSON-able digest per task: subset item ids, IRT dimension and keys, endpoint
        accuracies; with ``details`` (the study's ``estimate.json`` artifact) also the IRT fit
        statistics, the subset weights and each endpoint's ability."""
        out = {}
        for t in self.tasks:
            entry: dict[str, Any] = {
                "subset_item_ids": [t.task.items[i].id for i in t.subset.indices],
                "subset_method": t.subset.method,
                "irt_d": int(t.irt.alpha.shape[1]),
                "irt_fingerprint": t.irt.meta.get("fingerprint"),
                "irt_cache_key": t.irt.meta.get("cache_key"),
                "endpoint_accuracy": dict(
                    zip(
                        self.endpoint_names,
                        t.endpoint_correct.mean(axis=1).round(4).tolist(),
                        strict=True,
                    )
                ),
            }
            if details:
                entry.update(
                    estimator=t.config.estimator,
                    n_items=len(t.task.items),
                    subset_weights=np.asarray(t.subset.weights).round(6).tolist(),
                    irt_fit={k: v for k, v in t.irt.meta.items() if k != "subset_of"},
                    endpoint_ability=dict(zip(
                        self.endpoint_names, t.endpoint_abilities.round(6).tolist(), strict=True)),
                )
            out[t.config.name] = entry
        return out


def load_reference_responses(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """Read a reference population's correctness: CSV (optionally gzipped), one row per model.

    Returns:
        (model names, item ids, responses) with responses a float (models x items) array of 0/1
        and NaN for empty or ``NA`` cells (metabench / R's missing value).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: reference responses not found; import public ones with "
                         "`optuna-merge3 reference import` or build them with "
                         "`optuna-merge3 reference build CONFIG --task NAME`")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rt", encoding="utf-8", newline="") as fh:
            rows = list(csv.reader(fh))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:  # e.g. a .gz that is not gzip
        raise ValueError(f"{path}: cannot read it as a CSV file: {exc}") from exc
    if len(rows) < 2 or not rows[0] or rows[0][0] != "model":
        raise ValueError(f"{path}: expected a header starting with 'model' and at least one row")
    item_ids = rows[0][1:]
    models, values = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(item_ids) + 1:
            raise ValueError(f"{path}: line {line}: {len(row)} fields, expected {len(item_ids) + 1}")
        models.append(row[0])
        try:
            values.append([np.nan if v.strip() in ("", "NA") else float(v) for v in row[1:]])
        except ValueError as exc:
            raise ValueError(f"{path}: line {line}: {exc}") from exc
    responses = np.asarray(values, dtype=float)
    bad = ~np.isnan(responses) & (responses != 0) & (responses != 1)
    if bad.any():
        raise ValueError(f"{path}: responses must be 0, 1 or empty")
    return models, item_ids, responses


def load_task(task_config: TaskConfig, lm_eval_backend: str = "harness",
              tokenizer: Any = None) -> Any:
    """The task of one ``[[tasks]]`` entry: a JSONL / CSV file (``path``) or an lm-eval task
    (``lm_eval``, evaluated through ``lm_eval_backend``), with the entry's ``max_new_tokens`` /
    ``stop`` / ``chat_template`` overrides applied. An lm-eval task renders its chat template at
    load, so it needs the study's ``tokenizer`` then (without one it is rendered plain: same
    items and ids, which is all :func:`check_inputs` looks at)."""
    from dataclasses import replace

    from optuna_merge3 import evaluation

    if task_config.lm_eval is None:
        task = evaluation.load_task(task_config.path)
        overrides = {k: v for k, v in (("max_new_tokens", task_config.max_new_tokens),
                                       ("stop", task_config.stop and tuple(task_config.stop)))
                     if v is not None}
        if overrides:
            task.generation = replace(task.generation, **overrides)
        if task_config.chat_template is not None:
            task.use_chat_template = task_config.chat_template
        return task
    from optuna_merge3.evaluation._lm_eval import load_lm_eval_task

    try:
        return load_lm_eval_task(
            task_config.lm_eval, include=task_config.lm_eval_include,
            data_files=task_config.data_files, metric=task_config.lm_eval_metric,
            max_new_tokens=task_config.max_new_tokens, stop=task_config.stop,
            task_name=task_config.name, backend=lm_eval_backend,
            chat_template_tokenizer=tokenizer if task_config.chat_template else None)
    except ValueError as exc:
        raise ValueError(f"task {task_config.name!r}: {exc}") from exc


def check_inputs(config: StudyConfig) -> list[Any]:
    """Read every task and reference file of ``config`` and check that they fit together.

    Cheap (no model is loaded): the runner calls it before it opens or creates the study, so a
    bad task file never leaves a half-made study behind.

    Returns:
        The loaded tasks, in config order.

    Raises:
        ValueError: naming the task, the file and the problem (no items, ``n_items`` larger than
            the task, reference item ids that do not cover the task's, malformed lines).
    """
    tasks = []
    for task_config in config.tasks:
        task = load_task(task_config, config.evaluation.lm_eval_backend)
        _check_task(task_config, task)
        if task_config.irt_params is not None:
            _item_order(task_config, task, _load_irt_params(task_config.irt_params).item_ids)
            tasks.append(task)
            continue
        if task_config.reference is None:
            raise ValueError(
                f"task {task_config.name!r}: no reference population: set reference = "
                "\"<responses CSV>\" (import public results with `optuna-merge3 reference "
                f"import` or build them with `optuna-merge3 reference build CONFIG --task "
                f"{task_config.name}`) or irt_params = \"<IRTParams.save file>\""
            )
        models, item_ids, _ = load_reference_responses(task_config.reference)
        _item_order(task_config, task, item_ids)
        if config.irt.n_dims >= len(models):
            raise ConfigError(
                f"{config.source or '<config>'}: irt.n_dims: {config.irt.n_dims} latent "
                f"dimensions but task {task_config.name!r} has only {len(models)} reference "
                f"models ({task_config.reference}); use n_dims < {len(models)}"
            )
        tasks.append(task)
    return tasks


def _check_task(task_config: TaskConfig, task: Any) -> None:
    n = len(task.items)
    if n == 0:
        raise ValueError(f"task {task_config.name!r}: {_source(task_config)} has no items")
    if task_config.n_items > n:
        raise ValueError(
            f"task {task_config.name!r}: n_items = {task_config.n_items} but "
            f"{_source(task_config)} has only {n} items; lower n_items to at most {n}"
        )


def _source(task_config: TaskConfig) -> str:
    return str(task_config.path) if task_config.path else f"lm_eval task {task_config.lm_eval!r}"


def _item_order(task_config: TaskConfig, task: Any, source_ids: list[str]) -> np.ndarray:
    """Reference column (or pre-fitted item) of each task item, by ``align`` (id / position)."""
    from optuna_merge3.reference import align_items

    source = task_config.irt_params or task_config.reference
    return align_items(source_ids, [item.id for item in task.items], task_config.align,
                       source=str(source),
                       task=f"task {task_config.name!r} ({_source(task_config)})")


def _load_irt_params(path: Path) -> Any:
    from optuna_merge3 import irt

    try:
        return irt.IRTParams.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:  # json errors are ValueErrors
        raise ValueError(f"{path}: cannot read pre-fitted item parameters (IRTParams.save: npz "
                         f"with alpha and beta, and its .json sidecar): {exc}") from exc


def correctness_cache(config: StudyConfig) -> Any:
    """The study's on-disk :class:`~optuna_merge3.evaluation.CorrectnessCache` (full-task
    correctness keyed by model weights, items and scoring: endpoints, and fronts checked later)."""
    from optuna_merge3 import evaluation

    return evaluation.CorrectnessCache(config.out_dir / "estimate" / "correctness")


def prepare_fitness(
    config: StudyConfig,
    merger: Any,
    model: Any,
    tokenizer: Any,
    progress: Progress | None = None,
) -> FitnessSetup:
    """Run Extract and Estimate for every task of ``config`` (cached under ``out_dir``).

    Args:
        config: the validated study config.
        merger: the study's :class:`~optuna_merge3.merging.InMemoryMerger`; endpoints are
            evaluated by writing each one into ``model`` (no second copy of the weights).
        model: the live model trials write into.
        tokenizer: its tokenizer.
        progress: optional callback receiving one line per step (the CLI shows it).
    """
    from optuna_merge3 import evaluation, irt

    say = progress or (lambda msg: _logger.info(msg))
    start = time.perf_counter()
    cache_dir = config.out_dir / "estimate"
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = correctness_cache(config)
    endpoint_names = list(config.merge.endpoints)
    batch_size = config.evaluation.batch_size

    setups = []
    for task_index, task_config in enumerate(config.tasks):
        task = load_task(task_config, config.evaluation.lm_eval_backend, tokenizer)
        _check_task(task_config, task)
        params = _fit_or_load_irt(config, task_config, task, cache_dir, say)
        rows = []
        for name in endpoint_names:
            merger.write_endpoint(name, model)
            fingerprint = evaluation.model_fingerprint(model)
            cached = cache.get(fingerprint, task)
            if cached is None:
                say(f"[estimate] {task_config.name}: evaluating endpoint {name} on all "
                    f"{len(task.items)} items")
                cached = evaluation.evaluate(model, tokenizer, task, batch_size=batch_size).correct
                cache.put(fingerprint, task, cached)
            rows.append(np.asarray(cached, dtype=bool))
        endpoint_correct = np.stack(rows)
        abilities = np.stack([irt.fit_ability(params, row.astype(float)) for row in endpoint_correct])
        # Each task gets its own stream so adding a task does not change another task's subset.
        subset = irt.extract_subset(
            config.irt.extraction,
            n_items=len(task.items),
            k=task_config.n_items,
            random_state=np.random.default_rng([config.seed, task_index]),
            params=params,
        )
        rates = endpoint_correct.mean(1)
        acc = ", ".join(f"{n}={100 * a:.1f}%" for n, a in zip(endpoint_names, rates, strict=True))
        say(f"[estimate] {task_config.name}: d={params.alpha.shape[1]}, endpoints {acc}, "
            f"subset of {len(subset.indices)} items")
        setups.append(TaskSetup(task_config, task, params, subset, endpoint_correct, abilities))
    return FitnessSetup(endpoint_names, setups, time.perf_counter() - start,
                        config.irt.lambda_constraint)


def _fit_or_load_irt(
    config: StudyConfig, task_config: TaskConfig, task: Any, cache_dir: Path, say: Progress
) -> Any:
    """Fit 2PL item parameters on the reference population once; reuse them afterwards."""
    from optuna_merge3 import irt

    task_ids = [item.id for item in task.items]
    if task_config.irt_params is not None:  # pre-fitted: no fit, no cache
        given = _load_irt_params(task_config.irt_params)
        params = given.subset(_item_order(task_config, task, given.item_ids))
        params.item_ids, params.meta["source"] = task_ids, str(task_config.irt_params)
        say(f"[estimate] {task_config.name}: pre-fitted item parameters from "
            f"{task_config.irt_params} (d={params.n_dims}, align={task_config.align})")
        return params
    models, item_ids, responses = load_reference_responses(task_config.reference)
    responses = responses[:, _item_order(task_config, task, item_ids)]
    # Only what the fit reads: lambda_constraint / extraction must not force a refit.
    digest = hashlib.sha256(responses.tobytes() + json.dumps(
        [task_ids, config.irt.n_dims, config.seed, "population_prior"]).encode()
    ).hexdigest()[:16]
    path = cache_dir / f"irt_{task_config.name}_{digest}.npz"
    cached = read_or_none(path, irt.IRTParams.load, "IRT cache file")
    if cached is not None:
        return cached
    say(f"[estimate] {task_config.name}: fitting 2PL IRT on {len(models)} reference models x "
        f"{len(task_ids)} items")
    params, _ = irt.fit_irt(
        responses, n_dims=config.irt.n_dims, item_ids=task_ids, random_state=config.seed
    )
    params.meta["cache_key"] = digest  # fit_irt's own "fingerprint" (of the responses) stays
    params.save(path)
    return params

