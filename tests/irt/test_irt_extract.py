"""Subset extraction: random, IRT clustering, representation clustering."""

from __future__ import annotations

import numpy as np
import pytest

from optuna_merge3.irt import EXTRACTORS, Subset, extract_subset


def test_random_subset_is_seeded_uniform_and_weighted_equally():
    a = extract_subset("random", 100, 20, random_state=0)
    b = extract_subset("random", 100, 20, random_state=np.random.default_rng(0))
    assert np.array_equal(a.indices, b.indices) and a.method == "random"
    assert len(set(a.indices.tolist())) == 20 and np.allclose(a.weights, 1 / 20)
    c = extract_subset("random", 100, 20, random_state=1)
    assert not np.array_equal(a.indices, c.indices)
    # Uniform: over many draws each item is picked about k / N = 20% of the time.
    rng = np.random.default_rng(2)
    counts = np.zeros(100)
    for _ in range(500):
        counts[extract_subset("random", 100, 20, rng).indices] += 1
    assert np.all(np.abs(counts / 500 - 0.2) < 0.1)


def test_irt_clusters_pick_one_item_per_cluster_weighted_by_mass(fitted):
    sub = extract_subset("irt_clusters", 150, 10, random_state=0, params=fitted.params)
    assert sub.method == "irt_clusters" and len(sub.indices) == 10
    assert len(set(sub.indices.tolist())) == 10 and np.isclose(sub.weights.sum(), 1.0)
    assert np.allclose(sub.weights * 150, np.round(sub.weights * 150))  # |C_k| / |D|
    again = extract_subset("irt_clusters", 150, 10, random_state=0, params=fitted.params)
    assert np.array_equal(sub.indices, again.indices)


def test_irt_clusters_on_separated_items_take_one_per_group():
    from optuna_merge3.irt import IRTParams

    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0, -3.0], [2.0, 0.0, 0.0], [0.0, 2.0, 3.0]])
    sizes = [10, 30, 60]
    pts = np.vstack([c + 0.05 * rng.standard_normal((s, 3)) for c, s in zip(centres, sizes, strict=True)])
    params = IRTParams(pts[:, :2], pts[:, 2])
    sub = extract_subset("irt_clusters", 100, 3, random_state=1, params=params)
    groups = np.repeat([0, 1, 2], sizes)[sub.indices]
    assert sorted(groups.tolist()) == [0, 1, 2]
    assert np.allclose(sorted(sub.weights), [0.1, 0.3, 0.6])


def test_representation_clusters_accept_one_or_several_embeddings():
    rng = np.random.default_rng(3)
    emb = [rng.standard_normal((80, 16)), rng.standard_normal((80, 8))]
    sub = extract_subset("representation_clusters", 80, 8, random_state=0, embeddings=emb,
                         n_components=5)
    assert len(sub.indices) == 8 and np.isclose(sub.weights.sum(), 1.0)
    one = extract_subset("representation_clusters", 80, 8, random_state=0, embeddings=emb[0])
    assert one.method == "representation_clusters" and len(one.indices) == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "stratified", "n_items": 10, "k": 2}, "valid"),
        ({"method": "random", "n_items": 10, "k": 11}, "k must be"),
        ({"method": "random", "n_items": 10, "k": 0}, "k must be"),
        ({"method": "random", "n_items": 0, "k": 1}, "n_items"),
        ({"method": "irt_clusters", "n_items": 10, "k": 2}, "needs params"),
        ({"method": "representation_clusters", "n_items": 10, "k": 2}, "needs embeddings"),
        ({"method": "representation_clusters", "n_items": 10, "k": 2,
          "embeddings": np.zeros((9, 3))}, "embeddings must be"),
    ],
)
def test_extraction_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        extract_subset(**kwargs)


def test_extractor_registry_and_subset_validation():
    assert set(EXTRACTORS) == {"random", "irt_clusters", "representation_clusters"}
    with pytest.raises(ValueError, match="at least one"):
        Subset(np.array([], dtype=int), np.array([]), "random")
    with pytest.raises(ValueError, match="sum to 1"):
        Subset(np.array([0, 1]), np.array([0.5, 0.6]), "random")
    with pytest.raises(ValueError, match="distinct"):
        Subset(np.array([1, 1]), np.array([0.5, 0.5]), "random")
