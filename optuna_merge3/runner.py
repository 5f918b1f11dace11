"""``StudyRunner``: the whole pipeline for one study config, shared by the CLI and notebooks.

It owns the expensive objects (merger, live model, tokenizer, Estimate output) so that a
notebook can run trials, inspect the front and export a merge without reloading anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

from optuna_merge3.config import StudyConfig, load_config
from optuna_merge3.pipeline import FitnessSetup, correctness_cache, prepare_fitness
from optuna_merge3.redaction import redact

__all__ = ["DEFAULT_HEARTBEAT_S", "StudyRunner", "TrialSummary"]

_logger = logging.getLogger(__name__)

# Heartbeat of RDB storages unless told otherwise: a worker killed mid-trial (SIGKILL, OOM) leaves
# a RUNNING trial that is failed and retried about 2 heartbeats later, by a live worker or by the
# next resume. Without it such a trial would hold its budget slot for good.
DEFAULT_HEARTBEAT_S = 30


@dataclass
class TrialSummary:
    """One row of the results table: a trial (or an endpoint) with its per-task numbers."""

    label: str
    params: dict[str, float]
    estimates: list[float] | None  # the fitness values the search saw
    full_accuracy: list[float] | None  # accuracy on all items of each task (held-out truth)
    trial_number: int | None = None
    kind: str = "front"  # "front", "endpoint" or "uniform"


class StudyRunner:
    """Build everything a study config describes and run it.

    Args:
        config: a :class:`StudyConfig` or a path to its TOML file.
        storage: an RDB URL or journal path overriding the config's storage.
        progress: a callback for one-line progress messages (the CLI prints them).
        heartbeat_interval: heartbeat seconds of an RDB storage (0 or None: no heartbeat); with
            it the trial of a killed worker is failed and retried
            (``RetryHeartbeatStaleTrialCallback``) instead of holding a budget slot.
    """

    def __init__(
        self,
        config: StudyConfig | str | Path,
        storage: str | None = None,
        progress: Callable[[str], None] | None = None,
        heartbeat_interval: int | None = DEFAULT_HEARTBEAT_S,
    ) -> None:
        self.config = config if isinstance(config, StudyConfig) else load_config(config)
        self.storage_url = storage or self.config.storage
        self.storage_override = storage  # repeated in the commands the runner suggests
        self.progress = progress or _logger.info
        self.heartbeat_interval = heartbeat_interval or None
        self._storage: Any = None
        self._checked = False
        self._merger: Any = None
        self._model: Any = None
        self._tokenizer: Any = None
        self._setup: FitnessSetup | None = None
        self._study: Any = None
        self._space: Any = None
        self._plan: Any = None

    # -- the expensive parts, built on first use -------------------------------------------
    @property
    def space(self) -> Any:
        if self._space is None:
            from optuna_merge3.merging import MergeSpace

            self._space = MergeSpace.from_config(self.config.merge)
        return self._space

    @property
    def memory_plan(self) -> Any:
        """The config's :class:`~optuna_merge3.plan.MemoryPlan` (reads safetensors headers)."""
        if self._plan is None:
            from optuna_merge3.config import ConfigError
            from optuna_merge3.plan import plan_memory, study_max_new_tokens

            try:
                self._plan = plan_memory(self.config, study_max_new_tokens(self.config))
            except ValueError as exc:
                raise ConfigError(f"{self._where}: {exc}") from exc
        return self._plan

    @property
    def _where(self) -> str:
        return str(self.config.source) if self.config.source else "<config>"

    @property
    def merger(self) -> Any:
        if self._merger is None:
            import torch

            from optuna_merge3.merging import InMemoryMerger

            evaluation = self.config.evaluation
            if evaluation.threads > 0:
                torch.set_num_threads(evaluation.threads)
            mode = self.memory_plan.check(self._where)
            self.progress(f"[load] base + {len(self.config.merge.endpoints)} endpoints "
                          f"({mode.label})")
            self._merger = InMemoryMerger(
                self.config.merge.base,
                self.config.merge.endpoints,
                self.space,
                device=evaluation.device,
                dtype=getattr(torch, evaluation.dtype),
                stream=mode.memory == "stream",
                rng=evaluation.rng,
            )
            self._model = self._merger.load_model(quantization=evaluation.quantization)
            self._model.eval()
            self._tokenizer = self._merger.load_tokenizer()
        return self._merger

    @property
    def model(self) -> Any:
        _ = self.merger
        return self._model

    @property
    def tokenizer(self) -> Any:
        _ = self.merger
        return self._tokenizer

    @property
    def setup(self) -> FitnessSetup:
        """Extract + Estimate: read from the study's storage when a worker stored it there,
        else computed (cached on disk under ``out_dir/estimate``) and stored with the study."""
        if self._setup is None:
            self._setup = self._stored_estimate() or prepare_fitness(
                self.config, self.merger, self.model, self.tokenizer, progress=self.progress
            )
        return self._setup

    def _stored_estimate(self) -> FitnessSetup | None:
        """The Estimate results another worker stored in the (signature-checked) study."""
        from optuna_merge3 import study as study_lib
        from optuna_merge3.shared_state import load_estimate

        study = self._study
        if study is None and self._checked:
            study = study_lib.load_existing_study(self.config.name, self.open_storage())
        setup = load_estimate(study, self.config, self.tokenizer) if study is not None else None
        if setup is not None:
            self.progress("[estimate] IRT fit, endpoint answers and subsets read from the study "
                          "storage")
        return setup

    @property
    def objective(self) -> Any:
        """The study's :class:`~optuna_merge3.objective.Merge3Objective`."""
        from optuna_merge3.objective import Merge3Objective

        return Merge3Objective(
            self.merger,
            self.space,
            self.model,
            self.tokenizer,
            self.setup,
            batch_size=self.config.evaluation.batch_size,
            seed=self.config.seed,
            artifact_store=self.artifact_store,
            budget=self.config.n_trials,
            say=self.progress,
            beat_s=self.heartbeat_interval if self._journal else None,
        )

    @property
    def _journal(self) -> bool:
        from optuna_merge3.study import is_journal

        return is_journal(self.storage)

    def _check_heartbeat(self) -> None:
        """Refuse a study without any heartbeat where a killed worker could block it.

        SQLite and journal files live on one machine: a dead worker's trial is recognised there
        by its recorded pid. On PostgreSQL / MySQL / Redis workers may run on other machines,
        whose dead processes only a heartbeat reveals.
        """
        local = self.storage.startswith("sqlite:") or (
            self._journal and not self.storage.startswith(("redis", "unix")))
        if not self.heartbeat_interval and not local:
            raise ValueError(
                f"--heartbeat 0 on {redact(self.storage)}: a worker killed on another machine "
                "would leave its trial RUNNING and every other worker waiting for it; keep a "
                f"heartbeat (default {DEFAULT_HEARTBEAT_S} s)")

    @property
    def artifact_store(self) -> Any:
        """The study's artifact store, inside its storage (``optuna-merge3 dashboard`` shows
        it): every worker reads and writes it with nothing but the storage."""
        return self._artifact_store_of(self._study or self.open_study(create=False))

    def _artifact_store_of(self, study: optuna.Study) -> Any:
        from optuna_merge3.shared_state import StudyArtifactStore

        return StudyArtifactStore(self.open_storage(), study._study_id)

    @property
    def storage(self) -> str:
        """The storage URL: the config's, or a SQLite file in the study folder."""
        if self.storage_url:
            return self.storage_url
        return f"sqlite:///{(self.config.out_dir / 'study.db').resolve()}"

    # -- the study ---------------------------------------------------------------------------
    def _sampler(self) -> Any:
        from optuna_merge3 import study as study_lib

        return study_lib.create_sampler(
            self.config.sampler.name,
            n_objectives=len(self.config.tasks),
            seed=self.config.seed,
            population_size=self.config.sampler.population_size,
        )

    def _signature(self) -> dict[str, Any]:
        return {**self.config.signature(), "space": self.space.signature()}

    def open_storage(self) -> Any:
        """The study's storage object (opened once, with the runner's heartbeat)."""
        if self._storage is None:
            from optuna_merge3 import study as study_lib

            rdb = "://" in self.storage  # a journal file has no heartbeat
            self._storage = study_lib.open_storage(
                self.storage, heartbeat_interval=self.heartbeat_interval if rdb else None
            )
        return self._storage

    def check(self) -> bool:
        """Check everything that is cheap to check before any model is loaded or study written.

        The merge space and sampler build, every task and reference file reads and fits its
        ``n_items``, the memory plan fits (printed through ``progress``), the storage opens, and
        an existing study of this name has the same signature. Nothing is created.

        Returns:
            Whether the study already exists.

        Raises:
            ValueError (``ConfigError``, ``SignatureMismatchError``): what is wrong, and where.
        """
        from optuna_merge3 import study as study_lib
        from optuna_merge3.config import ConfigError, portable_signature
        from optuna_merge3.pipeline import check_inputs

        where = self._where
        try:
            _ = self.space
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from exc
        _check_device(self.config.evaluation.device, where)
        check_inputs(self.config)
        plan = self.memory_plan
        self.progress(f"[plan] memory:\n{plan.table()}")
        plan.check(where)
        sampler = self._sampler()
        existing = study_lib.load_existing_study(self.config.name, self.open_storage(), sampler)
        if existing is not None:
            study_lib.check_signature(existing, self._signature(),
                                      directions=self.config.directions,
                                      normalize=portable_signature)
        self._checked = True
        return existing is not None

    def open_study(
        self, heartbeat_interval: int | None = None, create: bool = True
    ) -> optuna.Study:
        """Create the study (seeding generation 0) or resume it after checking its config.

        Args:
            heartbeat_interval: overrides the runner's heartbeat if the storage is not open yet.
            create: False for read-only uses (``best``, ``export``, ``report``, ``dashboard``):
                a missing study is an error instead of a new empty one.
        """
        if self._study is not None:
            return self._study
        from optuna_merge3 import study as study_lib
        from optuna_merge3.config import portable_signature

        if heartbeat_interval is not None and self._storage is None:
            self.heartbeat_interval = heartbeat_interval or None
        if not create and (study_lib.storage_file_missing(self.storage)
                           or study_lib.load_existing_study(self.config.name,
                                                            self.open_storage()) is None):
            raise ValueError(
                f"study {self.config.name!r} not found in {redact(self.storage)} (nothing "
                f"was created); run `optuna-merge3 run {self.cli_args()}` first"
            )
        sampler_cfg = self.config.sampler
        study, resumed = study_lib.create_or_resume_study(
            self.config.name,
            self.open_storage(),
            directions=self.config.directions,
            sampler=self._sampler(),
            signature=self._signature(),
            metric_names=[f"{t.name} ({t.estimator})" for t in self.config.tasks],
            normalize=portable_signature,
        )
        if self._setup is not None and study_lib.SIGNATURE_KEY in study.user_attrs:
            from optuna_merge3.shared_state import has_estimate, save_estimate

            if not has_estimate(study):  # for workers on other machines
                save_estimate(study, self._setup)
        if not resumed:
            self._write_note(study)
            if sampler_cfg.seed_population:
                study_lib.seed_population(study, self.seed_genotypes())
        if self._setup is not None:
            self._upload_estimate(study)
        self.progress(
            f"[study] {'created' if not resumed else 'resumed' if create else 'opened'} "
            f"{self.config.name!r} in "
            f"{redact(self.storage)} ({_n_complete(study)} complete trials so far)"
        )
        self._study = study
        return study

    def cli_args(self) -> str:
        """``CONFIG [--storage URL]``: what a suggested ``optuna-merge3`` command needs to reach
        this same study (without ``--storage`` it would open, or create, another one)."""
        import shlex

        where = shlex.quote(str(self.config.source or "CONFIG"))
        if self.storage_override:
            where += f" --storage {shlex.quote(redact(self.storage_override))}"
        return where

    def seed_genotypes(self) -> dict[str, dict[str, float]]:
        """Generation-0 seeds: each endpoint (where the space can express it) and the uniform."""
        seeds = {}
        for name in self.config.merge.endpoints:
            params = self.space.endpoint_params(name)
            if params is not None:
                seeds[f"endpoint:{name}"] = params
        seeds["uniform"] = self.space.uniform_params()
        return seeds

    def run(self, n_trials: int | None = None, show_progress: bool = False) -> optuna.Study:
        """Run trials until the study holds ``n_trials`` complete ones (default: the config's).

        The budget is global: a resume or a second worker only runs what is missing.
        """
        budget = n_trials or self.config.n_trials
        self._check_heartbeat()
        if self._study is None and not self._checked:
            self.check()  # a bad config fails here, before a model is loaded or a study written
        _ = self.setup  # load + Extract + Estimate before the study is created or a trial timed
        study = self.open_study()
        objective = self.objective
        objective.budget = budget
        done = _n_complete(study)
        if done >= budget:
            self.progress(f"[evolve] {done}/{budget} complete trials: the budget is met, nothing "
                          "to run (a larger --n-trials or n_trials runs more)")
        else:
            self.progress(f"[evolve] {done}/{budget} complete trials; running {budget - done} "
                          "more")
        callbacks: list[Any] = [
            optuna.study.MaxTrialsCallback(budget, states=(TrialState.COMPLETE,)),
            _StopAfterAttempts(4 * budget),  # many NSGA-II repeats are pruned, not counted
        ]
        if self.config.sampler.name in ("nsga2", "nsga3"):
            from optuna_merge3.workers import CrowdWarning

            callbacks.append(CrowdWarning(self.config.sampler.population_size, self.progress))
        if show_progress:
            callbacks.append(_ProgressBar(budget, done))
        started = time.perf_counter()
        try:
            if done < budget:
                from optuna_merge3.workers import optimize

                optimize(study, objective, callbacks=callbacks, timeout=self.config.timeout_s,
                         say=self.progress)
        finally:  # also on SIGTERM / Ctrl-C, so the bar does not garble the last message
            for callback in callbacks:
                if hasattr(callback, "close"):
                    callback.close()
        if done < budget:
            after = _n_complete(study)
            short = "" if after >= budget else (
                f"; {budget - after} short of the budget, run again to continue")
            self.progress(f"[evolve] {after - done} trials completed in "
                          f"{time.perf_counter() - started:.1f} s ({after}/{budget}){short}")
        return study

    def requeue_interrupted(self) -> list[int]:
        """After SIGTERM / Ctrl-C: re-queue the trial(s) this process was running (Optuna failed
        them), so the next run evaluates those genotypes first. Returns their numbers."""
        if self._study is None:
            return []
        from optuna_merge3.workers import requeue_interrupted

        return requeue_interrupted(self._study)

    # -- inspection ----------------------------------------------------------------------------
    def full_accuracy(self, params: dict[str, float], seed: int | None = None) -> list[float]:
        """Accuracy of a genotype on ALL items of every task (the held-out truth in the demo)."""
        from optuna_merge3 import evaluation
        from optuna_merge3.objective import genotype_seed

        setup = self.setup
        self.merger.apply(params, self.model, seed=genotype_seed(params, self.config.seed))
        batch = self.config.evaluation.batch_size
        # The Estimate step's correctness cache, keyed by the merged weights: `best` and `report`
        # after `run` do not evaluate the front again.
        cache = correctness_cache(self.config)
        fingerprint = evaluation.model_fingerprint(self.model)
        return [
            float(np.mean(cache.get_or_compute(self.model, self.tokenizer, t.task,
                                               fingerprint=fingerprint, batch_size=batch)))
            for t in setup.tasks
        ]

    def summary(self, with_truth: bool = True) -> list[TrialSummary]:
        """The Pareto front (or best trial), then each endpoint and the uniform merge."""
        study = self.open_study(create=False)
        if _n_complete(study) == 0:
            raise ValueError(f"study {self.config.name!r} has no complete trial yet")
        from optuna_merge3.study import SEED_KEY

        front = study.best_trials if len(self.config.tasks) > 1 else [study.best_trial]
        # The generation-0 seeds ARE the endpoints and the uniform merge: their estimates are
        # what the search saw for them (the latest complete one, should a seed have been retried).
        seeds = {t.user_attrs[SEED_KEY]: t for t in study.get_trials(
            deepcopy=False, states=(TrialState.COMPLETE,)) if SEED_KEY in t.user_attrs}
        seed_of = {t.number: label for label, t in seeds.items()}
        rows = [
            TrialSummary(_seed_label(f"trial {t.number}", seed_of.get(t.number)), t.params,
                         list(t.values), None, t.number)
            for t in sorted(front, key=lambda t: t.number)
        ]
        for i, name in enumerate(self.setup.endpoint_names):
            acc = [float(t.endpoint_correct[i].mean()) for t in self.setup.tasks]
            rows.append(_seed_row(f"endpoint {name}", {}, seeds.get(f"endpoint:{name}"), acc,
                                  "endpoint"))
        rows.append(_seed_row("uniform merge", self.space.uniform_params(), seeds.get("uniform"),
                              None, "uniform"))
        if with_truth:
            for row in rows:
                if row.full_accuracy is None:
                    row.full_accuracy = self.full_accuracy(row.params)
        return rows

    def export(self, trial_number: int, out_dir: str | Path) -> Path:
        """``save_pretrained`` of a trial's merge + tokenizer + ``mergekit.yaml``."""
        from optuna_merge3.objective import genotype_seed

        study = self.open_study(create=False)
        trials = study.get_trials(deepcopy=False)
        if not 0 <= trial_number < len(trials):
            raise ValueError(
                f"study {self.config.name!r} has no trial {trial_number} (trials 0 to "
                f"{len(trials) - 1}); `optuna-merge3 best` lists the front"
            )
        trial = trials[trial_number]
        if trial.state != TrialState.COMPLETE:
            raise ValueError(f"trial {trial_number} is {trial.state.name}, not COMPLETE")
        out = Path(out_dir)
        self.merger.export(trial.params, out, seed=genotype_seed(trial.params, self.config.seed))
        return out

    def _write_note(self, study: optuna.Study) -> None:
        try:
            from optuna_dashboard import save_note
        except ImportError:  # pragma: no cover - optuna-dashboard is a dependency
            return
        from optuna_merge3.report import study_note

        # the dashboard shows the note to anyone: no storage password in it
        save_note(study, redact(study_note(self.config, self._setup, self.cli_args())))

    def _upload_estimate(self, study: optuna.Study) -> None:
        """The Estimate step's summary as the study-level artifact ``estimate.json`` (once)."""
        from optuna.artifacts import get_all_artifact_meta

        from optuna_merge3.study import ESTIMATE_ARTIFACT, upload_json_artifact

        if any(a.filename == ESTIMATE_ARTIFACT for a in get_all_artifact_meta(study)):
            return
        upload_json_artifact(study, self._artifact_store_of(study), ESTIMATE_ARTIFACT,
                             self.setup.summary(details=True))


def _seed_label(label: str, seed: str | None) -> str:
    if seed is None:
        return label
    return f"{label} ({'uniform merge' if seed == 'uniform' else seed.replace(':', ' ')})"


def _seed_row(label: str, params: dict[str, float], trial: Any, full: list[float] | None,
              kind: str) -> TrialSummary:
    """An endpoint's or the uniform merge's row, with its seed trial's estimates if it ran."""
    if trial is None:
        return TrialSummary(label, params, None, full, None, kind)
    return TrialSummary(f"{label} (trial {trial.number})", params, list(trial.values), full,
                        trial.number, kind)


def _n_complete(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))


class _StopAfterAttempts:
    """Stop a worker after ``limit`` finished trials of any state (a guard against endless
    pruned repeats when the sampler has converged)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.count += 1
        if self.count >= self.limit:
            _logger.warning("stopping after %d trials in this worker", self.count)
            study.stop()


class _ProgressBar:
    """A tqdm bar over complete trials, updated by an Optuna callback."""

    def __init__(self, budget: int, done: int) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=budget, initial=done, desc="trials", unit="trial")

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state == TrialState.COMPLETE:
            self.bar.update(1)
            values = ", ".join(f"{100 * v:.1f}%" for v in trial.values)  # as in the tables
            self.bar.set_postfix_str(f"#{trial.number}: {values}")

    def close(self) -> None:
        self.bar.close()


def _check_device(device: str, where: str) -> None:
    """The configured device exists on this machine (before any model is loaded onto it)."""
    import torch

    from optuna_merge3.config import ConfigError

    kind, _, index = device.partition(":")
    if kind == "cuda":
        count = torch.cuda.device_count()
        if count <= int(index or 0):
            raise ConfigError(f"{where}: evaluation.device: {device!r} but this machine has "
                              f"{count} CUDA device(s); use 'cpu' here")
    elif kind == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"{where}: evaluation.device: 'mps' is not available on this machine")
