"""Fitted item parameters of a multidimensional 2PL model, and their persistence."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from optuna_merge3._cachefile import write_npz, write_text


def responses_fingerprint(responses: np.ndarray) -> str:
    """A short digest of a models x items 0/1/NaN response matrix (shape included)."""
    arr = np.asarray(responses, dtype=float)
    coded = np.where(np.isnan(arr), -1, arr).astype(np.int8)
    digest = hashlib.sha256(str(arr.shape).encode() + coded.tobytes())
    return digest.hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass
class IRTParams:
    """Item parameters of P(Y_im = 1) = sigmoid(alpha_i . gamma_m - beta_i).

    Attributes:
        alpha: discriminations, float (n_items, d).
        beta: difficulties, float (n_items,).
        item_ids: one id per item (row of ``alpha``).
        meta: JSON-serialisable metadata: ``d``, ``priors``, ``fingerprint`` of the training
            responses, ``fit_seconds``, ``gp_b`` (the validation error of the IRT prediction
            per subset size, used by gp-IRT) and ``ability_prior`` (mean and covariance of the
            fitted population's abilities, the prior of a new model; see
            :func:`~optuna_merge3.irt.fit_irt` and :meth:`ability_prior`).
    """

    alpha: np.ndarray
    beta: np.ndarray
    item_ids: list[str] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.alpha = np.asarray(self.alpha, dtype=float)
        self.beta = np.asarray(self.beta, dtype=float)
        if self.alpha.ndim != 2:
            raise ValueError(f"alpha must be (n_items, d), got shape {self.alpha.shape}")
        if self.beta.shape != (self.alpha.shape[0],):
            raise ValueError(f"beta must be ({self.alpha.shape[0]},), got {self.beta.shape}")
        if not self.item_ids:
            self.item_ids = [str(i) for i in range(self.alpha.shape[0])]
        self.item_ids = [str(i) for i in self.item_ids]
        if len(self.item_ids) != self.alpha.shape[0]:
            raise ValueError(f"{len(self.item_ids)} item_ids for {self.alpha.shape[0]} items")

    @property
    def n_items(self) -> int:
        """Number of items."""
        return int(self.alpha.shape[0])

    @property
    def n_dims(self) -> int:
        """Dimension d of the ability space."""
        return int(self.alpha.shape[1])

    def ability_prior(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, covariance) of the Gaussian prior on a NEW model's ability.

        ``meta["ability_prior"]`` when the fit stored it (the reference population's ability
        distribution); otherwise N(0, s^2 I) with s the fit's ``ability_std`` (1 if unknown),
        the prior the reference abilities were fitted under.
        """
        stored = self.meta.get("ability_prior")
        if stored:
            return np.asarray(stored["mean"], dtype=float), np.asarray(stored["cov"], dtype=float)
        std = float((self.meta.get("priors") or {}).get("ability_std", 1.0))
        return np.zeros(self.n_dims), np.eye(self.n_dims) * std**2

    def subset(self, indices: np.ndarray | list[int]) -> IRTParams:
        """The parameters of the items ``indices`` (in that order); ``meta`` is copied."""
        idx = np.asarray(indices, dtype=int)
        meta = copy.deepcopy(self.meta)
        meta["subset_of"] = {"n_items": self.n_items, "fingerprint": self.meta.get("fingerprint")}
        return IRTParams(
            self.alpha[idx].copy(), self.beta[idx].copy(), [self.item_ids[i] for i in idx], meta
        )

    def save(self, path: str | Path) -> None:
        """Write ``path`` (npz: alpha, beta) and a sidecar ``.json`` (item ids, meta), each
        atomically."""
        path = Path(path)
        side = {"item_ids": self.item_ids, "meta": _jsonable(self.meta)}
        # Both files atomically, the sidecar first: a reader that finds the .npz finds both.
        write_text(_sidecar(path), json.dumps(side, indent=1, sort_keys=True))
        write_npz(path, alpha=self.alpha, beta=self.beta)

    @classmethod
    def load(cls, path: str | Path) -> IRTParams:
        """Read parameters written by :meth:`save`."""
        path = Path(path)
        with np.load(path) as data:
            alpha, beta = data["alpha"], data["beta"]
        side = json.loads(_sidecar(path).read_text())
        return cls(alpha, beta, list(side["item_ids"]), dict(side["meta"]))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".json") if path.suffix != ".npz" else path.with_suffix(
        ".json"
    )
