"""Shared synthetic 2PL data for the IRT tests (small sizes, one BLAS thread)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from optuna_merge3.irt import IRTParams, fit_irt
from optuna_merge3.irt._simulate import SyntheticWorld, make_world


@pytest.fixture(autouse=True, scope="session")
def _one_blas_thread():
    # Tests run beside other jobs on 2 cores: multi-threaded BLAS is slower, not faster.
    with threadpool_limits(limits=1):
        yield


@dataclass
class Fitted:
    world: SyntheticWorld
    gamma: np.ndarray  # true abilities of the reference models
    responses: np.ndarray
    params: IRTParams
    abilities: np.ndarray  # fitted abilities


@pytest.fixture(scope="session")
def fitted() -> Fitted:
    """600 models x 150 items from a known 3-D 2PL, 5% cells missing, fitted at d = 3."""
    rng = np.random.default_rng(123)
    world = make_world(150, 3, rng)
    gamma = rng.standard_normal((600, 3))
    responses = world.sample(gamma, rng)
    responses[rng.random(responses.shape) < 0.05] = np.nan
    params, abilities = fit_irt(responses, n_dims=3, random_state=0)
    return Fitted(world, gamma, responses, params, abilities)
