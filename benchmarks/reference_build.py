"""``reference build`` on the tiny world: how many random merges make a usable population?

For each task of ``studies/tiny_world.toml`` (math_it, qa_en) and K in ``--ks``: a fresh
correctness cache, ``build_reference`` with the base, the two endpoints and K random merges of
the study's search space (wall and CPU seconds), then ``irt_fit_report`` on the result: 5-fold
over the non-endpoint models, held-out log-loss (ability from half of each held-out model's
items) against the training item mean, and the mean absolute error of each estimator's
accuracy from n = 20 random items against the model's accuracy on all items (endpoint
abilities from the training fit feed mp-IRT / gmp-IRT, as in the study). Side by side: the same
report on the population the tiny world ships (68 models: checkpoints, a second world, merges;
built by studies/tiny_world/build_world.py).

Usage: nice -n 10 python benchmarks/reference_build.py [--ks 8 16 32 64 128] [--out FILE.md]

``--real``: instead, the same report on REAL populations of growing size: random subsets of the
metabench ARC v1 models (../shared/data/leaderboard, Open LLM Leaderboard responses; skipped
when absent), naive vs p-IRT with the library's defaults, d = 2 and 10
(-> benchmarks/results/reference_size_real.md).
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from optuna_merge3.config import load_config  # noqa: E402
from optuna_merge3.pipeline import load_reference_responses  # noqa: E402
from optuna_merge3.reference import build_reference, irt_fit_report  # noqa: E402
from optuna_merge3.runner import StudyRunner  # noqa: E402

ESTIMATORS = ("naive", "pirt", "mpirt", "gmpirt")


def _row(task: str, label: str, n: int, seconds: str, report) -> str:
    mae = " / ".join(f"{report.mae[e]:.4f}" for e in ESTIMATORS)
    best = min(("pirt", "mpirt", "gmpirt"), key=lambda e: report.mae[e])
    mid = report.mae_mid
    middle = (f"{report.n_mid}: " + " / ".join(f"{mid[e]:.4f}" for e in ESTIMATORS)) if mid else ""
    return (f"| {task} | {label} | {n} | {seconds} | {report.logloss_irt:.3f} / "
            f"{report.logloss_item_mean:.3f} | {mae} | {best} "
            f"{report.mae[best] / report.mae['naive']:.2f}x | {middle} | "
            f"{'yes' if report.helps else 'no'} |")


def real_sizes(out: Path, sizes: list[int], seeds: int) -> None:
    """The fit report on random subsets of real leaderboard models (no endpoints: p-IRT)."""
    import numpy as np

    data = REPO / ".." / "shared" / "data" / "leaderboard" / "metabench"
    path = data / "arc_v1_responses_train.csv.gz"
    if not path.is_file():
        print(f"skipped: {path} not found")
        return
    names, _, values = load_reference_responses(path)
    lines = [
        "# The fit report on real populations of growing size",
        "",
        f"`python benchmarks/reference_build.py --real` ({platform.machine()}): ARC v1 "
        f"(metabench, {len(names)} Open LLM Leaderboard models x {values.shape[1]} items); "
        f"for each size, {seeds} random subsets of the models; `irt_fit_report` (5-fold, "
        "n = 20 items, 5 subsets per held-out model, library defaults); mean over the subsets "
        "(min-max of the p-IRT / naive ratio in brackets).",
        "",
        "| models | d | log-loss IRT / item mean | MAE naive | MAE p-IRT | p-IRT / naive | helps |",
        "|---|---|---|---|---|---|---|",
    ]
    for size in sizes:
        for d in (2, 10):
            if d >= size:
                continue
            reports = []
            for seed in range(seeds):
                rows = np.random.default_rng([size, seed]).choice(len(names), size, replace=False)
                reports.append(irt_fit_report(values[rows], d, n_items=20, random_state=seed))
            ratio = [r.mae["pirt"] / r.mae["naive"] for r in reports]
            lines.append(
                f"| {size} | {d} | {np.mean([r.logloss_irt for r in reports]):.3f} / "
                f"{np.mean([r.logloss_item_mean for r in reports]):.3f} | "
                f"{np.mean([r.mae['naive'] for r in reports]):.4f} | "
                f"{np.mean([r.mae['pirt'] for r in reports]):.4f} | {np.mean(ratio):.2f}x "
                f"({min(ratio):.2f}-{max(ratio):.2f}) | {sum(r.helps for r in reports)}/{seeds} |")
            print(lines[-1], flush=True)
    out.write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[8, 16, 32, 64, 128])
    parser.add_argument("--tasks", nargs="+", default=["math_it", "qa_en"])
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--real", action="store_true", help="real populations of growing size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[8, 16, 32, 64, 128, 512])
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    if args.real:
        real_sizes(args.out or REPO / "benchmarks/results/reference_size_real.md", args.sizes,
                   args.seeds)
        return
    args.out = args.out or REPO / "benchmarks/results/reference_build.md"
    config_path = REPO / "studies/tiny_world.toml"
    lines = [
        "# `reference build` on the tiny world",
        "",
        f"`python benchmarks/reference_build.py --ks {' '.join(map(str, args.ks))}` "
        f"({platform.processor() or platform.machine()}, 1 torch thread, shared 2-core machine, "
        "nice 10). Population = base + 2 endpoints + K random merges of the study's search space "
        "(task arithmetic, weight/math_en and weight/lang_it uniform in [0, 1.5]); a fresh "
        "correctness cache per row. IRT d = 2 (the study's), 5-fold over the non-endpoint "
        "models, n = 20 items per estimate, 5 subsets per held-out model. Lower is better; "
        "'helps' = IRT log-loss below the item mean AND gmp-IRT (the study's estimator) below "
        "the naive mean.",
        "",
        "| task | population | models | build wall / CPU s | held-out log-loss IRT / item mean "
        "| MAE naive / p-IRT / mp-IRT / gmp-IRT | best IRT vs naive | held-out models with "
        "accuracy in [0.05, 0.95]: count: MAE naive / p-IRT / mp-IRT / gmp-IRT | helps |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    with tempfile.TemporaryDirectory(prefix="reference_build_") as tmp:
        base = load_config(config_path)
        runner = None
        for task in args.tasks:
            shipped = base.tasks[[t.name for t in base.tasks].index(task)].reference
            names, _, values = load_reference_responses(shipped)
            report = irt_fit_report(values, base.irt.n_dims, n_items=20,
                                    endpoints=[names.index("math_en"), names.index("lang_it")])
            lines.append(_row(task, "shipped (build_world.py)", len(names), "", report))
            for k in args.ks:
                config = dataclasses.replace(base, out_dir=Path(tmp) / f"{task}_{k}")
                if runner is None:
                    runner = StudyRunner(config)
                wall, cpu = time.perf_counter(), time.process_time()
                result = build_reference(config, task, random_merges=k, seed=0,
                                         out=Path(tmp) / f"{task}_{k}.csv.gz", runner=runner)
                wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                ends = [result.models.index(e) for e in ("math_en", "lang_it")]
                report = irt_fit_report(result.values, config.irt.n_dims, n_items=20,
                                        endpoints=ends)
                lines.append(_row(task, f"built, K = {k}", len(result.models),
                                  f"{wall:.0f} / {cpu:.0f}", report))
                print(lines[-1], flush=True)
                shutil.rmtree(config.out_dir, ignore_errors=True)
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.write_text(text)


if __name__ == "__main__":
    main()
