"""``Merge3Objective``: one Optuna trial = merge in memory, evaluate a subset, estimate.

The objective follows Optuna's callable-class convention::

    objective = Merge3Objective(merger, space, model, tokenizer, setup)
    study = optuna.create_study(directions=["maximize"] * len(setup.tasks))
    study.optimize(objective, n_trials=40)

Each trial returns one value per task: the MERGE^3 estimate (paper eq. 4 / 5) of the merged
model's accuracy on the task's FULL item set, computed from its answers on the small subset.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import traceback
from typing import Any

import numpy as np
import optuna

from optuna_merge3.pipeline import FitnessSetup

__all__ = ["Merge3Objective", "genotype_seed"]

_logger = logging.getLogger(__name__)


def genotype_seed(params: dict[str, float], base_seed: int = 0) -> int:
    """A seed derived from the genotype, so the same parameters give the same (DARE) model."""
    blob = json.dumps({"seed": base_seed, **params}, sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:4], "little")


class Merge3Objective:
    """Trial -> in-memory merge -> subset evaluation -> IRT estimate, one value per task.

    Args:
        merger: an :class:`~optuna_merge3.merging.InMemoryMerger`.
        space: the :class:`~optuna_merge3.merging.MergeSpace` whose parameters the sampler sets.
        model: the live model the merger writes into (full precision or 4-bit).
        tokenizer: its tokenizer.
        setup: the Extract / Estimate output (:func:`~optuna_merge3.pipeline.prepare_fitness`).
        batch_size: generation batch size.
        seed: base seed for stochastic merge methods (combined with the genotype).
        dedupe: claim each genotype in the storage before evaluating it; a trial whose
            genotype another running or complete trial claimed is pruned and links it
            (:func:`~optuna_merge3.workers.claim_genotype`).
        artifact_store: optional Optuna artifact store for per-trial answers (JSON).
        budget: a global budget of complete trials shared by every worker of the study
            (:func:`~optuna_merge3.workers.claim_budget_slot`); None for no limit.
        say: where a worker waiting for a budget slot reports what it waits for (default: a
            log warning).
        beat_s: interval of the trial beat for storages without an Optuna heartbeat (journal
            file, Redis), so a killed worker's trial is recognised from any host; None: off.
    """

    def __init__(
        self,
        merger: Any,
        space: Any,
        model: Any,
        tokenizer: Any,
        setup: FitnessSetup,
        *,
        batch_size: int = 32,
        seed: int = 0,
        dedupe: bool = True,
        artifact_store: Any | None = None,
        budget: int | None = None,
        say: Any | None = None,
        beat_s: float | None = None,
    ) -> None:
        self.merger = merger
        self.space = space
        self.model = model
        self.tokenizer = tokenizer
        self.setup = setup
        self.batch_size = batch_size
        self.seed = seed
        self.dedupe = dedupe
        self.artifact_store = artifact_store
        self.budget = budget
        self.say = say
        self.beat_s = beat_s

    @property
    def metric_names(self) -> list[str]:
        """One name per objective value, for ``study.set_metric_names``."""
        return [f"{t.config.name} ({t.config.estimator})" for t in self.setup.tasks]

    def __call__(self, trial: optuna.Trial) -> list[float]:
        from optuna_merge3.study import label_trial
        from optuna_merge3.workers import run_claimed

        label_trial(trial)  # role: endpoint / uniform / search / retry
        return run_claimed(trial, self.space.suggest, self._evaluate_or_fail, budget=self.budget,
                           dedupe=self.dedupe, beat_s=self.beat_s, say=self.say)

    def _evaluate_or_fail(self, trial: optuna.Trial, params: dict[str, float]) -> list[float]:
        try:
            return self._evaluate(trial, params)
        except Exception as exc:  # a failed trial must never stop the study
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
            trial.set_user_attr("traceback", traceback.format_exc(limit=5)[-2000:])
            _logger.warning("trial %d failed: %s", trial.number, exc)
            return [math.nan] * len(self.setup.tasks)

    def _evaluate(self, trial: optuna.Trial, params: dict[str, float]) -> list[float]:
        from optuna_merge3 import evaluation, irt

        started = time.perf_counter()
        self.merger.apply(params, self.model, seed=genotype_seed(params, self.seed))
        merge_s = time.perf_counter() - started
        generate_s = estimate_s = 0.0
        values, answers, n_items = [], {}, 0
        for task_setup in self.setup.tasks:
            name = task_setup.config.name
            t0 = time.perf_counter()
            result = evaluation.evaluate(
                self.model,
                self.tokenizer,
                task_setup.task,
                indices=task_setup.subset.indices,
                batch_size=self.batch_size,
            )
            t1 = time.perf_counter()
            correct = np.asarray(result.correct, dtype=float)
            estimate = irt.estimate_accuracy(
                task_setup.config.estimator,
                task_setup.irt,
                task_setup.subset,
                correct,
                endpoint_abilities=task_setup.endpoint_abilities,
                **self._estimator_kwargs(task_setup),
            )
            generate_s += t1 - t0
            estimate_s += time.perf_counter() - t1
            n_items += len(correct)
            if not math.isfinite(estimate.value):
                raise ValueError(f"estimator {task_setup.config.estimator} returned {estimate.value}")
            values.append(float(estimate.value))
            trial.set_user_attr(f"subset_accuracy/{name}", float(correct.mean()))
            trial.set_user_attr(f"estimate/{name}", float(estimate.value))
            if estimate.stderr is not None:
                trial.set_user_attr(f"stderr/{name}", float(estimate.stderr))
            if "lambda" in estimate.details:
                trial.set_user_attr(f"lambda/{name}", np.asarray(estimate.details["lambda"]).tolist())
            answers[name] = [
                {"id": task_setup.task.items[i].id, "answer": a, "correct": bool(c)}
                for i, a, c in zip(
                    task_setup.subset.indices, result.answers, result.correct, strict=True
                )
            ]
        trial.set_user_attr("estimators", [t.config.estimator for t in self.setup.tasks])
        trial.set_user_attr("items_evaluated", n_items)
        trial.set_user_attr("seconds/merge", round(merge_s, 4))
        trial.set_user_attr("seconds/generate", round(generate_s, 4))
        trial.set_user_attr("seconds/estimate", round(estimate_s, 4))
        trial.set_user_attr("flops_estimated", self._flops(n_items))
        if self.artifact_store is not None:
            from optuna_merge3.study import upload_json_artifact

            upload_json_artifact(trial, self.artifact_store, "answers.json", answers)
        return values

    def _estimator_kwargs(self, task_setup: Any) -> dict[str, Any]:
        from optuna_merge3.irt import MERGE_AWARE

        kw: dict[str, Any] = {}
        if task_setup.config.estimator in MERGE_AWARE:
            kw["constraint"] = self.setup.lambda_constraint
            # gmp-IRT* tunes c on them; every merge-aware stderr counts the endpoints' error.
            kw["endpoint_responses"] = task_setup.endpoint_correct.astype(float)
        return kw

    def _flops(self, n_items: int) -> float:
        """Rough forward FLOPs of the evaluation: 2 * parameters * tokens (prompt + answer)."""
        n_params = sum(p.numel() for p in self.model.parameters())
        tokens_per_item = 64  # a coarse average of prompt + generated tokens on small tasks
        return float(2 * n_params * tokens_per_item * n_items)
