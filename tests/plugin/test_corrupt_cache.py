"""A damaged Estimate cache through the real CLI: recomputed with a warning, never a traceback."""

from __future__ import annotations

import logging

import numpy as np
import optuna
import pytest
from plugin_helpers import TinyStudy, run_cli

from optuna_merge3 import irt, shared_state


def test_a_truncated_irt_cache_is_refitted_with_a_warning(
    existing_study: TinyStudy, caplog: pytest.LogCaptureFixture
) -> None:
    (path,) = (existing_study.out_dir / "estimate").glob("irt_math_it_*.npz")
    good = irt.IRTParams.load(path)
    path.write_bytes(path.read_bytes()[:100])  # what an in-place write killed halfway leaves
    for corr in (existing_study.out_dir / "estimate" / "correctness").rglob("math_it-*.npz"):
        corr.write_bytes(b"")  # the endpoints' (read by `best`) and the front's
    # The study's storage also holds the Estimate results (for workers on other machines) and
    # `best` would read those: drop them, so that this worker reads its local cache files.
    storage = optuna.storages.RDBStorage(existing_study.storage)
    study_id = storage.get_study_id_from_name(existing_study.name)
    storage.set_study_system_attr(study_id, shared_state.ESTIMATE_KEY, None)
    before = existing_study.snapshot()
    with caplog.at_level(logging.WARNING, logger="optuna_merge3"):
        code, out, err = run_cli("best", existing_study.config_path, "--no-truth")
    assert code == 0, err[-2000:]
    # the CLI's own log handler writes the warnings to stderr (caplog sees them when it is not
    # installed): read both
    messages = [r.getMessage() for r in caplog.records] + [
        line.split(': ', 1)[-1] for line in err.replace('\r', '\n').splitlines()]
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
