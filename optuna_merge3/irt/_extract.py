"""Extract: the evaluation subset D_bar of a dataset (MERGE^3 section 4, appendix C.1)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ._params import IRTParams


@dataclass
class Subset:
    """Items of the evaluation subset and their weights.

    Attributes:
        indices: (k,) item indices into the full dataset.
        weights: (k,) non-negative weights summing to 1 (1/k for a random subset; cluster mass
            for the clustering methods), used by the naive estimator.
        method: name of the extractor that produced it.
    """

    indices: np.ndarray
    weights: np.ndarray
    method: str

    def __post_init__(self) -> None:
        self.indices = np.asarray(self.indices, dtype=int).reshape(-1)
        self.weights = np.asarray(self.weights, dtype=float).reshape(-1)
        if self.indices.shape != self.weights.shape:
            raise ValueError(f"{self.indices.size} indices but {self.weights.size} weights")
        if self.indices.size == 0:
            raise ValueError("a subset needs at least one item")
        if len(set(self.indices.tolist())) != self.indices.size:
            raise ValueError("subset indices must be distinct")
        if np.any(self.weights < 0) or not np.isclose(self.weights.sum(), 1.0):
            raise ValueError("subset weights must be non-negative and sum to 1")


def _rng(random_state: int | np.random.Generator | None) -> np.random.Generator:
    return random_state if isinstance(random_state, np.random.Generator) else (
        np.random.default_rng(random_state))


def _check_k(n_items: int, k: int) -> None:
    if int(n_items) != n_items or n_items < 1:
        raise ValueError(f"n_items must be a positive integer, got {n_items}")
    if int(k) != k or not 1 <= k <= n_items:
        raise ValueError(f"k must be an integer in [1, n_items={n_items}], got {k}")


def _cluster_subset(points: np.ndarray, k: int, rng: np.random.Generator, method: str) -> Subset:
    """k-means on ``points``; the item nearest each centroid, weight = cluster mass |C|/|D|."""
    from sklearn.cluster import KMeans

    seed = int(rng.integers(2**31 - 1))
    km = KMeans(n_clusters=k, n_init=10, random_state=seed).fit(points)
    indices, weights = [], []
    for c in range(k):
        members = np.flatnonzero(km.labels_ == c)
        if members.size == 0:  # k-means with duplicate points can leave a cluster empty
            continue
        dist = np.sum((points[members] - km.cluster_centers_[c]) ** 2, axis=1)
        indices.append(int(members[np.argmin(dist)]))
        weights.append(members.size / points.shape[0])
    w = np.asarray(weights)
    order = np.argsort(indices)
    return Subset(np.asarray(indices)[order], w[order] / w.sum(), method)


def random_subset(n_items: int, k: int, random_state: int | np.random.Generator | None = None,
                  **_: Any) -> Subset:
    """k items drawn uniformly without replacement (the paper's default, k = 20), weights 1/k."""
    _check_k(n_items, k)
    idx = np.sort(_rng(random_state).choice(n_items, size=k, replace=False))
    return Subset(idx, np.full(k, 1.0 / k), "random")


def irt_cluster_subset(n_items: int, k: int, random_state: int | np.random.Generator | None = None,
                       params: IRTParams | None = None, **_: Any) -> Subset:
    """IRT clustering (tinyBenchmarks anchor points, MERGE^3 appendix C.1).

    k-means on the item embeddings [alpha_i || beta_i]; the item nearest each centroid
    represents its cluster with weight |C_k| / |D|. Needs ``params``.
    """
    _check_k(n_items, k)
    if params is None:
        raise ValueError("'irt_clusters' needs params (fitted IRTParams)")
    if params.n_items != n_items:
        raise ValueError(f"params has {params.n_items} items, n_items is {n_items}")
    points = np.hstack([params.alpha, params.beta[:, None]])
    return _cluster_subset(points, k, _rng(random_state), "irt_clusters")


def representation_cluster_subset(
    n_items: int, k: int, random_state: int | np.random.Generator | None = None,
    embeddings: np.ndarray | Sequence[np.ndarray] | None = None, n_components: int = 32,
    **_: Any,
) -> Subset:
    """Representation clustering (MERGE^3 appendix C.1).

    Each endpoint embeds every item (e.g. mean hidden state of its tokens); the embeddings are
    concatenated over endpoints, standardised, reduced by PCA (``n_components``), clustered
    with k-means; the item nearest each centroid gets weight |C_k| / |D|.

    Args:
        embeddings: one (n_items, h) array, or a list of them (one per endpoint).
        n_components: PCA dimension (capped by the data).
    """
    _check_k(n_items, k)
    if embeddings is None:
        raise ValueError("'representation_clusters' needs embeddings (n_items, h) per endpoint")
    blocks = [np.asarray(e, dtype=float) for e in (
        [embeddings] if isinstance(embeddings, np.ndarray) else embeddings)]
    if not blocks or any(b.ndim != 2 or b.shape[0] != n_items for b in blocks):
        raise ValueError(f"embeddings must be (n_items={n_items}, h) arrays, got "
                         f"{[b.shape for b in blocks]}")
    x = np.hstack(blocks)
    x = (x - x.mean(axis=0)) / np.where(x.std(axis=0) > 0, x.std(axis=0), 1.0)
    rng = _rng(random_state)
    n_comp = int(min(n_components, x.shape[0], x.shape[1]))
    if n_comp < x.shape[1]:
        from sklearn.decomposition import PCA

        x = PCA(n_components=n_comp, random_state=int(rng.integers(2**31 - 1))).fit_transform(x)
    return _cluster_subset(x, k, rng, "representation_clusters")


EXTRACTORS: dict[str, Callable[..., Subset]] = {
    "random": random_subset,
    "irt_clusters": irt_cluster_subset,
    "representation_clusters": representation_cluster_subset,
}


def extract_subset(
    method: str,
    n_items: int,
    k: int,
    random_state: int | np.random.Generator | None = None,
    params: IRTParams | None = None,
    embeddings: np.ndarray | Sequence[np.ndarray] | None = None,
    **kw: Any,
) -> Subset:
    """Choose the evaluation subset D_bar (k items of n_items) with a registered method.

    Args:
        method: one of :data:`EXTRACTORS` ("random", "irt_clusters", "representation_clusters").
        n_items: size N of the full dataset.
        k: subset size (1 <= k <= n_items).
        random_state: seed or ``np.random.Generator`` (k-means / PCA get seeds drawn from it).
        params: fitted item parameters (for "irt_clusters").
        embeddings: item embeddings (for "representation_clusters").
        **kw: method options (e.g. ``n_components``).

    Returns:
        The :class:`Subset`; clustering can return fewer than k items only if k-means leaves a
        cluster empty (duplicate points).
    """
    if method not in EXTRACTORS:
        raise ValueError(f"unknown extraction method {method!r}; valid: {sorted(EXTRACTORS)}")
    return EXTRACTORS[method](n_items=n_items, k=k, random_state=random_state, params=params,
                              embeddings=embeddings, **kw)
