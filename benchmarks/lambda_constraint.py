"""Which ``[irt] lambda_constraint`` estimates a merge's accuracy best (mp-IRT, gmp-IRT).

Two settings, the same estimators and subsets for every variant of the lambda fit
(``fit_merge_weights``: "none" = the paper's unconstrained ML, "nonneg", "simplex", "ridge"
with strength 1 and 10):

- real: the merged models of the leaderboard data README whose endpoints have answers
  (benchmarks/_leaderboard.py; 2-4 per benchmark), the 2PL fitted on every other complete model
  (package defaults), endpoint abilities from the endpoints' full answers; truth = the merge's
  mean over all items;
- simulated (irt/_simulate.py): a 2PL world of 200 items (d = 5), 600 reference models with
  N(0, I) abilities to fit the items; merges of 2-3 reference models whose true ability is
  sum_j lambda_j gamma_j + N(0, 0.3^2) noise, with lambda drawn in the simplex
  ("between the endpoints") or each lambda_j uniform in [-0.3, 1.3] ("beyond": a merge may beat
  both endpoints, which an evolution looks for); truth = the merge's expected accuracy.

For n in {10, 20, 30}, ``--seeds`` random subsets. Prints the mean absolute error per variant.

Usage: nice -n 10 python benchmarks/lambda_constraint.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _leaderboard import BENCHMARK_TAGS, data_available, load_benchmark, split_models  # noqa: E402

from optuna_merge3.irt import (  # noqa: E402
    DEFAULT_N_DIMS,
    estimate_accuracy,
    extract_subset,
    fit_ability,
    fit_irt,
)
from optuna_merge3.irt._simulate import make_world  # noqa: E402

NS = (10, 20, 30)
#: Row label -> fit_merge_weights options.
VARIANTS = {"none (paper)": {"constraint": "none"}, "nonneg": {"constraint": "nonneg"},
            "simplex": {"constraint": "simplex"}, "ridge 1 (default)": {"constraint": "ridge"},
            "ridge 10": {"constraint": "ridge", "ridge": 10.0}}
ESTIMATORS = ("mpirt", "gmpirt")


def _score(params, cases: list[tuple], n_items: int, seeds: int) -> dict:
    """cases: (answers over all items, endpoint abilities, truth). -> {(variant, est, n): MAE}."""
    err: dict = {}
    for n in NS:
        for s in range(seeds):
            subset = extract_subset("random", n_items, n, random_state=7919 * n + s)
            for y, ends, truth in cases:
                ys = y[subset.indices]
                naive = estimate_accuracy("naive", params, subset, ys).value
                err.setdefault(("naive", "naive", n), []).append(abs(naive - truth))
                for v, kw in VARIANTS.items():
                    for e in ESTIMATORS:
                        est = estimate_accuracy(e, params, subset, ys, ends, **kw)
                        err.setdefault((v, e, n), []).append(abs(est.value - truth))
    return {k: float(np.mean(v)) for k, v in err.items()}


def real_cases(seed: int) -> list[tuple]:
    """(params, cases, n_items) per benchmark with usable merges."""
    out = []
    for name in BENCHMARK_TAGS:
        bench = load_benchmark(name)
        split = split_models(bench, None, 0, seed=seed)
        if not split.merges:
            continue
        resp = bench.responses
        params, _ = fit_irt(resp[split.train], random_state=seed, calibrate_gp=False)
        cases = []
        for row, end_rows in split.merges.values():
            ends = []
            for e in end_rows:
                obs = np.flatnonzero(~np.isnan(resp[e]))
                ends.append(fit_ability(params, resp[e, obs], item_idx=obs))
            cases.append((resp[row], np.vstack(ends), float(resp[row].mean())))
        out.append((name, params, cases, resp.shape[1]))
    return out


def simulated_cases(kind: str, seed: int, n_merges: int) -> tuple:
    rng = np.random.default_rng(seed)
    world = make_world(200, 5, rng)
    ref = rng.standard_normal((600, 5))
    params, abil = fit_irt(world.sample(ref, rng), n_dims=5, random_state=seed,
                           calibrate_gp=False)
    cases = []
    for _ in range(n_merges):
        k = int(rng.integers(2, 4))
        pick = rng.choice(600, size=k, replace=False)
        lam = rng.dirichlet(np.ones(k)) if kind == "between" else rng.uniform(-0.3, 1.3, k)
        gamma = ref[pick].T @ lam + 0.3 * rng.standard_normal(5)
        y = world.sample(gamma, rng)
        cases.append((y, abil[pick], float(world.probabilities(gamma).mean())))
    return params, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer merges and subsets")
    parser.add_argument("--seeds", type=int, default=20, help="random subsets per n (real)")
    parser.add_argument("--sim-seeds", type=int, default=3,
                        help="random subsets per n and simulated merge")
    parser.add_argument("--sim-merges", type=int, default=100)
    parser.add_argument("--sim-worlds", type=int, default=2)
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.sim_seeds, args.sim_merges, args.sim_worlds = 5, 2, 30, 1
    started = time.perf_counter()
    columns: dict[str, dict] = {}
    with threadpool_limits(1):
        for kind in ("between", "beyond"):
            per = [_score(*simulated_cases(kind, w, args.sim_merges), 200, args.sim_seeds)
                   for w in range(args.sim_worlds)]
            columns[f"simulated, lambda {kind}"] = {k: float(np.mean([p[k] for p in per]))
                                                    for k in per[0]}
        if data_available():
            per, n_cases = [], 0
            for _, params, cases, n_items in real_cases(0):
                per.append(_score(params, cases, n_items, args.seeds))
                n_cases += len(cases)
            # Mean over benchmarks of the per-benchmark MAE (each benchmark weighs the same).
            columns[f"real leaderboard merges ({n_cases})"] = {
                k: float(np.mean([p[k] for p in per])) for k in per[0]}
        else:
            print("shared leaderboard data not found: real column left out", file=sys.stderr)
    print("# lambda_constraint: mp-IRT / gmp-IRT error per lambda fit variant")
    print(f"real: {args.seeds} random subsets per n and merge; simulated: {args.sim_worlds} "
          f"world(s) x {args.sim_merges} merges x {args.sim_seeds} subsets per n and column; "
          f"package defaults otherwise (IRT d = {DEFAULT_N_DIMS} on the real data, 5 simulated); "
          f"wall time {time.perf_counter() - started:.0f} s")
    print("Mean absolute error vs the merge's accuracy over all items, n = "
          + " / ".join(map(str, NS)) + "; mp-IRT (gmp-IRT in brackets).\n")
    names = list(columns)
    print("| lambda_constraint | " + " | ".join(names) + " |")
    print("|:---|" + "---:|" * len(names))
    for v in list(VARIANTS) + ["naive"]:
        cells = []
        for c in names:
            col = columns[c]
            if v == "naive":
                cells.append(" / ".join(f"{col[('naive', 'naive', n)]:.3f}" for n in NS))
                continue
            mp = " / ".join(f"{col[(v, 'mpirt', n)]:.3f}" for n in NS)
            gmp = " / ".join(f"{col[(v, 'gmpirt', n)]:.3f}" for n in NS)
            cells.append(f"{mp} ({gmp})")
        print(f"| {v} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
