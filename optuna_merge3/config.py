"""Study configuration: a TOML file in ``studies/``, validated before anything runs.

A config describes the whole pipeline (Extract -> Estimate -> Evolve) so that a study can be
resumed, or joined by another worker, from the file alone. Paths inside the file are relative to
the file.

Every key is declared once, as a field of the frozen dataclass of its table (:class:`StudyTable`,
:class:`SamplerTable`, :class:`MergeTable`, :class:`IRTTable`, :class:`EvaluationTable`,
:class:`TaskConfig`): its type is the annotation, and :func:`setting` adds the default, the
allowed choices (read from the registries that implement them), the range and whether the key
enters the resume signature. One validator reads those declarations; every problem is one
``ConfigError: <file>: <table>.<key>: <problem>``. Cross-key rules follow in
:meth:`StudyConfig.from_dict`; what needs a file or the machine (reference size, CUDA) is
checked by ``StudyRunner.check()`` before any model loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import sys
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

from optuna_merge3.fingerprint import file_sha, input_fingerprints
from optuna_merge3.plan import INPUTS, MEMORY_MODES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "config_reference",
    "EvaluationTable",
    "IRTTable",
    "MergeTable",
    "SamplerTable",
    "StudyConfig",
    "StudyTable",
    "TaskConfig",
    "declared_keys",
    "load_config",
    "portable_merge",
    "portable_signature",
    "setting",
]

DIRECTIONS = ("maximize", "minimize")
DEVICE_PATTERN = r"cpu|mps|cuda(:\d+)?"
# Merge coefficients that are fractions of a task vector: bounds and fixed values in [0, 1].
_UNIT_INTERVAL_PARAMS = ("density", "gamma")


class ConfigError(ValueError):
    """A study config is malformed; the message names the file and the key."""


# -- the declaration ------------------------------------------------------------------------------
def setting(
    default: Any = dataclasses.MISSING,
    *,
    choices: Iterable[Any] | Callable[[], Iterable[Any]] | None = None,
    min: float | None = None,  # noqa: A002 - reads as the declaration it is
    max: float | None = None,  # noqa: A002
    gt: float | None = None,
    pattern: str | None = None,
    signature: bool | str = True,
    path: bool = False,
    doc: str = "",
    unset: Any = dataclasses.MISSING,
) -> Any:
    """Declare one config key as a dataclass field.

    Args:
        default: the value when the key is absent; leave it out for a required key. A ``dict`` or
            ``list`` default is copied per config.
        choices: the allowed values, or a callable returning them (a registry read lazily, so
            that importing the config does not import torch or Optuna).
        min / max: inclusive bounds; ``gt``: an exclusive lower bound.
        pattern: a regular expression a string value must match in full.
        signature: whether a change refuses a resume: True, False, or ``"if_set"`` (enters only
            when it differs from the default, so that studies made before the key resume).
        path: a file path, resolved against the config's folder and required to exist.
        doc: one line for the generated reference (:func:`declared_keys`).
        unset: for ``signature="if_set"``, the value that stays out of the signature when it is
            not the default (a default changed after studies were made with the old one).
    """
    meta = dict(choices=choices, min=min, max=max, gt=gt, pattern=pattern, signature=signature,
                path=path, doc=doc, unset=default if unset is dataclasses.MISSING else unset)
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


@dataclass(frozen=True)
class StudyTable:
    """``[study]``: the study's name, where it lives and its budget."""

    name: str = setting(signature=False, pattern=r"[^/\\]+", doc="study name in the storage")
    out_dir: str = setting("runs/{name}", signature=False,
                           doc="SQLite study, artifacts and caches; {name} is replaced")
    storage: str | None = setting(None, signature=False,
                                  doc="RDB URL (postgresql://...) or journal; default: SQLite")
    n_trials: int = setting(40, min=1, signature=False, doc="complete trials, across workers")
    seed: int = setting(0, doc="seeds the sampler, subsets and DARE masks")
    timeout_s: float | None = setting(None, gt=0, signature=False, doc="stop after this time")


def _samplers() -> tuple[str, ...]:
    from optuna_merge3.study import SAMPLERS

    return SAMPLERS


@dataclass(frozen=True)
class SamplerTable:
    """``[sampler]``: the Optuna sampler and its generation size."""

    name: str = setting("nsga2", choices=_samplers, doc="nsga2 / nsga3 / cmaes / tpe / gp / random")
    population_size: int = setting(8, min=2, doc="NSGA-II/III and CMA-ES population")
    seed_population: bool = setting(True, doc="generation 0 starts from endpoints + uniform merge")


def _merge_methods() -> tuple[str, ...]:
    from optuna_merge3.merging import MERGE_METHODS

    return tuple(MERGE_METHODS)


@dataclass(frozen=True)
class MergeTable:
    """``[merge]``: the method, the models and the search space (see docs/merging.md).

    ``search`` and ``fixed`` name the method's own coefficients; :class:`MergeSpace` checks them
    against the method's declaration (``StudyRunner.check()``).
    """

    method: str = setting(choices=_merge_methods, doc="a MergeKit method name")
    endpoints: dict[str, str] = setting(doc="name = model folder; at least two")
    base: str | None = setting(None, doc="the base model folder (task-vector methods)")
    search: dict[str, Any] = setting({}, doc="coefficient = [low, high], searched")
    fixed: dict[str, Any] = setting({}, doc="coefficient = value, not searched")
    blocks: int = setting(1, min=1, doc="layer blocks with their own genes")
    filters: list[str] = setting([], doc="tensor-name filters with their own genes")
    split: list[str] | None = setting(None, doc="parameters that get per-block / per-filter genes")
    # The memory plan (optuna_merge3/plan.py): how the merge runs, not what it computes.
    memory: str = setting("auto", choices=MEMORY_MODES, signature=False,
                          doc="auto: the fastest mode that fits; resident: inputs kept on the "
                              "merge device; stream: read per tensor from the page cache")
    inputs: str | None = setting(None, choices=(None, *INPUTS), signature=False,
                                 doc="where inputs live between trials: device (resident) or cpu "
                                     "(stream); unset: the plan picks")
    device_memory_gb: float | None = setting(None, gt=0, signature=False,
                                             doc="device budget; unset: what torch.cuda reports")
    host_memory_gb: float | None = setting(None, gt=0, signature=False,
                                           doc="host budget; unset: MemTotal of /proc/meminfo")

    def to_dict(self) -> dict[str, Any]:
        """The table as :meth:`MergeSpace.from_config` reads it (unset optional keys left out)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _lambda_constraints() -> tuple[Any, ...]:
    from optuna_merge3.irt import LAMBDA_CONSTRAINTS

    return LAMBDA_CONSTRAINTS


def _extractors() -> tuple[str, ...]:
    from optuna_merge3.irt import EXTRACTORS

    # representation clustering needs item embeddings, which the pipeline does not compute
    return tuple(name for name in EXTRACTORS if name != "representation_clusters")


def _default_n_dims() -> int:
    from optuna_merge3.irt import DEFAULT_N_DIMS

    return DEFAULT_N_DIMS


def _default_lambda_constraint() -> str:
    from optuna_merge3.irt import DEFAULT_LAMBDA_CONSTRAINT

    return DEFAULT_LAMBDA_CONSTRAINT


@dataclass(frozen=True)
class IRTTable:
    """``[irt]``: the item response model and the subset extraction."""

    n_dims: int = setting(_default_n_dims(), min=1,
                          doc="latent dimensions d; below the number of reference models")
    extraction: str = setting("random", choices=_extractors, doc="how the subset is drawn")
    # "if_set": studies made while the key was never read (lambda was always "ridge") resume.
    lambda_constraint: str = setting(_default_lambda_constraint(), choices=_lambda_constraints,
                                     signature="if_set",
                                     doc="lambda fit of mp-IRT / gmp-IRT (docs/irt.md)")


def _dtypes() -> tuple[str, ...]:
    from optuna_merge3.merging import MODEL_DTYPES

    return MODEL_DTYPES


def _quantizations() -> tuple[Any, ...]:
    from optuna_merge3.merging import QUANTIZATIONS

    return QUANTIZATIONS


def _lm_eval_backends() -> tuple[str, ...]:
    from optuna_merge3.evaluation import LM_EVAL_BACKENDS

    return LM_EVAL_BACKENDS


@dataclass(frozen=True)
class EvaluationTable:
    """``[evaluation]``: where and how the live model runs."""

    device: str = setting("cpu", pattern=DEVICE_PATTERN, signature=False,
                          doc="cpu, cuda, cuda:N or mps")
    dtype: str = setting("float32", choices=_dtypes, signature="if_set",
                         doc="dtype of the live model")
    quantization: str | None = setting(None, choices=_quantizations, signature="if_set",
                                       doc="bitsandbytes 4-bit live model")
    batch_size: int = setting(32, min=1, signature=False, doc="generation batch size")
    # One thread is the default because on a busy 2-core machine OpenMP spin-waits made a
    # tiny-world trial 10-50x slower with two (measured 0.1 s vs 1-6 s).
    threads: int = setting(1, min=0, signature=False, doc="torch CPU threads; 0 = torch default")
    # The default was "mergekit" when studies began: those stay without rng in the signature.
    rng: str = setting("counter", choices=("counter", "mergekit"), signature="if_set",
                       unset="mergekit",
                       doc="DARE / DELLA masks: counter hashes or MergeKit's CPU draws")
    # both give the same per-item correctness (tests/evaluation/test_lm_eval.py)
    lm_eval_backend: str = setting("harness", choices=_lm_eval_backends, signature=False,
                                   doc="lm-eval tasks: lm-eval's HFLM or our generate (OOM "
                                       "back-off)")


def _estimators() -> tuple[str, ...]:
    from optuna_merge3.irt import ESTIMATORS

    return tuple(ESTIMATORS)


def _alignments() -> tuple[str, ...]:
    from optuna_merge3.reference import ALIGNMENTS

    return ALIGNMENTS


@dataclass(frozen=True, kw_only=True)  # keywords only: `path` is optional
class TaskConfig:
    """``[[tasks]]``: one fitness task, its reference population and how it is estimated."""

    name: str = setting(doc="objective name; unique")
    path: Path | None = setting(None, path=True,
                                doc="items (JSONL / CSV); its content enters the signature. "
                                    "Either path or lm_eval")
    reference: Path | None = setting(None, path=True, signature="if_set",
                                     doc="reference population's correctness (CSV.gz)")
    irt_params: Path | None = setting(None, path=True, signature="if_set",
                                      doc="pre-fitted item parameters (IRTParams.save): no fit")
    align: str = setting("id", choices=_alignments, signature="if_set",
                         doc="reference items by id, or by position (a translated task)")
    n_items: int = setting(20, min=1, doc="subset size evaluated per trial")
    estimator: str = setting("gmpirt", choices=_estimators, doc="fitness estimator")
    direction: str = setting("maximize", choices=DIRECTIONS, doc="Optuna direction")
    # lm-evaluation-harness tasks (docs/evaluation.md); the lm_eval_* keys need lm_eval
    lm_eval: str | None = setting(None, signature="if_set",
                                  doc="an lm-evaluation-harness task name (the lm-eval extra)")
    lm_eval_include: Path | None = setting(None, path=True, signature="if_set",
                                           doc="folder of extra lm-eval task YAMLs; their "
                                               "content enters the signature")
    data_files: dict[str, Path] | None = setting(None, path=True, signature="if_set",
                                                 doc="split = local file replacing the lm-eval "
                                                     "task's hub dataset (offline)")
    lm_eval_metric: str | None = setting(None, pattern=r"[\w.-]+(,[\w.-]+)?", signature="if_set",
                                         doc="'<metric>,<filter>'; default: the task's first")
    max_new_tokens: int | None = setting(None, min=1, signature="if_set",
                                         doc="overrides the task file's / YAML's / scorer's")
    stop: list[str] | None = setting(None, signature="if_set", doc="stop strings, likewise")
    chat_template: bool | None = setting(None, signature="if_set",
                                         doc="prompts through the tokenizer's chat template")


_TABLES: dict[str, type] = {
    "study": StudyTable, "sampler": SamplerTable, "merge": MergeTable, "irt": IRTTable,
    "evaluation": EvaluationTable, "tasks": TaskConfig,
}


def declared_keys() -> list[tuple[str, dataclasses.Field, Any]]:
    """Every declared key as ``(table, field, resolved type)``, in declaration order."""
    return [(table, f, typing.get_type_hints(cls)[f.name])
            for table, cls in _TABLES.items() for f in dataclasses.fields(cls)]


def config_reference() -> str:
    """The markdown key reference of ``docs/config.md``, generated from the declarations
    (``python -m optuna_merge3.config > docs/config.md``; a test keeps the file current)."""
    lines = ["# Study config keys", "",
             "Generated from the declarations in `optuna_merge3/config.py` by",
             "`python -m optuna_merge3.config > docs/config.md`. *signature*: a change refuses to",
             "resume a study (`if set`: only when it differs from the default).", ""]
    for table, cls in _TABLES.items():
        header = "[[tasks]]" if table == "tasks" else f"[{table}]"
        lines += [f"## `{header}`", "", (cls.__doc__ or "").split("\n")[0].split(": ", 1)[-1], "",
                  "| key | type | default | allowed | signature | meaning |",
                  "|---|---|---|---|---|---|"]
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata
            if f.default is not dataclasses.MISSING:
                default = "-" if f.default is None else _toml(f.default)
            elif f.default_factory is not dataclasses.MISSING:
                default = _toml(f.default_factory())
            else:
                default = "required"
            allowed = []
            if meta["choices"] is not None:
                choices = meta["choices"]() if callable(meta["choices"]) else meta["choices"]
                allowed.append(", ".join(_toml(c) for c in choices if c is not None))
            allowed += [f"{op} {meta[k]}" for k, op in (("min", ">="), ("max", "<="), ("gt", ">"))
                        if meta[k] is not None]
            if meta["pattern"]:
                allowed.append(f"matches `{meta['pattern']}`")
            if meta["path"]:
                allowed.append("an existing file")
            sig = {True: "yes", False: "no", "if_set": "if set"}[meta["signature"]]
            if meta["signature"] == "if_set" and meta["unset"] != f.default:
                sig = f"unless {_toml(meta['unset'])}"
            kind = "path" if meta["path"] else _type_name(hints[f.name])
            lines.append(f"| `{f.name}` | {kind} | `{default}` | {'; '.join(allowed) or '-'} "
                         f"| {sig} | {meta['doc']} |")
        lines.append("")
    return "\n".join(lines)


# -- the config -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class StudyConfig:
    """A validated study config. Build it with :func:`load_config` or :meth:`from_dict`."""

    study: StudyTable
    sampler: SamplerTable
    merge: MergeTable
    irt: IRTTable
    evaluation: EvaluationTable
    tasks: tuple[TaskConfig, ...]
    out_dir: Path
    source: Path | None = None
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], root: Path, source: Path | None = None,
                  text: str = "") -> StudyConfig:
        """Validate a parsed config; relative paths are resolved against ``root``."""
        where = str(source) if source else "<config>"
        unknown = sorted(set(raw) - set(_TABLES))
        if unknown:
            raise ConfigError(f"{where}: unknown table(s) {unknown}; valid: {list(_TABLES)}")
        if "study" not in raw:
            raise ConfigError(f"{where}: [study] table is required")
        if not isinstance(raw.get("merge"), dict) or not raw["merge"]:
            raise ConfigError(f"{where}: [merge] table is required (method, base, endpoints)")
        tables = {name: _build(cls_, raw.get(name, {}), name, root, where)
                  for name, cls_ in _TABLES.items() if name != "tasks"}
        tasks = _tasks(raw.get("tasks"), root, where)
        merge = _resolved_merge(tables["merge"], root, where)
        if merge.memory == "stream" and merge.inputs == "device":
            raise ConfigError(f"{where}: merge.inputs: 'device' keeps the inputs on the device "
                              "between trials, which is memory = 'resident'; streaming reads them "
                              "from the host's page cache (inputs = 'cpu')")
        if merge.memory == "resident" and merge.inputs == "cpu":
            raise ConfigError(f"{where}: merge.inputs: 'cpu' reads the inputs from the "
                              "checkpoints' memory map (the host's page cache) every trial, which "
                              "is memory = 'stream'; resident keeps them on the device")
        _check_merge_ranges(merge, where)
        sampler = tables["sampler"]
        single = _single_objective_samplers()
        if sampler.name in single and len(tasks) > 1:
            raise ConfigError(
                f"{where}: sampler.name: {sampler.name!r} is single-objective but the config "
                f"has {len(tasks)} tasks (one objective each); use 'nsga2' or 'nsga3', or keep "
                "one task"
            )
        study = tables["study"]
        out_dir = Path(study.out_dir.format(name=study.name))
        return cls(
            study=study, sampler=sampler, merge=merge, irt=tables["irt"],
            evaluation=tables["evaluation"], tasks=tasks,
            out_dir=out_dir if out_dir.is_absolute() else (root / out_dir).resolve(),
            source=source, text=text, raw=raw,
        )

    # [study] keys, read everywhere
    @property
    def name(self) -> str:
        return self.study.name

    @property
    def storage(self) -> str | None:
        return self.study.storage

    @property
    def n_trials(self) -> int:
        return self.study.n_trials

    @property
    def seed(self) -> int:
        return self.study.seed

    @property
    def timeout_s(self) -> float | None:
        return self.study.timeout_s

    @property
    def directions(self) -> list[str]:
        """One Optuna direction per task objective."""
        return [t.direction for t in self.tasks]

    def signature(self) -> dict[str, Any]:
        """What must not change between resumes: the keys declared with ``signature``.

        Model paths enter as their folder names and task / reference files as content hashes, so
        a moved repository (or another worker with another mount point) resumes the same study.
        """
        return {
            "merge": portable_merge(_signature_of(self.merge)),
            "tasks": [_signature_of(t, files=True) for t in self.tasks],
            "sampler": _signature_of(self.sampler),
            "irt": _signature_of(self.irt),
            "seed": self.seed,
            **_signature_of(self.evaluation),
            "inputs": input_fingerprints(self),  # content of the weights (fingerprint.py)
        }

    def signature_hash(self) -> str:
        """A short stable digest of :meth:`signature`."""
        blob = json.dumps(self.signature(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_config(path: str | Path) -> StudyConfig:
    """Read and validate a study TOML file.

    Raises:
        ConfigError: the file is missing, is not valid TOML, or a key is missing or wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    text = path.read_text(encoding="utf-8")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    return StudyConfig.from_dict(raw, path.resolve().parent, source=path, text=text)


# -- validation from the declarations -------------------------------------------------------------
def _build(cls: type, value: Any, prefix: str, root: Path, where: str) -> Any:
    """One table: unknown keys, required keys, types, choices, ranges, paths."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {prefix}: expected a table, got {type(value).__name__}")
    fields = dataclasses.fields(cls)
    unknown = sorted(set(value) - {f.name for f in fields})
    if unknown:
        raise ConfigError(f"{where}: {prefix}: unknown key(s) {unknown}; "
                          f"valid: {sorted(f.name for f in fields)}")
    hints = typing.get_type_hints(cls)
    out = {}
    for f in fields:
        key = f"{prefix}.{f.name}"
        if f.name not in value:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: {key}: required key is missing")
            continue
        item = value[f.name]
        if f.metadata["path"]:
            out[f.name] = _checked_path(item, root, where, key)
        else:
            _check_value(item, hints[f.name], f.metadata, where, key)
            out[f.name] = item
    return cls(**out)


def _check_value(item: Any, hint: Any, meta: dict, where: str, key: str) -> None:
    if not _is_instance(item, hint):
        raise ConfigError(f"{where}: {key}: expected {_type_name(hint)}, "
                          f"got {type(item).__name__} {item!r}")
    choices = meta["choices"]
    if choices is not None:
        allowed = list(choices() if callable(choices) else choices)
        if not any(item is c or (type(item) is type(c) and item == c) for c in allowed):
            shown = ", ".join(_toml(c) for c in allowed if c is not None)
            absent = " (or leave it out for none)" if None in allowed else ""
            raise ConfigError(f"{where}: {key}: {item!r} is not one of [{shown}]{absent}")
    if isinstance(item, (int, float)) and not isinstance(item, bool):
        if meta["min"] is not None and item < meta["min"]:
            raise ConfigError(f"{where}: {key}: must be >= {meta['min']}, got {item!r}")
        if meta["max"] is not None and item > meta["max"]:
            raise ConfigError(f"{where}: {key}: must be <= {meta['max']}, got {item!r}")
        if meta["gt"] is not None and item <= meta["gt"]:
            raise ConfigError(f"{where}: {key}: must be > {meta['gt']}, got {item!r}")
    if meta["pattern"] and isinstance(item, str) and not re.fullmatch(meta["pattern"], item):
        raise ConfigError(f"{where}: {key}: {item!r} does not match {meta['pattern']!r}")


def _is_instance(item: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (Union, types.UnionType):
        return any(_is_instance(item, arg) for arg in typing.get_args(hint))
    if hint is Any:
        return True
    if hint is type(None):
        return item is None
    if origin is dict:
        key_type, value_type = typing.get_args(hint)
        return isinstance(item, dict) and all(
            _is_instance(k, key_type) and _is_instance(v, value_type) for k, v in item.items())
    if origin is list:
        (value_type,) = typing.get_args(hint)
        return isinstance(item, list) and all(_is_instance(v, value_type) for v in item)
    if hint is float:  # TOML writes 2 for 2.0
        return isinstance(item, (int, float)) and not isinstance(item, bool)
    if hint is int:  # bool is an int subclass: refuse ``n_trials = true``
        return isinstance(item, int) and not isinstance(item, bool)
    return isinstance(item, hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return "/".join(_type_name(a) for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is dict:
        return f"a table of {_type_name(typing.get_args(hint)[1])}"
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])}"
    return getattr(hint, "__name__", str(hint))


def _toml(value: Any) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def _checked_path(item: Any, root: Path, where: str, key: str) -> Any:
    if isinstance(item, dict):  # split = file (data_files)
        return {k: _checked_path(v, root, where, f"{key}.{k}") for k, v in item.items()}
    if not isinstance(item, str):
        raise ConfigError(f"{where}: {key}: expected a path string, got {item!r}")
    path = _resolve(item, root)
    if not path.exists():
        raise ConfigError(f"{where}: {key}: file not found: {path}")
    return path


def _single_objective_samplers() -> tuple[str, ...]:
    from optuna_merge3.study import SINGLE_OBJECTIVE_SAMPLERS

    return SINGLE_OBJECTIVE_SAMPLERS


def _tasks(raw_tasks: Any, root: Path, where: str) -> tuple[TaskConfig, ...]:
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise ConfigError(f"{where}: at least one [[tasks]] entry is required")
    tasks = tuple(_build(TaskConfig, raw, f"tasks[{i}]", root, where)
                  for i, raw in enumerate(raw_tasks))
    for i, task in enumerate(tasks):
        _check_task_source(task, where, f"tasks[{i}]")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: task names must be unique, got {names}")
    return tasks


def _check_task_source(task: TaskConfig, where: str, prefix: str) -> None:
    """Exactly one of ``path`` / ``lm_eval``; the lm-eval keys only with ``lm_eval``."""
    if (task.path is None) == (task.lm_eval is None):
        raise ConfigError(f"{where}: {prefix}: give exactly one of 'path' (a JSONL / CSV task "
                          "file) or 'lm_eval' (an lm-evaluation-harness task name)")
    for key in ("lm_eval_include", "data_files", "lm_eval_metric"):
        if getattr(task, key) is not None and task.lm_eval is None:
            raise ConfigError(f"{where}: {prefix}.{key}: only valid with 'lm_eval'")
    if task.stop is not None and not all(task.stop):
        raise ConfigError(f"{where}: {prefix}.stop: stop strings must not be empty")


def _resolved_merge(merge: MergeTable, root: Path, where: str) -> MergeTable:
    """Model paths made absolute and checked; two names for one model are refused."""
    if len(merge.endpoints) < 2:
        raise ConfigError(f"{where}: merge.endpoints: a table of at least two name = path entries")
    base = str(_resolve(merge.base, root)) if merge.base is not None else None
    endpoints = {k: str(_resolve(v, root)) for k, v in merge.endpoints.items()}
    for key, value in [("base", base)] + [(f"endpoints.{k}", v) for k, v in endpoints.items()]:
        if value is not None and not Path(value).exists():
            raise ConfigError(f"{where}: merge.{key}: model not found: {value}")
    seen: dict[str, str] = {} if base is None else {_real(base): "base"}
    for name, value in endpoints.items():
        other = seen.setdefault(_real(value), f"endpoints.{name}")
        if other != f"endpoints.{name}":
            raise ConfigError(f"{where}: merge.endpoints.{name}: {value} is the same model as "
                              f"merge.{other}; each endpoint must be another fine-tune")
    return dataclasses.replace(merge, base=base, endpoints=endpoints)


def _real(path: str) -> str:
    return str(Path(path).resolve())


def _check_merge_ranges(merge: MergeTable, where: str) -> None:
    """Fractions of a task vector (density, gamma) must stay in [0, 1]."""
    for table in ("search", "fixed"):
        for key, value in getattr(merge, table).items():
            if str(key).partition("/")[0] not in _UNIT_INTERVAL_PARAMS:
                continue
            values = value if isinstance(value, list) else [value]
            numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
            if any(not 0.0 <= v <= 1.0 for v in numbers):
                raise ConfigError(
                    f"{where}: merge.{table}.{key}: {value!r} is out of range; a "
                    f"{str(key).partition('/')[0]} is a fraction of the task vector in [0, 1]"
                )


def _resolve(value: str, root: Path) -> Path:
    path = Path(value).expanduser()
    return path if path.is_absolute() else (root / path).resolve()


# -- the resume signature -------------------------------------------------------------------------
def _signature_of(table: Any, files: bool = False) -> dict[str, Any]:
    """The declared signature keys of one table; file paths as content hashes."""
    out = {}
    for f in dataclasses.fields(table):
        value, mode = getattr(table, f.name), f.metadata["signature"]
        if not mode or (mode == "if_set" and value == f.metadata["unset"]):
            continue
        if f.metadata["path"]:
            if files and value is not None:
                out[_SHA_KEYS.get(f.name, f"{f.name}_sha")] = _content_sha(value)
            continue
        out[f.name] = _jsonable(value)
    return out


# The task file's hash kept its first name, so that studies made before resume.
_SHA_KEYS = {"path": "items_sha"}


def _content_sha(value: Path | dict[str, Path]) -> Any:
    """A file's hash; a folder's files by relative name; a table of files by key."""
    if isinstance(value, dict):
        return {k: _content_sha(v) for k, v in value.items()}
    if Path(value).is_dir():
        return {str(p.relative_to(value)): file_sha(p)
                for p in sorted(Path(value).rglob("*")) if p.is_file()}
    return file_sha(value)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def portable_merge(merge: Any) -> Any:
    """The ``[merge]`` table with ``base`` and endpoint paths reduced to their folder names.

    Idempotent, so it also upgrades a signature stored by an older version (absolute paths).
    Unset optional keys are left out, as older versions stored them.
    """
    merge = _jsonable(merge)
    if not isinstance(merge, dict):
        return merge
    defaults = {f.name: (f.default if f.default is not dataclasses.MISSING else f.default_factory())
                for f in dataclasses.fields(MergeTable)
                if f.default is not dataclasses.MISSING
                or f.default_factory is not dataclasses.MISSING}
    merge = {k: v for k, v in merge.items() if k not in defaults or v != defaults[k]}
    if isinstance(merge.get("base"), str):
        merge["base"] = _path_name(merge["base"])
    if isinstance(merge.get("endpoints"), dict):
        merge["endpoints"] = {k: _path_name(v) if isinstance(v, str) else v
                              for k, v in merge["endpoints"].items()}
    return merge


def portable_signature(signature: Any) -> Any:
    """:meth:`StudyConfig.signature` made path-free (see :func:`portable_merge`)."""
    if isinstance(signature, dict) and "merge" in signature:
        return {**signature, "merge": portable_merge(signature["merge"])}
    return signature


def _path_name(value: str) -> str:
    return Path(value.rstrip("/\\")).name or value


if __name__ == "__main__":  # pragma: no cover - regenerates docs/config.md
    print(config_reference(), end="")
