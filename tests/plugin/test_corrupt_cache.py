"""A damaged Estimate cache through the real CLI: recomputed with a warning, never a traceback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from plugin_helpers import TinyStudy, run_cli

from optuna_merge3 import irt


def test_a_truncated_irt_cache_is_refitted_with_a_warning(
    existing_study: TinyStudy, caplog: pytest.LogCaptureFixture
) -> None:
    (path,) = (existing_study.out_dir / "estimate").glob("irt_math_it_*.npz")
    good = irt.IRTParams.load(path)
    path.write_bytes(path.read_bytes()[:100])  # what an in-place write killed halfway leaves
    for corr in (existing_study.out_dir / "estimate" / "correctness").rglob("math_it-*.npz"):
        corr.write_bytes(b"")  # the endpoints' (read by `best`) and the front's
    before = existing_study.snapshot()
    with caplog.at_level(logging.WARNING, logger="optuna_merge3"):
        code, out, err = run_cli("best", existing_study.config_path, "--no-truth")
    assert code == 0, err[-2000:]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith(f"IRT cache file {path} is unreadable (BadZipFile") for m in messages)
    rewritten = [m.split()[3] for m in messages if m.startswith("correctness cache file")]
    assert len(rewritten) == 2  # one per endpoint: re-evaluated and stored again
    assert "[estimate] math_it: fitting 2PL IRT" in out  # refitted, then the table as usual
    assert "| endpoint math_en" in out
    refit = irt.IRTParams.load(path)  # rewritten whole, and the same deterministic fit
    np.testing.assert_array_equal(refit.alpha, good.alpha)
    assert refit.item_ids == good.item_ids
    for name in rewritten:
        assert np.load(name)["correct"].dtype == bool
    assert existing_study.snapshot() == before
