"""How well IRT fits a reference population, judged on models it was not fitted on.

K-fold over models: fit the 2PL on the other folds, then for each held-out model (1) fit its
ability on a random half of its items and score the other half (log-loss, against the training
population's per-item mean), and (2) estimate its accuracy from ``n_items`` random items with
p-IRT and with the naive subset mean (absolute error against its accuracy on all its items),
which is what MERGE^3's fitness does with each merge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["FitReport", "irt_fit_report"]

_EPS = 1e-9


@dataclass(frozen=True)
class FitReport:
    """Held-out quality of IRT on a population (lower is better everywhere).

    ``mae`` maps an estimator name to its mean absolute error on held-out models; it always has
    "naive" and "pirt", and the merge-aware ones when endpoint rows were given.
    """

    n_models: int
    n_items: int
    n_dims: int
    folds: int
    logloss_irt: float
    logloss_item_mean: float
    subset_size: int
    mae: dict[str, float]
    estimator: str = "pirt"  # the one :attr:`helps` judges (the study's)
    #: the same errors on held-out models whose accuracy is within [0.05, 0.95] only (None: no
    #: such model): at the floor or ceiling the naive mean of any subset is (nearly) exact.
    mae_mid: dict[str, float] | None = None
    n_mid: int = 0
    n_heldout: int = 0  # held-out models scored (those with >= 4 observed items)

    @property
    def helps(self) -> bool:
        """IRT predicts held-out answers better than the item mean AND ``estimator`` estimates
        held-out models' accuracy better than the naive subset mean."""
        return (self.logloss_irt < self.logloss_item_mean
                and self.mae[self.estimator] < self.mae["naive"])

    def lines(self) -> list[str]:
        """A short human summary."""
        verdict = (f"IRT helps ({self.estimator} beats the naive mean)" if self.helps else
                   f"IRT does NOT help {self.estimator} on this population (docs/irt.md)")
        naive = max(self.mae["naive"], _EPS)
        errors = ", ".join(f"{k} {v:.4f} ({v / naive:.2f}x)" for k, v in self.mae.items())
        return [
            f"IRT fit, {self.folds}-fold over {self.n_models} models x {self.n_items} items, "
            f"d={self.n_dims}:",
            f"  held-out log-loss {self.logloss_irt:.4f} vs item mean {self.logloss_item_mean:.4f}"
            f" ({self.logloss_irt / self.logloss_item_mean:.2f}x)",
            f"  accuracy from {self.subset_size} items, mean abs. error: {errors}",
        ] + ([f"  the same on the {self.n_mid} held-out models with accuracy in [0.05, 0.95]: "
              + ", ".join(f"{k} {v:.4f}" for k, v in self.mae_mid.items())]
             if self.mae_mid else []) + [f"  -> {verdict}"] + self._why_not()

    def _why_not(self) -> list[str]:
        """When IRT does not help and most held-out models sit near 0% / 100%, say so: there
        the naive mean of any subset is (nearly) exact, and the population says little about
        the models in between, which are the ones a search looks for."""
        edge = self.n_heldout - self.n_mid
        if self.helps or not self.n_heldout or edge * 2 < self.n_heldout:
            return []
        return [f"     {edge} of {self.n_heldout} held-out models score below 5% or above 95%, "
                "where the naive mean is nearly exact; add models that can do the task "
                "(checkpoints, other fine-tunes) or more random merges (docs/reference.md)"]


def _logloss(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    p = np.clip(p, _EPS, 1 - _EPS)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def irt_fit_report(responses: np.ndarray, n_dims: int, *, endpoints: Sequence[int] = (),
                   estimator: str | None = None, folds: int = 5, n_items: int = 20,
                   repeats: int = 5, random_state: int = 0) -> FitReport:
    """Cross-validate the 2PL on ``responses`` (models x items, 0/1/NaN).

    Args:
        responses: the population.
        n_dims: d of the fit (the study's ``irt.n_dims``).
        endpoints: rows of the study's endpoints: always in the training folds, and their
            fitted abilities feed the merge-aware estimators (mp-IRT, gmp-IRT), which then
            estimate the held-out models as the study estimates its merges.
        estimator: the estimator :attr:`FitReport.helps` judges (default: gmpirt with
            endpoints, else pirt).
        folds: number of model folds (at most the number of held-out candidates).
        n_items: subset size of the accuracy estimates (the study's ``n_items``); capped at
            half of each model's items so that p-IRT has unseen items to predict.
        repeats: random subsets per held-out model.
        random_state: seed of the folds, halves and subsets.

    Raises:
        ValueError: fewer than 3 held-out candidates or 4 items (nothing to hold out).
    """
    from optuna_merge3 import irt

    y = np.asarray(responses, dtype=float)
    n_models, n_total = y.shape
    ends = [int(e) for e in endpoints]
    names = ["naive", "pirt"] + (["mpirt", "gmpirt"] if ends else [])
    estimator = estimator or ("gmpirt" if ends else "pirt")
    if estimator not in names:
        raise ValueError(f"estimator {estimator!r} cannot be judged here; valid: {names}")
    candidates = np.setdiff1d(np.arange(n_models), ends)
    if candidates.size < 3 or n_total < 4:
        raise ValueError(f"{n_models} models x {n_total} items: too few to cross-validate IRT "
                         "(need >= 3 models besides the endpoints and >= 4 items)")
    rng = np.random.default_rng(random_state)
    k = min(folds, candidates.size)
    fold_of = np.full(n_models, -1)
    fold_of[candidates] = rng.permutation(candidates.size) % k
    k_sub = max(1, min(n_items, n_total // 2))
    ll_irt, ll_mean = [], []
    errors: dict[str, list[float]] = {name: [] for name in names}
    mid: dict[str, list[float]] = {name: [] for name in names}
    n_mid = 0
    for f in range(k):
        train_rows = np.flatnonzero(fold_of != f)
        train = y[train_rows]
        params, gammas = irt.fit_irt(train, n_dims=n_dims, random_state=rng, calibrate_gp=False)
        end_abilities = gammas[np.searchsorted(train_rows, ends)] if ends else None
        seen = ~np.isnan(train)
        item_mean = (np.nansum(train, axis=0) + 1) / (seen.sum(axis=0) + 2)  # Laplace
        for row in y[fold_of == f]:
            obs = np.flatnonzero(~np.isnan(row))
            if obs.size < 4:
                continue
            half = rng.permutation(obs)
            fit_on, score_on = half[: obs.size // 2], half[obs.size // 2:]
            gamma = irt.fit_ability(params, np.where(np.isin(np.arange(n_total), fit_on), row,
                                                     np.nan))
            p = irt.item_probabilities(params, gamma)
            ll_irt.append(_logloss(row[score_on], p[score_on]).mean())
            ll_mean.append(_logloss(row[score_on], item_mean[score_on]).mean())
            truth = row[obs].mean()  # p-IRT counts all N items: exact for complete rows
            inside = 0.05 <= truth <= 0.95
            n_mid += inside
            for _ in range(repeats):  # the study's own estimators, defaults included
                pick = rng.choice(obs, size=min(k_sub, obs.size - 1), replace=False)
                subset = irt.Subset(pick, np.full(pick.size, 1.0 / pick.size), "random")
                for name in names:
                    value = irt.estimate_accuracy(name, params, subset, row[pick],
                                                  endpoint_abilities=end_abilities).value
                    errors[name].append(abs(value - truth))
                    if inside:
                        mid[name].append(abs(value - truth))
    if not ll_irt:
        raise ValueError("no held-out model has >= 4 observed items")
    return FitReport(n_models, n_total, n_dims, k, float(np.mean(ll_irt)), float(np.mean(ll_mean)),
                     k_sub, {name: float(np.mean(v)) for name, v in errors.items()}, estimator,
                     {name: float(np.mean(v)) for name, v in mid.items()} if n_mid else None,
                     int(n_mid), len(ll_irt))
