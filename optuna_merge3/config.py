"""Study configuration: a TOML file in ``studies/``, validated before anything runs.

A config describes the whole pipeline (Extract -> Estimate -> Evolve) so that a study can be
resumed, or joined by another worker, from the file alone. Paths inside the file are relative to
the file. Validation follows scikit-learn's habit: one table of allowed keys and types, one error
format (``ConfigError: <file>: <key>: <problem>``).
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = [
    "ConfigError",
    "StudyConfig",
    "TaskConfig",
    "load_config",
    "portable_merge",
    "portable_signature",
]

ESTIMATORS = ("naive", "pirt", "gpirt", "mpirt", "gmpirt", "gmpirt_star")
EXTRACTORS = ("random", "irt_clusters")
DIRECTIONS = ("maximize", "minimize")
# Kept equal to ``optuna_merge3.study.SAMPLERS`` (a test checks it); not imported from there so
# that reading a config does not import Optuna.
SAMPLERS = ("nsga2", "nsga3", "cmaes", "tpe", "gp", "random")
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
# Merge coefficients that are fractions of a task vector: bounds and fixed values in [0, 1].
_UNIT_INTERVAL_PARAMS = ("density", "gamma")


class ConfigError(ValueError):
    """A study config is malformed; the message names the file and the key."""


# Allowed keys per table: key -> (type or tuple of types, default). ``...`` marks a required key.
_STUDY_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (str, ...),
    "out_dir": (str, "runs/{name}"),
    "storage": (str, None),
    "n_trials": (int, 40),
    "seed": (int, 0),
    "timeout_s": ((int, float), None),
}
_SAMPLER_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (str, "nsga2"),
    "population_size": (int, 8),
    "seed_population": (bool, True),
}
_IRT_KEYS: dict[str, tuple[Any, Any]] = {
    "n_dims": (int, 5),
    "extraction": (str, "random"),
    "lambda_constraint": (str, None),
}
_EVAL_KEYS: dict[str, tuple[Any, Any]] = {
    "device": (str, "cpu"),
    "dtype": (str, "float32"),
    "quantization": (str, None),
    "batch_size": (int, 32),
    # CPU threads for torch; 0 keeps torch's default. One thread is the default because on a busy
    # 2-core machine OpenMP spin-waits made a tiny-world trial 10-50x slower with two (measured
    # 0.1 s vs 1-6 s); raise it for large models on an idle machine.
    "threads": (int, 1),
    # DARE / DELLA masks: "mergekit" (MergeKit's draws; a trial's YAML reproduces it) or
    # "counter" (hash masks from one compiled pass on all cores; order-free).
    "rng": (str, "mergekit"),
    # Fused (torch.compile) merge loops: "auto" (large models only), true or false.
    "fused": ((str, bool), "auto"),
}
_TASK_KEYS: dict[str, tuple[Any, Any]] = {
    "name": (str, ...),
    "path": (str, ...),
    "reference": (str, ...),
    "n_items": (int, 20),
    "estimator": (str, "gmpirt"),
    "direction": (str, "maximize"),
}
_TOP_KEYS = ("study", "sampler", "merge", "irt", "evaluation", "tasks")


@dataclass(frozen=True)
class TaskConfig:
    """One fitness task: its items, its reference population and how its fitness is estimated."""

    name: str
    path: Path
    reference: Path
    n_items: int = 20
    estimator: str = "gmpirt"
    direction: str = "maximize"


@dataclass
class StudyConfig:
    """A validated study config. Build it with :func:`load_config` or :meth:`from_dict`."""

    name: str
    out_dir: Path
    storage: str | None
    n_trials: int
    seed: int
    timeout_s: float | None
    sampler: dict[str, Any]
    merge: dict[str, Any]
    irt: dict[str, Any]
    evaluation: dict[str, Any]
    tasks: list[TaskConfig]
    source: Path | None = None
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], root: Path, source: Path | None = None) -> StudyConfig:
        """Validate a parsed config; relative paths are resolved against ``root``."""
        where = str(source) if source else "<config>"
        unknown = sorted(set(raw) - set(_TOP_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown table(s) {unknown}; valid: {list(_TOP_KEYS)}")
        study = _table(raw, "study", _STUDY_KEYS, where, required=True)
        sampler = _table(raw, "sampler", _SAMPLER_KEYS, where)
        irt = _table(raw, "irt", _IRT_KEYS, where)
        evaluation = _table(raw, "evaluation", _EVAL_KEYS, where)
        merge = raw.get("merge")
        if not isinstance(merge, dict) or not merge:
            raise ConfigError(f"{where}: [merge] table is required (method, base, endpoints)")
        merge = _resolve_merge_paths(merge, root, where)
        _check_merge_ranges(merge, where)
        tasks = _tasks(raw.get("tasks"), root, where)
        _check_choice(irt["extraction"], EXTRACTORS, where, "irt.extraction")
        _check_choice(evaluation["rng"], ("mergekit", "counter"), where, "evaluation.rng")
        if evaluation["fused"] not in ("auto", True, False):
            raise ConfigError(f"{where}: evaluation.fused: {evaluation['fused']!r} is not one of "
                              "['auto', true, false]")
        _check_choice(sampler["name"], SAMPLERS, where, "sampler.name")
        if sampler["name"] in SINGLE_OBJECTIVE_SAMPLERS and len(tasks) > 1:
            raise ConfigError(
                f"{where}: sampler.name: {sampler['name']!r} is single-objective but the config "
                f"has {len(tasks)} tasks (one objective each); use 'nsga2' or 'nsga3', or keep "
                "one task"
            )
        if sampler["population_size"] < 2:
            raise ConfigError(
                f"{where}: sampler.population_size: must be >= 2, got {sampler['population_size']}"
            )
        if study["n_trials"] < 1:
            raise ConfigError(f"{where}: study.n_trials: must be >= 1, got {study['n_trials']}")
        out_dir = Path(study["out_dir"].format(name=study["name"]))
        return cls(
            name=study["name"],
            out_dir=out_dir if out_dir.is_absolute() else (root / out_dir).resolve(),
            storage=study["storage"],
            n_trials=study["n_trials"],
            seed=study["seed"],
            timeout_s=study["timeout_s"],
            sampler=sampler,
            merge=merge,
            irt=irt,
            evaluation=evaluation,
            tasks=tasks,
            source=source,
            raw=raw,
        )

    @property
    def directions(self) -> list[str]:
        """One Optuna direction per task objective."""
        return [t.direction for t in self.tasks]

    def signature(self) -> dict[str, Any]:
        """What must not change between resumes: search space, tasks, sampler, IRT setup.

        ``n_trials``, storage and evaluation batch size may change freely. Model paths enter as
        their folder names and task files as content hashes, so a moved repository (or another
        worker with another mount point) resumes the same study.
        """
        return {
            "merge": portable_merge(self.merge),
            "tasks": [
                {
                    "name": t.name,
                    "n_items": t.n_items,
                    "estimator": t.estimator,
                    "direction": t.direction,
                    "items_sha": _file_sha(t.path),
                }
                for t in self.tasks
            ],
            "sampler": _jsonable(self.sampler),
            "irt": _jsonable(self.irt),
            "seed": self.seed,
            # Only when not the default, so that studies created before the option resume.
            **({"rng": self.evaluation["rng"]} if self.evaluation["rng"] != "mergekit" else {}),
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
    config = StudyConfig.from_dict(raw, path.resolve().parent, source=path)
    config.text = text
    return config


def _table(raw: dict, name: str, spec: dict, where: str, required: bool = False) -> dict:
    value = raw.get(name)
    if value is None:
        if required:
            raise ConfigError(f"{where}: [{name}] table is required")
        value = {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {name}: expected a table, got {type(value).__name__}")
    return _validated(value, spec, where, name)


def _validated(value: dict, spec: dict, where: str, prefix: str) -> dict:
    unknown = sorted(set(value) - set(spec))
    if unknown:
        raise ConfigError(f"{where}: {prefix}: unknown key(s) {unknown}; valid: {sorted(spec)}")
    out = {}
    for key, (types, default) in spec.items():
        if key not in value:
            if default is ...:
                raise ConfigError(f"{where}: {prefix}.{key}: required key is missing")
            out[key] = default
            continue
        item = value[key]
        # bool is an int subclass: refuse ``n_trials = true``.
        if not isinstance(item, types) or (isinstance(item, bool) and types is int):
            expected = getattr(types, "__name__", None) or "/".join(t.__name__ for t in types)
            raise ConfigError(
                f"{where}: {prefix}.{key}: expected {expected}, got {type(item).__name__} {item!r}"
            )
        out[key] = item
    return out


def _check_choice(value: Any, choices: tuple[str, ...], where: str, key: str) -> None:
    if value not in choices:
        raise ConfigError(f"{where}: {key}: {value!r} is not one of {list(choices)}")


def _tasks(raw_tasks: Any, root: Path, where: str) -> list[TaskConfig]:
    if not isinstance(raw_tasks, list) or not raw_tasks:
        raise ConfigError(f"{where}: at least one [[tasks]] entry is required")
    tasks = []
    for i, raw in enumerate(raw_tasks):
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: tasks[{i}]: expected a table")
        entry = _validated(raw, _TASK_KEYS, where, f"tasks[{i}]")
        _check_choice(entry["estimator"], ESTIMATORS, where, f"tasks[{i}].estimator")
        _check_choice(entry["direction"], DIRECTIONS, where, f"tasks[{i}].direction")
        if entry["n_items"] < 1:
            raise ConfigError(f"{where}: tasks[{i}].n_items: must be >= 1")
        for key in ("path", "reference"):
            entry[key] = _resolve(entry[key], root)
            if not entry[key].exists():
                raise ConfigError(f"{where}: tasks[{i}].{key}: file not found: {entry[key]}")
        tasks.append(TaskConfig(**entry))
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: task names must be unique, got {names}")
    return tasks


def _resolve_merge_paths(merge: dict, root: Path, where: str) -> dict:
    merge = dict(merge)
    if "base" in merge and isinstance(merge["base"], str):
        merge["base"] = str(_resolve(merge["base"], root))
    endpoints = merge.get("endpoints")
    if not isinstance(endpoints, dict) or len(endpoints) < 2:
        raise ConfigError(f"{where}: merge.endpoints: a table of at least two name = path entries")
    bad = sorted(k for k, v in endpoints.items() if not isinstance(v, str))
    if bad:
        raise ConfigError(f"{where}: merge.endpoints.{bad[0]}: expected a path string")
    merge["endpoints"] = {k: str(_resolve(v, root)) for k, v in endpoints.items()}
    for key, value in [("base", merge.get("base"))] + [
        (f"endpoints.{k}", v) for k, v in merge["endpoints"].items()
    ]:
        if isinstance(value, str) and not Path(value).exists():
            raise ConfigError(f"{where}: merge.{key}: model not found: {value}")
    return merge


def _check_merge_ranges(merge: dict, where: str) -> None:
    """Fractions of a task vector (density, gamma) must stay in [0, 1]."""
    for table in ("search", "fixed"):
        entries = merge.get(table)
        if not isinstance(entries, dict):
            continue  # MergeSpace reports the type error
        for key, value in entries.items():
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


def _file_sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def portable_merge(merge: Any) -> Any:
    """The ``[merge]`` table with ``base`` and endpoint paths reduced to their folder names.

    Idempotent, so it also upgrades a signature stored by an older version (absolute paths).
    """
    merge = _jsonable(merge)
    if not isinstance(merge, dict):
        return merge
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
