"""Synthetic responses from a known multidimensional 2PL (for tests and measurements)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit


@dataclass
class SyntheticWorld:
    """True item parameters of a simulated benchmark."""

    alpha: np.ndarray  # (n_items, d)
    beta: np.ndarray  # (n_items,)

    def probabilities(self, gamma: np.ndarray) -> np.ndarray:
        """True P(Y = 1) of abilities gamma (d,) or (m, d)."""
        return expit(np.asarray(gamma) @ self.alpha.T - self.beta)

    def sample(self, gamma: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """0/1 answers drawn from the true probabilities."""
        p = self.probabilities(gamma)
        return (rng.random(p.shape) < p).astype(float)


def make_world(n_items: int, n_dims: int, rng: np.random.Generator,
               general: float = 1.5) -> SyntheticWorld:
    """Items whose first ability dimension is a general skill (loading ``general``).

    Without a shared dimension every model would have about the same accuracy; real
    benchmarks spread models from 20% to 90%, which the general factor reproduces.
    """
    alpha = 0.7 * rng.standard_normal((n_items, n_dims))
    alpha[:, 0] += general
    beta = 1.5 * rng.standard_normal(n_items)
    return SyntheticWorld(alpha, beta)
