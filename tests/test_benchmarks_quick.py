"""The scale benchmark and the GPU check run end to end at a tiny shape (so they never rot)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ROW_KEYS = {"method", "layers", "live", "mode", "peak_anon_gb", "peak_file_gb", "live_model_gb",
            "s_per_trial", "mergekit_peak_anon_gb", "mergekit_s"}


def _last_json(args: list[str], tmp_path: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), TQDM_DISABLE="1",
               TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run([sys.executable, *args], cwd=tmp_path, env=env, capture_output=True,
                          text=True, check=False, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_merge_scale_quick(tmp_path: Path) -> None:
    out = tmp_path / "scale"
    result = _last_json([str(ROOT / "benchmarks" / "merge_scale.py"), "--quick", "--layers",
                         "1", "2", "--methods", "ties", "--out", str(out)], tmp_path)
    assert result["benchmark"] == "merge_scale"
    rows = result["rows"]
    assert [(r["layers"], r["live"]) for r in rows] == [(1, "fp"), (1, "nf4"), (2, "fp"),
                                                        (2, "nf4")]
    for row in rows:
        assert ROW_KEYS <= set(row) and row["mode"] == "stream"
        assert row["peak_anon_gb"] > row["live_model_gb"] > 0
        assert row["s_per_trial"] > 0 and row["mergekit_s"] > 0
        assert row["mergekit_peak_anon_gb"] > 0 and row["peak_file_gb"] > 0
    fp1, nf41 = rows[0], rows[1]
    assert nf41["live_model_gb"] < fp1["live_model_gb"]  # 4-bit linear weights
    assert set(result["extrapolated_32_layers"]) == {"ties/fp", "ties/nf4"}
    for value in result["extrapolated_32_layers"].values():
        assert {"peak_anon_gb", "s_per_trial"} <= set(value)
    assert out.with_suffix(".png").stat().st_size > 0
    assert "| ties | 2 | nf4 |" in out.with_suffix(".md").read_text()


@pytest.mark.slow
def test_gpu_check_quick_runs_the_pipeline_on_cpu(tmp_path: Path) -> None:
    result = _last_json([str(ROOT / "benchmarks" / "gpu_check.py"), "--quick", "--trials", "4"],
                        tmp_path)
    assert result["benchmark"] == "gpu_check" and result["quick"]
    assert [r["method"] for r in result["rows"]] == ["ties", "dare_ties"]
    for row in result["rows"]:
        assert row["device"] == "cpu" and row["peak_kind"].startswith("host peak RssAnon")
        assert row["plan_mode"] == "stream" and row["n_complete"] == 4
        assert row["merge_s"] > 0 and row["generate_s"] > 0 and row["trials_per_hour"] > 0
        assert row["s_per_trial"] >= row["merge_s"] + row["generate_s"]


def test_headline_subsets_report_pairs_by_seed() -> None:
    """The fixed-vs-fresh report (its searches need the XL world: not run here)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import headline_subsets

    held = {("gmpirt", "fixed"): [0.2, 0.4], ("gmpirt", "fresh"): [0.3, 0.5],
            ("naive", "fixed"): [0.3, 0.3], ("naive", "fresh"): [0.2, 0.2],
            ("pirt", "fixed"): [0.3, 0.3], ("pirt", "fresh"): [0.3, 0.3]}
    rows = [{"seed": s, "estimator": e, "mode": m, "fitness": v[s] + 0.1, "true": v[s],
             "heldout": v[s], "ties": 1 + s, "tied_truth": [v[s]], "smoothed_heldout": v[s]}
            for (e, m), v in held.items() for s in range(2)]
    out = "\n".join(headline_subsets.report(rows, [0.4, 0.2], 2, 1.0))
    # gmp-IRT fresh: 40.0 held-out = 133.3% of (a)'s 30.0; minus naive fresh (0.1, 0.3): +20.0
    # ± 10.0; minus its fixed subset (0.1, 0.1): +10.0 ± 0.0; fitness 10 points over the truth
    assert "| (b) gmp-IRT | fresh | 40.0 ± 14.1 | 133.3% | +20.0 ± 10.0 | +10.0 ± 0.0 | +10.0 |" \
        in out
    assert "| 1 | 20.0 | 40.0 (2 tied: 40) |" in out
