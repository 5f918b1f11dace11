"""The stderr of the merge-aware estimators: lambda's error and the endpoint abilities' error.

mp-IRT's estimate is a function of gamma = sum_j lambda_j gamma_j. Before, its stderr counted
the Laplace error of lambda only, as if the endpoints' abilities gamma_j were exact; they are
MAP fits from the endpoints' answers (100-500 items on the leaderboard benchmarks), and their
error is shared by every estimate of the merge. On the leaderboard merges it was as large as
the binomial term (docs/irt.md, "Small populations"), and leaving it out made the 95% intervals
cover .91-.93 at 64-256 reference models.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._ability import ability_covariances
from ._params import IRTParams


def merge_cov_map(
    alpha_s: np.ndarray,
    resid: np.ndarray,
    w: np.ndarray,
    design: np.ndarray,
    prec: np.ndarray,
    ends: np.ndarray,
    lam: np.ndarray,
    end_cov: np.ndarray | None,
) -> Callable:
    """Delta-method variance of a function of gamma = ends^T lambda_hat, for its gradient g.

    lambda_hat: Laplace covariance prec^-1 (prec = A^T W A + ridge, A = alpha_s ends^T).
    With ``end_cov`` (the endpoints' Laplace covariances C_j, (n_end, d, d)) also the error of
    the endpoint abilities, through both paths: directly (gamma moves by lambda_j dgamma_j) and
    through the refit of lambda on the subset (implicit function theorem on the score
    S = A^T (p - y) + ridge (lambda - lambda_0), whose derivative in gamma_j is
    e_j r^T + lambda_j A^T W alpha_s with r = alpha_s^T (p - y)). Total derivative per endpoint:
    t_j = lambda_j (g - alpha_s^T W A u) - u_j r, u = prec^-1 ends g; variance sum_j t_j C_j t_j.
    """
    r = alpha_s.T @ resid
    awa = (alpha_s * w[:, None]).T @ design  # alpha_s^T W A, (d, n_end)

    def cov_map(g: np.ndarray) -> float:
        eg = ends @ g
        u = np.linalg.solve(prec, eg)
        var = float(eg @ u)
        if end_cov is not None:
            t = lam[:, None] * (g - awa @ u)[None, :] - u[:, None] * r[None, :]
            var += float(np.einsum("jk,jkl,jl->", t, end_cov, t))
        return var

    return cov_map


def endpoint_covariances(
    params: IRTParams, ends: np.ndarray, responses: np.ndarray | None
) -> np.ndarray | None:
    """The endpoints' ability covariances from their answers (None: no answers given)."""
    if responses is None:
        return None
    return ability_covariances(params, ends, responses, name="endpoint_responses")
