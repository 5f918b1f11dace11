"""Negative transfer rate (MERGE^3 paper, appendix C.3.2)."""

from __future__ import annotations

import numpy as np


def negative_transfer_rate(endpoint_correct: np.ndarray, merged_correct: np.ndarray) -> float:
    """Share of the items some endpoint got right that the merge gets wrong (lower is better).

    Args:
        endpoint_correct: bool (n_endpoints, n_items) (a 1-D array is one endpoint).
        merged_correct: bool (n_items,).

    Returns:
        The rate in [0, 1]; 0.0 when no endpoint solves any item.
    """
    ends = np.atleast_2d(np.asarray(endpoint_correct, dtype=bool))
    merged = np.asarray(merged_correct, dtype=bool)
    if merged.ndim != 1 or ends.shape[1] != merged.shape[0]:
        raise ValueError(f"shape mismatch: endpoints {ends.shape}, merged {merged.shape}")
    solved = ends.any(axis=0)
    if not solved.any():
        return 0.0
    return float((solved & ~merged).sum() / solved.sum())
