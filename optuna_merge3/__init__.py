"""optuna-merge3: evolutionary model merging with MERGE^3 fitness estimation, on Optuna."""

from __future__ import annotations

__version__ = "0.1.0"
