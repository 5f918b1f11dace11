"""p-IRT and mp-IRT with SMALL reference populations, on real Open LLM Leaderboard responses.

Users who build their own reference have tens to hundreds of models, not thousands. For each
benchmark (data: ../shared/data/leaderboard, see benchmarks/_leaderboard.py):

1. one seeded split of the complete models: ``--n-test`` held-out models, the rest is the pool;
   the merged models of the data README are in neither;
2. training populations of 32, 64, 128, 256 models drawn from the pool (``--draws`` draws each,
   seeded) and the whole pool ("all"); the same held-out models and merges for every size;
3. the 2PL is fitted on each population with each VARIANT of the defaults (d, new-model prior);
4. ``--seeds`` random subsets of n = 20 items (the same for every size and variant): naive,
   p-IRT on the held-out models; naive, p-IRT and mp-IRT (endpoint abilities from the
   endpoints' full answers) on the merges. Truth = the model's mean over all items.

Reported per size, pooled over benchmarks: mean absolute error, the gain over naive
(naive MAE - MAE), the gain as a share of the full-population gain, and the coverage of
estimate +- 1.96 stderr.

Usage: nice -n 10 python benchmarks/small_populations.py [--quick] [--variants before after]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _leaderboard import BENCHMARK_TAGS, data_available, load_benchmark, split_models  # noqa: E402

from optuna_merge3.irt import estimate_accuracy, extract_subset, fit_ability, fit_irt  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
SIZES = (32, 64, 128, 256, None)  # None = the whole pool
N_ITEMS = 20
#: Fit options per variant. "before": the defaults until this benchmark (d = 10, the new
#: model's ability prior N(0, I)); "after": the package defaults now (fit_irt with no option).
VARIANTS: dict[str, dict] = {
    "before": {"n_dims": 10, "population_prior": False},
    "after": {},
    "d10_pop": {"n_dims": 10},
    "d10_pop_a03": {"n_dims": 10, "alpha_prior_std": 0.3},
    "d10_pop_a1": {"n_dims": 10, "alpha_prior_std": 1.0},
    "d5_pop_a03": {"n_dims": 5, "alpha_prior_std": 0.3},
    "d5_std": {"n_dims": 5, "population_prior": False},
    "d5_pop": {"n_dims": 5},
    "d2_std": {"n_dims": 2, "population_prior": False},
    "d2_pop": {"n_dims": 2},
}
ESTIMATORS = ("naive", "pirt", "mpirt")
#: mp-IRT's stderr as before the endpoint-ability term (the endpoints' abilities taken as exact).
EXACT_ENDS = "mpirt_exact_ends"


def _size_label(size: int | None) -> str:
    return "all" if size is None else str(size)


def _evaluate(params, resp: np.ndarray, test: np.ndarray, merges: dict, subsets: list) -> dict:
    """Errors and coverage flags of each estimator on held-out models and merges."""
    out = {f"{who}/{e}": {"err": [], "cover": []} for who in ("heldout", "merge")
           for e in ESTIMATORS if not (who == "heldout" and e == "mpirt")}
    out[f"merge/{EXACT_ENDS}"] = {"err": [], "cover": []}
    truth = resp[test].mean(axis=1)
    ends = {}
    end_rows_of = {merge: end_rows for merge, (_, end_rows) in merges.items()}
    for merge, (_, end_rows) in merges.items():
        abil = []
        for e in end_rows:
            obs = np.flatnonzero(~np.isnan(resp[e]))
            abil.append(fit_ability(params, resp[e, obs], item_idx=obs))
        ends[merge] = np.vstack(abil)
    for subset in subsets:
        idx = subset.indices
        for j, m in enumerate(test):
            for e in ("naive", "pirt"):
                est = estimate_accuracy(e, params, subset, resp[m, idx])
                out[f"heldout/{e}"]["err"].append(abs(est.value - truth[j]))
                out[f"heldout/{e}"]["cover"].append(abs(est.value - truth[j]) <= 1.96 * est.stderr)
        for merge, (row, _) in merges.items():
            t = resp[row].mean()
            for e in (*ESTIMATORS, EXACT_ENDS):
                kw = {}
                if e in ("mpirt", EXACT_ENDS):
                    kw["endpoint_abilities"] = ends[merge]
                if e == "mpirt":  # the answers the endpoint abilities were fitted on
                    kw["endpoint_responses"] = resp[end_rows_of[merge]]
                est = estimate_accuracy("mpirt" if e == EXACT_ENDS else e, params, subset,
                                        resp[row, idx], **kw)
                out[f"merge/{e}"]["err"].append(abs(est.value - t))
                out[f"merge/{e}"]["cover"].append(abs(est.value - t) <= 1.96 * est.stderr)
    return out


def run_benchmark(name: str, args: argparse.Namespace) -> dict:
    """{variant: {size: {key: {"err": [...], "cover": [...]}}}} plus fit facts, one benchmark."""
    bench = load_benchmark(name)
    split = split_models(bench, None, args.n_test, seed=args.seed)
    resp = bench.responses
    rng = np.random.default_rng(args.seed)
    subsets = [extract_subset("random", resp.shape[1], N_ITEMS, random_state=1000 + s)
               for s in range(args.seeds)]
    res: dict = {v: {} for v in args.variants}
    facts: dict = {v: {} for v in args.variants}
    for size in SIZES:
        draws = 1 if size is None else args.draws
        for _ in range(draws):
            rows = split.train if size is None else rng.choice(split.train, size, replace=False)
            for v in args.variants:
                params, gamma = fit_irt(resp[rows], random_state=args.seed, calibrate_gp=False,
                                        **VARIANTS[v])
                ev = _evaluate(params, resp, split.test, split.merges, subsets)
                cell = res[v].setdefault(_size_label(size), {})
                for k, d in ev.items():
                    cell.setdefault(k, {"err": [], "cover": []})
                    cell[k]["err"] += d["err"]
                    cell[k]["cover"] += d["cover"]
                f = facts[v].setdefault(_size_label(size), {"d": [], "spread": []})
                f["d"].append(params.n_dims)
                f["spread"].append(float(np.sqrt(np.trace(np.cov(gamma.T)) / params.n_dims)))
    return {"name": name, "n_items": resp.shape[1], "n_pool": len(split.train),
            "n_test": len(split.test), "merges": list(split.merges), "res": res, "facts": facts}


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join(":---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def summarise(results: list[dict], variants: list[str]) -> tuple[str, dict]:
    """Tables pooled over benchmarks (mean of the per-benchmark MAEs) and a summary dict."""
    sizes = [_size_label(s) for s in SIZES]
    keys = ["heldout/naive", "heldout/pirt", "merge/naive", "merge/pirt", "merge/mpirt",
            f"merge/{EXACT_ENDS}"]
    pooled: dict = {}
    for v in variants:
        pooled[v] = {}
        for s in sizes:
            cell = {}
            for k in keys:
                per = [np.mean(r["res"][v][s][k]["err"]) for r in results
                       if r["res"][v][s].get(k, {}).get("err")]
                cov = [c for r in results for c in r["res"][v][s].get(k, {}).get("cover", [])]
                cell[k] = {"mae": float(np.mean(per)) if per else None,
                           "cover": float(np.mean(cov)) if cov else None}
            pooled[v][s] = cell
    out = []
    for v in variants:
        out.append(f"\n### {v}: {VARIANTS[v] or 'package defaults'}\n")
        rows = []
        for s in sizes:
            c = pooled[v][s]
            d = sorted({x for r in results for x in r["facts"][v][s]["d"]})
            spread = np.mean([x for r in results for x in r["facts"][v][s]["spread"]])
            row = [s, ",".join(map(str, d)), f"{spread:.2f}"]
            for who, est in (("heldout", "pirt"), ("merge", "pirt"), ("merge", "mpirt")):
                naive = c[f"{who}/naive"]["mae"]
                mae = c[f"{who}/{est}"]["mae"]
                full = pooled[v]["all"][f"{who}/naive"]["mae"] - pooled[v]["all"][f"{who}/{est}"]["mae"]
                gain = naive - mae
                row += [f"{naive:.4f}", f"{mae:.4f}", f"{gain / full:.0%}" if full > 0 else "-",
                        f"{c[f'{who}/{est}']['cover']:.3f}"]
            rows.append(row + [f"{c[f'merge/{EXACT_ENDS}']['cover']:.3f}"])
        out.append(_table(["models", "d", "ability sd", "held-out naive", "p-IRT", "% of full gain",
                           "p-IRT cover", "merges naive", "p-IRT", "% of full gain",
                           "p-IRT cover", "merges naive", "mp-IRT", "% of full gain",
                           "mp-IRT cover", "mp-IRT cover, endpoints exact"], rows))
    return "\n".join(out), pooled


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="ARC and MMLU, 60 held-out models, 1 draw, 4 subsets")
    parser.add_argument("--benchmarks", nargs="*", default=list(BENCHMARK_TAGS))
    parser.add_argument("--variants", nargs="*", default=["before", "after"],
                        choices=list(VARIANTS))
    parser.add_argument("--n-test", type=int, default=100)
    parser.add_argument("--seeds", type=int, default=10, help="random n = 20 subsets")
    parser.add_argument("--draws", type=int, default=2, help="populations drawn per size")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the pooled numbers here")
    args = parser.parse_args()
    if args.quick:
        args.benchmarks, args.n_test, args.draws, args.seeds = ["arc", "mmlu"], 60, 1, 4
    if not data_available():
        raise SystemExit("shared leaderboard data not found (../shared/data/leaderboard)")
    started = time.perf_counter()
    results = []
    with threadpool_limits(1):
        for name in args.benchmarks:
            t0 = time.perf_counter()
            results.append(run_benchmark(name, args))
            print(f"[{name}] {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    text, pooled = summarise(results, args.variants)
    print("# small_populations: p-IRT / mp-IRT with small reference populations (real "
          "leaderboard data)")
    print(f"benchmarks {', '.join(args.benchmarks)}; {args.n_test} held-out models each; "
          f"populations of {', '.join(_size_label(s) for s in SIZES)} models ({args.draws} "
          f"draws per size below all); {args.seeds} random subsets of n = {N_ITEMS} items; "
          f"1 BLAS thread; wall time {time.perf_counter() - started:.0f} s")
    print("MAE: mean over benchmarks of the mean absolute error vs the item mean; "
          "'% of full gain': (naive - estimator) at this size / the same at 'all'; cover: "
          "share of estimate +- 1.96 stderr intervals holding the truth (all benchmarks pooled); "
          "ability sd: sqrt(mean variance) of the fitted reference abilities; 'endpoints "
          "exact': mp-IRT's stderr without the endpoint abilities' error (the package before "
          "irt/_merge_stderr.py).")
    for r in results:
        print(f"- {r['name']}: {r['n_items']} items, pool {r['n_pool']}, held-out {r['n_test']}, "
              f"merges {', '.join(m.split('/')[1] for m in r['merges']) or '-'}")
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(pooled, indent=1))


if __name__ == "__main__":
    main()
