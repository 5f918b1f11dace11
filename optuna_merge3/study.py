"""Optuna plumbing: samplers, storage, create-or-resume, generation-0 seeds, dedupe, budget.

Everything here works around an Optuna behaviour found on optuna 5.0 (DESIGN.md section 2):

- ``enqueue_trial`` seeds never become NSGA-II parents: they carry no generation tag, so the GA
  samplers here tag them as generation 0 in ``before_trial``;
- the sampler is not stored: a resume rebuilds it from the stored config signature, and refuses
  a config whose search space, tasks or sampler changed;
- NSGA-II re-proposes identical parameter sets, and several workers overfill a global budget:
  both are handled in :mod:`optuna_merge3.workers` (genotype claims, budget slots).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from optuna_merge3.redaction import redact

__all__ = [
    "SAMPLERS",
    "SINGLE_OBJECTIVE_SAMPLERS",
    "SignatureMismatchError",
    "check_signature",
    "create_or_resume_study",
    "create_sampler",
    "describe_signature_change",
    "is_journal",
    "label_trial",
    "load_existing_study",
    "open_storage",
    "seed_population",
    "seed_role",
    "storage_file_missing",
    "trial_role",
    "upload_json_artifact",
]

_logger = logging.getLogger(__name__)

SAMPLERS = ("nsga2", "nsga3", "cmaes", "tpe", "gp", "random")
SINGLE_OBJECTIVE_SAMPLERS = ("cmaes",)
SIGNATURE_KEY = "merge3:signature"
SEEDED_KEY = "merge3:seeded"
SEED_KEY = "seed"  # a generation-0 seed's label: "endpoint:<name>" or "uniform"
ROLE_KEY = "role"  # endpoint / uniform / search / retry, shown by optuna-dashboard
ESTIMATE_ARTIFACT = "estimate.json"  # the study-level artifact of the Estimate step


class SignatureMismatchError(ValueError):
    """A resume was asked for with a config whose search space, tasks or sampler changed."""


class _SeedsAreParents:
    """Mixin for Optuna's GA samplers: enqueued trials join generation 0 as real parents."""

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        key = self._get_generation_key()  # type: ignore[attr-defined]
        if "fixed_params" in trial.system_attrs and key not in trial.system_attrs:
            # get_trial_generation stores the generation the trial falls into (0 for seeds
            # enqueued before the first generation fills up).
            self.get_trial_generation(study, trial)  # type: ignore[attr-defined]
        super().before_trial(study, trial)  # type: ignore[misc]


class SeededNSGAIISampler(_SeedsAreParents, optuna.samplers.NSGAIISampler):
    """NSGA-II whose enqueued seeds (endpoints, uniform merge) become generation-0 parents."""


class SeededNSGAIIISampler(_SeedsAreParents, optuna.samplers.NSGAIIISampler):
    """NSGA-III whose enqueued seeds become generation-0 parents."""


def create_sampler(
    name: str,
    *,
    n_objectives: int,
    seed: int | None = 0,
    population_size: int = 8,
    crossover_eta: float = 20.0,
    mutation_eta: float = 20.0,
) -> BaseSampler:
    """Build a sampler by name, configured as the paper's GA where it applies.

    Args:
        name: one of :data:`SAMPLERS`.
        n_objectives: number of objectives (one per task); CMA-ES accepts only one.
        seed: sampler seed; the same seed and config give the same trials with one worker.
        population_size: GA population size (paper: 25).
        crossover_eta: SBX distribution index (NSGA-II / NSGA-III).
        mutation_eta: polynomial-mutation distribution index (NSGA-II / NSGA-III).

    Raises:
        ValueError: unknown name, or CMA-ES with several objectives.
    """
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler {name!r}; valid: {list(SAMPLERS)}")
    if name in ("nsga2", "nsga3"):
        import warnings

        from optuna.samplers.nsgaii import PolynomialMutation, SBXCrossover

        with warnings.catch_warnings():  # SBX / polynomial mutation are "experimental" in Optuna
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            mutation = PolynomialMutation(eta=mutation_eta)
            crossover = SBXCrossover(eta=crossover_eta)
            cls = SeededNSGAIISampler if name == "nsga2" else SeededNSGAIIISampler
            return cls(
                population_size=population_size, crossover=crossover, mutation=mutation, seed=seed
            )
    if name == "cmaes":
        if n_objectives != 1:
            raise ValueError(
                f"sampler 'cmaes' is single-objective but the study has {n_objectives} "
                "objectives (one per task); use 'nsga2' or 'nsga3', or keep one task"
            )
        return optuna.samplers.CmaEsSampler(seed=seed, popsize=population_size)
    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    return optuna.samplers.RandomSampler(seed=seed)


def open_storage(
    storage: str | Path, *, heartbeat_interval: int | None = None, max_retry: int = 3
) -> optuna.storages.BaseStorage:
    """Open an RDB URL (``sqlite:///...``, ``postgresql://...``), a Redis journal or a journal file.

    With ``heartbeat_interval`` (seconds) a worker of an RDB storage that dies mid-trial leaves a
    stale trial that another worker fails and re-queues (``RetryHeartbeatStaleTrialCallback``), so
    the study still completes. Journal storages have no Optuna heartbeat: there the objective's own
    beat (:mod:`optuna_merge3.workers`) marks a dead worker's trial. ``redis://HOST:PORT/DB`` is
    Optuna's ``JournalRedisBackend`` (an optional ``?prefix=NAME`` keeps several users' logs
    apart); a path ending in ``.log`` / ``.jsonl`` (or ``journal:PATH``) is a journal file.

    Raises:
        ValueError: the storage cannot be opened; the message names the URL and the cause.
    """
    text = str(storage)
    if text.startswith(("redis://", "rediss://", "unix://")):
        return _open_redis_journal(text)
    if text.startswith("journal:") or text.endswith((".log", ".jsonl")):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        path = Path(text.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    if "://" not in text:
        raise ValueError(
            f"storage {text!r}: expected an RDB URL (sqlite:///file.db, postgresql://...) "
            "or a journal file path ending in .log"
        )
    if text.startswith("sqlite:///"):
        Path(text.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with warnings.catch_warnings():  # heartbeat options are "experimental" since Optuna 2.9
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        kwargs: dict[str, Any] = {}
        if heartbeat_interval:
            kwargs = {
                "heartbeat_interval": heartbeat_interval,
                "grace_period": 2 * heartbeat_interval,
                "heartbeat_stale_trial_callback":
                    optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry),
            }
        try:
            return optuna.storages.RDBStorage(text, **kwargs)
        except Exception as exc:  # sqlalchemy raises many types; the user needs URL + cause
            raise ValueError(f"storage {redact(text)}: cannot open it: {redact(str(exc))}") from exc


def is_journal(storage: str | Path) -> bool:
    """Whether ``storage`` names a journal (Redis or file), which has no Optuna heartbeat."""
    text = str(storage)
    return text.startswith(("redis://", "rediss://", "unix://", "journal:")) or text.endswith(
        (".log", ".jsonl"))


def _open_redis_journal(url: str) -> optuna.storages.BaseStorage:
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        import redis  # noqa: F401 - JournalRedisBackend needs it
        from optuna.storages.journal import JournalRedisBackend, JournalStorage
    except ImportError as exc:
        raise ValueError(f"storage {redact(url)}: Redis needs the `redis` package "
                         "(pip install 'optuna-merge3[redis]')") from exc
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    prefix = query.pop("prefix", "")
    plain = urlunsplit(parts._replace(query=urlencode(query)))
    import warnings

    with warnings.catch_warnings():  # JournalRedisBackend is "experimental" since Optuna 3.1
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            backend = JournalRedisBackend(plain, prefix=prefix)
            backend._redis.ping()  # fail here, naming the URL, not in the first trial
            return JournalStorage(backend)
        except Exception as exc:  # redis raises several connection error types
            raise ValueError(f"storage {redact(url)}: cannot open it: {redact(str(exc))}") from exc


def storage_file_missing(storage: str | Path) -> bool:
    """Whether ``storage`` is a SQLite or journal file that does not exist yet (opening it would
    create it: read-only commands check this first)."""
    text = str(storage)
    if text.startswith("sqlite:///"):
        path = text.removeprefix("sqlite:///")
        return path != ":memory:" and not Path(path).exists()
    if "://" not in text:
        return not Path(text.removeprefix("journal:")).exists()
    return False


def load_existing_study(
    name: str, storage: str | optuna.storages.BaseStorage, sampler: BaseSampler | None = None
) -> optuna.Study | None:
    """The study ``name`` if ``storage`` holds it, else None (nothing is created)."""
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler)
    except KeyError:
        return None


def check_signature(
    study: optuna.Study,
    signature: Mapping[str, Any],
    *,
    directions: list[str] | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> None:
    """Refuse a study whose stored signature (or directions) differ from ``signature``.

    Args:
        normalize: applied to both signatures before comparing (e.g. to read a signature
            stored by an older version in today's form).

    Raises:
        SignatureMismatchError: the message says what changed.
    """
    new = json.loads(json.dumps(signature, sort_keys=True, default=str))
    stored = study.user_attrs.get(SIGNATURE_KEY)
    if stored is not None:
        old = normalize(stored) if normalize else stored
        new = normalize(new) if normalize else new
        if isinstance(old, dict) and isinstance(new, dict) and "inputs" in new and (
                "inputs" not in old):
            _logger.warning("study %r was created before input fingerprints: the content of its "
                            "weights and reference files cannot be compared", study.study_name)
            new = {k: v for k, v in new.items() if k != "inputs"}
        if old != new:
            raise SignatureMismatchError(
                f"study {study.study_name!r} exists with a different config; refusing to resume "
                f"it. {describe_signature_change(old, new)}. Use a new study name (or delete "
                "the study) to start over."
            )
    if directions is not None and (
        [d.name.lower() for d in study.directions] != [d.lower() for d in directions]
    ):
        stored_dirs = [d.name.lower() for d in study.directions]
        raise SignatureMismatchError(
            f"study {study.study_name!r}: stored directions {stored_dirs} differ from {directions}"
        )


def create_or_resume_study(
    name: str,
    storage: str | optuna.storages.BaseStorage,
    *,
    directions: list[str],
    sampler: BaseSampler,
    signature: Mapping[str, Any],
    metric_names: list[str] | None = None,
    normalize: Callable[[Any], Any] | None = None,
) -> tuple[optuna.Study, bool]:
    """Create the study, or load it and check that its stored signature matches.

    Nothing is written to an existing study before its signature is checked.

    Returns:
        (study, resumed): ``resumed`` is True when the study already existed.

    Raises:
        SignatureMismatchError: the study exists with another search space / task set /
            sampler; the message says what changed.
    """
    signature = json.loads(json.dumps(signature, sort_keys=True, default=str))
    study = load_existing_study(name, storage, sampler)
    resumed = study is not None
    if study is None:
        try:
            study = optuna.create_study(
                study_name=name, storage=storage, sampler=sampler, directions=directions
            )
        except optuna.exceptions.DuplicatedStudyError:  # another worker won the race
            study = optuna.load_study(study_name=name, storage=storage, sampler=sampler)
            resumed = True
    check_signature(study, signature, directions=directions, normalize=normalize)
    if study.user_attrs.get(SIGNATURE_KEY) is None:
        study.set_user_attr(SIGNATURE_KEY, signature)
    if metric_names and study.metric_names is None:
        import warnings

        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, stable in practice
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(metric_names)
    return study, resumed


def describe_signature_change(old: Any, new: Any, path: str = "") -> str:
    """A readable list of the keys that differ between two JSON-like signatures."""
    changes = list(_diff(old, new, path))
    shown = "; ".join(changes[:6]) + (f"; and {len(changes) - 6} more" if len(changes) > 6 else "")
    return f"changed: {shown}" if changes else "no change"


def _diff(old: Any, new: Any, path: str) -> Iterable[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                yield f"{sub} added ({_short(new[key])})"
            elif key not in new:
                yield f"{sub} removed (was {_short(old[key])})"
            else:
                yield from _diff(old[key], new[key], sub)
    elif isinstance(old, list) and isinstance(new, list) and (
        len(old) == len(new) or all(isinstance(x, dict) for x in old + new)
    ):
        for i, (a, b) in enumerate(zip(old, new)):  # noqa: B905 - unequal lengths on purpose
            yield from _diff(a, b, f"{path}[{i}]")
        for i in range(len(new), len(old)):
            yield f"{path}[{i}] removed (was {_short(_label(old[i]))})"
        for i in range(len(old), len(new)):
            yield f"{path}[{i}] added ({_short(_label(new[i]))})"
    elif old != new:
        yield f"{path or 'value'}: {_short(old)} -> {_short(new)}"


def _label(value: Any) -> Any:
    """A named entry (a task) by its name, anything else as itself."""
    return value["name"] if isinstance(value, dict) and "name" in value else value


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def seed_population(study: optuna.Study, seeds: Mapping[str, Mapping[str, float]]) -> int:
    """Enqueue the generation-0 seeds (e.g. each endpoint and the uniform merge) once.

    Returns:
        The number of seeds enqueued now (0 on a resume: they were enqueued before).
    """
    if study.user_attrs.get(SEEDED_KEY):
        return 0
    for label, params in seeds.items():
        study.enqueue_trial(dict(params), user_attrs={ROLE_KEY: seed_role(label), SEED_KEY: label},
                            skip_if_exists=True)
    study.set_user_attr(SEEDED_KEY, list(seeds))
    return len(seeds)


def trial_role(trial: FrozenTrial) -> str:
    """What a trial is: ``endpoint`` / ``uniform`` (a generation-0 seed), ``retry`` (a copy of a
    killed worker's trial, ``RetryHeartbeatStaleTrialCallback``) or ``search`` (sampled)."""
    if "failed_trial" in trial.system_attrs:
        return "retry"
    seed = trial.user_attrs.get(SEED_KEY)
    return seed_role(seed) if seed else "search"


def seed_role(label: str) -> str:
    """``"endpoint"`` for a seed label ``"endpoint:<name>"``, else the label (``"uniform"``)."""
    return label.split(":", 1)[0]


def label_trial(trial: optuna.Trial) -> str:
    """Set the running trial's ``role`` user attribute and, for a seed or a retry, a trial note
    saying what it is (optuna-dashboard shows the note at the top of the trial's page; the user
    attributes are listed alphabetically, far below).

    Returns:
        The role.
    """
    frozen = trial.study._storage.get_trial(trial._trial_id)  # holds the system attrs
    role = trial_role(frozen)
    trial.set_user_attr(ROLE_KEY, role)
    if role != "search":
        from optuna_dashboard import save_note

        save_note(trial, _role_note(role, frozen))
    return role


def _role_note(role: str, trial: FrozenTrial) -> str:
    seed = trial.user_attrs.get(SEED_KEY, "")
    what = {
        "endpoint": f"**Endpoint `{seed.partition(':')[2]}`**, as it is: a generation-0 seed",
        "uniform": "**Uniform merge** (every endpoint with the same weight): a generation-0 seed",
    }
    if role == "retry":
        original = trial.system_attrs["failed_trial"]
        kind = f" ({seed.replace(':', ' ')} seed)" if seed else ""
        return (f"**Retry** of trial {original}{kind}: its worker stopped mid-trial, so the same "
                "parameters run again.")
    return what[role] + " of the search, evaluated like every trial."


def upload_json_artifact(
    trial: optuna.Trial | FrozenTrial | optuna.Study, store: Any, name: str, payload: Any
) -> str:
    """Upload a small JSON document as an Optuna artifact (shown by optuna-dashboard).

    Returns:
        The artifact id.
    """
    import tempfile

    from optuna.artifacts import upload_artifact

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(json.dumps(payload, indent=1, default=str), encoding="utf-8")
        return upload_artifact(
            study_or_trial=trial, file_path=str(path), artifact_store=store,
            mimetype="application/json",
        )
