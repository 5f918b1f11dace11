"""What every worker of a study needs besides the config and the models, kept in the study's
storage: the Estimate step's results and the trial artifacts.

A second machine that shares only the storage (PostgreSQL, Redis) with the first one reads the
IRT fit, the endpoints' correctness and abilities and the subsets from the study instead of
fitting and evaluating again, and its trials' artifacts are readable by every other machine and
by ``optuna-merge3 dashboard``.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Any, BinaryIO

import numpy as np
import optuna

__all__ = ["ESTIMATE_KEY", "StudyArtifactStore", "has_estimate", "load_estimate", "save_estimate"]

_logger = logging.getLogger(__name__)

ESTIMATE_KEY = "merge3:estimate"
_ARTIFACT_PREFIX = "merge3:artifact:"


class StudyArtifactStore:
    """An Optuna artifact store (``ArtifactStore`` protocol) inside the study's own storage.

    Each artifact is one base64 study system attribute, so it suits small files (per-trial
    answers, a few KB); the study storage needs nothing else to share them.
    """

    def __init__(self, storage: optuna.storages.BaseStorage, study_id: int) -> None:
        self.storage, self.study_id = storage, study_id

    def open_reader(self, artifact_id: str) -> BinaryIO:
        attrs = self.storage.get_study_system_attrs(self.study_id)
        key = _ARTIFACT_PREFIX + artifact_id
        if key not in attrs:
            from optuna.artifacts.exceptions import ArtifactNotFound

            raise ArtifactNotFound(f"artifact {artifact_id} is not in the study storage")
        return io.BytesIO(base64.b64decode(attrs[key]))

    def write(self, artifact_id: str, content_body: BinaryIO) -> None:
        blob = base64.b64encode(content_body.read()).decode("ascii")
        self.storage.set_study_system_attr(self.study_id, _ARTIFACT_PREFIX + artifact_id, blob)

    def remove(self, artifact_id: str) -> None:
        # Storages cannot delete a study attribute; an emptied one reads as not found.
        self.storage.set_study_system_attr(self.study_id, _ARTIFACT_PREFIX + artifact_id, "")


def save_estimate(study: optuna.Study, setup: Any) -> None:
    """Store the Estimate step's output (a :class:`~optuna_merge3.pipeline.FitnessSetup`)."""
    payload = {
        "endpoint_names": setup.endpoint_names,
        "tasks": {
            t.config.name: {
                "alpha": t.irt.alpha.tolist(),
                "beta": t.irt.beta.tolist(),
                "item_ids": t.irt.item_ids,
                "meta": t.irt.meta,
                "subset": {"indices": np.asarray(t.subset.indices).tolist(),
                           "weights": np.asarray(t.subset.weights).tolist(),
                           "method": t.subset.method},
                "endpoint_correct": ["".join("1" if c else "0" for c in row)
                                     for row in t.endpoint_correct],
                "endpoint_abilities": np.asarray(t.endpoint_abilities).tolist(),
            }
            for t in setup.tasks
        },
    }
    import json

    study._storage.set_study_system_attr(
        study._study_id, ESTIMATE_KEY, json.loads(json.dumps(payload, default=str)))


def has_estimate(study: optuna.Study) -> bool:
    """Whether a worker stored the Estimate results in ``study``."""
    return ESTIMATE_KEY in study._storage.get_study_system_attrs(study._study_id)


def load_estimate(study: optuna.Study, config: Any, tokenizer: Any = None) -> Any | None:
    """The Estimate output stored in ``study`` for ``config``, or None if there is none.

    The study's signature (tasks, IRT settings, input fingerprints) was checked before, so a
    stored estimate belongs to the same inputs; task items are loaded as the Estimate step loads
    them (``tokenizer`` renders an lm-eval task's chat template, see
    :func:`~optuna_merge3.pipeline.load_task`).
    """
    from optuna_merge3 import irt
    from optuna_merge3.pipeline import FitnessSetup, TaskSetup, load_task

    stored = study._storage.get_study_system_attrs(study._study_id).get(ESTIMATE_KEY)
    if not stored or set(stored["tasks"]) != {t.name for t in config.tasks}:
        return None
    setups = []
    for task_config in config.tasks:
        entry = stored["tasks"][task_config.name]
        params = irt.IRTParams(np.asarray(entry["alpha"]), np.asarray(entry["beta"]),
                               list(entry["item_ids"]), dict(entry["meta"]))
        subset = irt.Subset(np.asarray(entry["subset"]["indices"], dtype=int),
                            np.asarray(entry["subset"]["weights"], dtype=float),
                            entry["subset"]["method"])
        correct = np.array([[c == "1" for c in row] for row in entry["endpoint_correct"]])
        task = load_task(task_config, config.evaluation.lm_eval_backend, tokenizer)
        setups.append(TaskSetup(task_config, task, params, subset, correct,
                                np.asarray(entry["endpoint_abilities"])))
    _logger.info("Estimate results read from the study storage")
    return FitnessSetup(list(stored["endpoint_names"]), setups, 0.0)
