"""lm-evaluation-harness tasks as fitness tasks: loading (evaluation: ``_lm_eval_run``).

The task's own YAML decides everything about correctness: prompt, few-shot context, target,
generation kwargs, stop sequences, filters and metric. A task loads once
(:func:`load_lm_eval_task`): lm-eval builds every document's requests (so few-shot contexts are
those of a full run and an item's correctness never depends on which subset it is evaluated in),
and the result is an ordinary :class:`~optuna_merge3.evaluation.Task` whose items carry the
rendered prompt and target; ``_lm_eval_run.evaluate_lm_eval`` scores a subset on the live model.

``lm_eval`` is an optional dependency (``pip install 'optuna-merge3[lm-eval]'``), imported only by
these two modules; Hugging Face offline mode is switched on before it loads, so nothing tries the
network.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import string
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from ._task import GenerationConfig, Task, TaskItem

__all__ = ["LM_EVAL_BACKENDS", "load_lm_eval_task"]

_logger = logging.getLogger(__name__)

LM_EVAL_BACKENDS = ("harness", "generate")
# benchmarks/lm_eval_backends.py measured no consistent speed difference (two runs, within the
# shared machine's noise) and identical answers, so the default is lm-eval's own code path: its
# exact semantics (context truncation, sampling tasks, thinking tokens), nothing of ours to keep
# in step. "generate" is there for its OOM back-off (HFLM with a fixed batch size raises).
DEFAULT_BACKEND = "harness"
# simple_evaluate's default few-shot seed (lm_eval.utils.DEFAULT_OTHER_SEED): the same contexts
# as a plain `lm_eval --tasks NAME` run.
FEWSHOT_SEED = 1234
_DATA_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass
class LmEvalSource:
    """The lm-eval side of a loaded task (kept in ``Task.meta["lm_eval_source"]``)."""

    task: Any  # lm_eval.api.task.ConfigurableTask
    requests: list[list[Any]]  # per document, its lm_eval Instances in request order
    filter_name: str
    metric: str

    @property
    def output_type(self) -> str:
        return self.task.OUTPUT_TYPE


def _import_lm_eval() -> Any:
    """Import lm_eval in offline mode, or say which extra installs it."""
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        os.environ[var] = "1"
    # Flags read at import time: set them too when the libraries are already loaded.
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].constants.HF_HUB_OFFLINE = True
    if "datasets" in sys.modules:
        config = sys.modules["datasets"].config
        config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
    try:
        import lm_eval
        import lm_eval.tasks
    except ImportError as exc:
        raise ImportError(
            "lm-eval tasks need the `lm-eval` package: pip install 'optuna-merge3[lm-eval]'"
        ) from exc
    return lm_eval


@lru_cache(maxsize=8)
def _task_index(include: str | None, defaults: bool) -> dict[str, Any]:
    """lm-eval's task registry (name -> Entry); the built-in one takes ~15 s, so it is cached
    and only built when ``include`` does not define the task."""
    from lm_eval.tasks import TaskManager

    return dict(TaskManager(include_path=include, include_defaults=defaults).task_index)


def _task_entry(name: str, include: Path | None) -> Any:
    _import_lm_eval()
    from lm_eval.tasks._index import Kind

    index = _task_index(str(include), False) if include is not None else {}
    entry = index.get(name) or _task_index(str(include) if include else None, True).get(name)
    where = f" (built-in tasks{f' and {include}' if include else ''})"
    if entry is None:
        raise ValueError(f"lm_eval task {name!r} not found{where}; check the name or "
                         "lm_eval_include (`lm_eval ls tasks` lists the built-in ones)")
    if entry.kind not in (Kind.TASK,) or entry.yaml_path is None:
        raise ValueError(f"lm_eval {name!r} is a {entry.kind.name.lower()}, not one YAML task; "
                         "name one of its tasks (one fitness objective per task)")
    return entry


def _config_overrides(
    data_files: dict[str, str | Path] | None,
    max_new_tokens: int | None,
    stop: list[str] | tuple[str, ...] | None,
    generation_kwargs: dict[str, Any] | None,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if data_files:
        suffixes = {Path(p).suffix.lower() for p in data_files.values()}
        builders = {_DATA_BUILDERS.get(s) for s in suffixes}
        if len(builders) != 1 or None in builders:
            raise ValueError(f"data_files: {sorted(suffixes)} is not one of the file types "
                             f"{sorted(_DATA_BUILDERS)} (one type for all splits)")
        out.update(dataset_path=builders.pop(), dataset_name=None,
                   dataset_kwargs={"data_files": {k: str(v) for k, v in data_files.items()}})
    kwargs = dict(generation_kwargs or {})
    if max_new_tokens is not None:
        kwargs["max_gen_toks"] = int(max_new_tokens)
    if stop is not None:
        kwargs["until"] = list(stop)
    if max_new_tokens is not None or stop is not None:
        out["generation_kwargs"] = kwargs
    return out


def load_lm_eval_task(
    name: str,
    *,
    include: str | Path | None = None,
    data_files: dict[str, str | Path] | None = None,
    metric: str | None = None,
    max_new_tokens: int | None = None,
    stop: list[str] | tuple[str, ...] | None = None,
    task_name: str | None = None,
    backend: str = DEFAULT_BACKEND,
    chat_template_tokenizer: Any = None,
) -> Task:
    """Load lm-eval task ``name`` as a :class:`Task` whose items are its evaluation documents.

    Args:
        name: an lm-eval task (not a group or tag), built in or defined in ``include``.
        include: a folder of extra task YAMLs (lm-eval's ``--include_path``).
        data_files: split -> local file (JSONL / JSON / CSV / Parquet), replacing the task's hub
            dataset (``dataset_path`` becomes the file type's builder), so it loads offline.
        metric: ``"<metric>,<filter>"`` as in lm-eval's results keys (e.g.
            ``"exact_match,flexible-extract"``); default: the task's first metric and filter.
            Its per-document value must be 0 or 1.
        max_new_tokens, stop: override the YAML's ``max_gen_toks`` / ``until``.
        task_name: our task's name (default ``name``).
        backend: how :func:`~optuna_merge3.evaluation.evaluate` runs it (``LM_EVAL_BACKENDS``;
            :func:`evaluate_lm_eval` takes its own ``backend`` argument).
        chat_template_tokenizer: a tokenizer with a chat template: the prompts are rendered as
            ``simple_evaluate(apply_chat_template=True)`` renders them (few-shot examples as
            turns, lm-eval's default ``fewshot_as_multiturn``), for chat endpoints.

    Item ids are the documents' ``id`` field when every document has a distinct one, else the
    document index (lm-eval's ``doc_id``) as a string.

    Raises:
        ImportError: lm-eval is not installed (names the extra).
        ValueError: unknown task, a group, a missing data file, an unknown metric / filter.
    """
    _check_backend(backend)
    _import_lm_eval()
    from lm_eval.tasks._yaml_loader import load_yaml

    include = Path(include) if include is not None else None
    if include is not None and not include.is_dir():
        raise ValueError(f"lm_eval_include: {include} is not a folder")
    for split, path in (data_files or {}).items():
        if not Path(path).is_file():
            raise ValueError(f"data_files.{split}: file not found: {path}")
    entry = _task_entry(name, include)
    config = load_yaml(entry.yaml_path, resolve_func=True)
    config.update(_config_overrides(data_files, max_new_tokens, stop,
                                    config.get("generation_kwargs")))
    for key in ("tag", "group", "task_list"):
        config.pop(key, None)
    from lm_eval.tasks import TaskManager

    # A dict spec builds the task from exactly this config (include and !function resolved).
    with _quiet_progress():
        loaded = TaskManager(include_path=None, include_defaults=False).load([config])
    (lm_task,) = loaded["tasks"].values()
    task = _task_from_lm_eval(lm_task, task_name or name, metric, config,
                              _chat_renderer(chat_template_tokenizer))
    task.meta["lm_eval_backend"] = backend  # not fingerprinted: both give the same correctness
    return task


@contextlib.contextmanager
def _quiet_progress() -> Any:
    """No progress bars from loading a task: the dataset build and lm-eval's request loop would
    write them to the CLI's stderr, where only our progress lines and errors belong."""
    import datasets
    import lm_eval.api.task as lm_task_module

    bars_were_on = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    original = lm_task_module.tqdm
    lm_task_module.tqdm = functools.partial(original, disable=True)
    try:
        yield
    finally:
        lm_task_module.tqdm = original
        if bars_were_on:
            datasets.enable_progress_bars()


def _chat_renderer(tokenizer: Any) -> Any:
    """lm-eval's own ``HFLM.apply_chat_template`` bound to ``tokenizer`` (no model needed)."""
    if tokenizer is None:
        return None
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("chat_template = true, but the tokenizer has no chat template")
    from types import SimpleNamespace

    from lm_eval.models.huggingface import HFLM

    return functools.partial(HFLM.apply_chat_template,
                             SimpleNamespace(tokenizer=tokenizer, chat_template_args={}))


def _task_from_lm_eval(lm_task: Any, name: str, metric: str | None, config: dict,
                       chat_template: Any = None) -> Task:
    if lm_task.get_config("num_fewshot") is None:
        lm_task.set_config(key="num_fewshot", value=0)  # as simple_evaluate does
    lm_task.set_fewshot_seed(seed=FEWSHOT_SEED)
    with _quiet_progress():
        lm_task.build_all_requests(limit=None, rank=0, world_size=1, cache_requests=False,
                                   apply_chat_template=chat_template is not None,
                                   fewshot_as_multiturn=chat_template is not None,
                                   chat_template=chat_template)
    docs = list(lm_task.eval_docs)
    requests: list[list[Any]] = [[] for _ in docs]
    for instance in lm_task.instances:
        requests[instance.doc_id].append(instance)
    for per_doc in requests:
        per_doc.sort(key=lambda inst: inst.idx)
    filter_name, metric_name = _pick_metric(lm_task, metric)
    ids = _item_ids(docs)
    items = []
    targets: dict[int, Any] = {}
    for i, per_doc in enumerate(requests):
        doc = per_doc[0].doc  # the object every request of this document (and its copies) holds
        target = targets[id(doc)] = lm_task.doc_to_target(doc)
        choices = None
        if lm_task.OUTPUT_TYPE == "multiple_choice":
            choices = tuple(str(c) for c in lm_task.doc_to_choice(doc))
            if isinstance(target, int):
                target = string.ascii_uppercase[target]
        items.append(TaskItem(id=ids[i], prompt=requests[i][0].args[0], answer=str(target),
                              choices=choices))
    _memoize_targets(lm_task, targets)
    first = requests[0][0].args if requests and requests[0] else ()
    gen = first[1] if len(first) > 1 and isinstance(first[1], dict) else {}
    digest = hashlib.sha256(json.dumps(
        {k: config.get(k) for k in ("filter_list", "metric_list", "generation_kwargs",
                                    "output_type", "repeats")} | {"metric": metric_name,
                                                                  "filter": filter_name},
        sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Task(
        name=name,
        items=items,
        scorer="lm_eval",
        generation=GenerationConfig(max_new_tokens=int(gen.get("max_gen_toks", 256)),
                                    stop=tuple(gen.get("until", ()) or ())),
        use_chat_template=chat_template is not None,
        meta={"lm_eval_config": digest, "lm_eval_task": lm_task.config.task,
              "lm_eval_source": LmEvalSource(lm_task, requests, filter_name, metric_name)},
    )


def _memoize_targets(lm_task: Any, targets: dict[int, Any]) -> None:
    """``process_results`` renders each document's Jinja target again (~2 ms each, a third of a
    tiny-world evaluation); the built requests' documents get their target from this table."""
    render = lm_task.doc_to_target

    def doc_to_target(doc: Any, doc_to_target: Any = None) -> Any:
        if doc_to_target is None and id(doc) in targets:
            return targets[id(doc)]
        return render(doc, doc_to_target) if doc_to_target is not None else render(doc)

    lm_task.doc_to_target = doc_to_target


def _pick_metric(lm_task: Any, metric: str | None) -> tuple[str, str]:
    filters = [f.name for f in getattr(lm_task, "_filters", [])] or ["none"]
    metrics = list(lm_task._metric_fn_list)
    if metric is None:
        return filters[0], metrics[0]
    metric_name, _, filter_name = metric.partition(",")
    filter_name = filter_name or filters[0]
    if metric_name not in metrics or filter_name not in filters:
        valid = [f"{m},{f}" for f in filters for m in metrics]
        raise ValueError(f"lm_eval_metric {metric!r} is not one of {valid}")
    return filter_name, metric_name


def _item_ids(docs: list[Any]) -> list[str]:
    ids = [doc.get("id") if isinstance(doc, dict) else None for doc in docs]
    if all(isinstance(i, (str, int)) for i in ids) and len({str(i) for i in ids}) == len(ids):
        return [str(i) for i in ids]
    return [str(i) for i in range(len(docs))]


def _check_backend(backend: str) -> None:
    if backend not in LM_EVAL_BACKENDS:
        raise ValueError(f"unknown lm-eval backend {backend!r}; valid: {list(LM_EVAL_BACKENDS)}")
