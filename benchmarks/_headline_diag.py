"""The headline's diagnostics: the search space's spread, and why an estimator ranks well or not.

Used by ``benchmarks/headline.py`` (issue 16, point 3). Every number here re-scores answers the
headline already generated: a candidate's answers on ALL items are known (its truth), so each
estimator's fitness on a seed's 20-item subset is the same answers sliced to the subset (the
search evaluates the subset alone; greedy answers do not depend on the batch, up to float ties).

* spread: random genotypes of the study's space (uniform per gene) and, for comparison, random
  genotypes with one weight per endpoint in every block ("tied"): is there a spread, and do
  per-block genes reach what one weight per endpoint cannot?
* errors: estimate - truth per estimator, split into the part that is the same for every subset
  (bias of the candidate; its spread across candidates is what can reorder them) and the part
  that changes with the subset (variance), on the random candidates and along (a)'s search path
  (its candidates per generation, whose truth the search itself measured);
* ranking: Spearman correlation of estimate and truth among each generation's candidates of (a)'s
  path and among the random candidates, and the truth lost by taking the estimator's favourite
  (regret).
"""

from __future__ import annotations

from typing import Any

import numpy as np

ESTIMATORS = ("naive", "pirt", "mpirt", "gmpirt", "gmpirt_star")
LABELS = {
    "naive": "(c) naive",
    "pirt": "(d) p-IRT",
    "mpirt": "(e) mp-IRT",
    "gmpirt": "(b) gmp-IRT",
    "gmpirt_star": "(b*) gmp-IRT*",
}


def spread(world: Any, task: str, n: int, out: list[str]) -> dict[str, Any]:
    """Truth of ``n`` random genotypes (+ ``n // 4`` tied-block ones) on all items of ``task``."""
    rng = np.random.default_rng(16)
    genes = world.space.param_names
    bounds = world.space.distributions()
    free = [{g: float(rng.uniform(bounds[g].low, bounds[g].high)) for g in genes} for _ in range(n)]
    tied = []
    for _ in range(n // 4):
        per_endpoint = {e: float(rng.uniform(0.0, 1.0)) for e in world.setup.endpoint_names}
        tied.append(
            {
                g: bounds[g].low + per_endpoint[g.split("/")[1]] * (bounds[g].high - bounds[g].low)
                for g in genes
            }
        )
    acc = np.array([world.correct(p, task).mean() for p in free])
    acc_tied = np.array([world.correct(p, task).mean() for p in tied])
    setup = world.tasks[task]
    best_end = float(setup.endpoint_correct.mean(axis=1).max())
    qs = (0, 10, 25, 50, 75, 90, 100)
    out.append(
        f"## Spread of the search space: {n} random genotypes ({len(genes)} genes, uniform "
        f"per gene) and {len(tied)} tied ones (one weight per endpoint, all blocks)\n"
    )
    out.append(
        f"True `{task}` accuracy (%, all items) | "
        + " | ".join(f"q{q}" for q in qs)
        + " | mean | share at 0 | share > best endpoint |"
    )
    out.append("|---|" + "---|" * (len(qs) + 3))
    for label, a in (("per-block (the study's space)", acc), ("tied blocks", acc_tied)):
        out.append(
            f"| {label} | "
            + " | ".join(f"{100 * np.percentile(a, q):.1f}" for q in qs)
            + f" | {100 * a.mean():.1f} | {100 * np.mean(a == 0):.0f}% | "
            f"{100 * np.mean(a > best_end):.0f}% |"
        )
    out.append(f"\nBest endpoint {100 * best_end:.1f}%.\n")
    return {
        "n": n,
        "n_tied": len(tied),
        "quantiles": {q: round(float(np.percentile(acc, q)), 4) for q in qs},
        "best": round(float(acc.max()), 4),
        "best_tied": round(float(acc_tied.max()), 4),
        "mean": round(float(acc.mean()), 4),
        "share_zero": round(float(np.mean(acc == 0)), 4),
        "best_endpoint": round(best_end, 4),
        "_params": free + tied,
    }


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    from scipy.stats import spearmanr

    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return float("nan")
    return float(spearmanr(x, y).statistic)


def _scores(
    world: Any, task: str, params: list[dict], subsets: list[dict], estimate: Any
) -> tuple[np.ndarray, np.ndarray]:
    """truth (candidates,) and estimates (estimators, seeds, candidates) by slicing answers."""
    setup = world.tasks[task]
    full = np.stack([world.correct(p, task) for p in params])
    est = np.empty((len(ESTIMATORS), len(subsets), len(params)))
    for s, subs in enumerate(subsets):
        sub = subs[(task, 20)]
        for i, row in enumerate(full):
            for e, name in enumerate(ESTIMATORS):
                est[e, s, i] = estimate(setup, name, sub, row[sub.indices])
    return full.mean(axis=1), est


def diagnose(
    world: Any,
    summary: dict,
    spread_result: dict | None,
    out: list[str],
    estimate: Any,
    population: int,
) -> dict[str, Any]:
    """Bias / variance and ranking agreement of every estimator (see the module docstring)."""
    task, subsets = summary["task"], summary["_subsets"]
    result: dict[str, Any] = {}
    sets = []
    if spread_result:
        sets.append(("random candidates", spread_result["_params"]))
    # (a)'s path: the same candidates for every estimator, truth known (the search measured it)
    for label, params in sets:
        truth, est = _scores(world, task, params, subsets, estimate)
        err = est - truth[None, None, :]
        out.append(
            f"## Estimator errors on the {len(params)} {label} ({len(subsets)} seeds = "
            "20-item random subsets)\n"
        )
        out.append(
            "Points. Bias = mean over subsets of estimate - truth for each candidate; its "
            "mean is a constant offset (harmless to a ranking), its spread across "
            "candidates reorders them; subset s.d. = spread over subsets (variance). "
            "Spearman and regret per subset, mean over subsets.\n"
        )
        out.append(
            "| estimator | mean bias | s.d. of bias across candidates | subset s.d. | "
            "RMSE | Spearman with truth | regret of its favourite |"
        )
        out.append("|---|---|---|---|---|---|---|")
        rows = {}
        for e, name in enumerate(ESTIMATORS):
            bias = err[e].mean(axis=0)
            sd_sub = float(np.sqrt(err[e].var(axis=0, ddof=1).mean()))
            rho = np.nanmean([_spearman(est[e, s], truth) for s in range(len(subsets))])
            regret = np.mean(
                [truth.max() - truth[int(np.argmax(est[e, s]))] for s in range(len(subsets))]
            )
            rows[name] = {
                "bias": round(float(bias.mean()), 4),
                "bias_sd": round(float(bias.std()), 4),
                "subset_sd": round(sd_sub, 4),
                "rmse": round(float(np.sqrt((err[e] ** 2).mean())), 4),
                "spearman": round(float(rho), 3),
                "regret": round(float(regret), 4),
            }
            r = rows[name]
            out.append(
                f"| {LABELS[name]} | {100 * r['bias']:+.1f} | {100 * r['bias_sd']:.1f} | "
                f"{100 * r['subset_sd']:.1f} | {100 * r['rmse']:.1f} | "
                f"{r['spearman']:.2f} | {100 * r['regret']:.1f} |"
            )
        result[label] = rows
        out.append("")
    runs = summary["_runs"].get("full")
    if runs:
        per_gen: dict[str, list[list[float]]] = {n: [] for n in ESTIMATORS}
        rmse_gen: dict[str, list[list[float]]] = {n: [] for n in ESTIMATORS}
        spread_gen: list[list[float]] = []
        for s, run in enumerate(runs):
            truth, est = _scores(world, task, run.path, [subsets[s]], estimate)
            gens = range(0, len(run.path), population)
            spread_gen.append([float(np.std(truth[g : g + population])) for g in gens])
            for e, name in enumerate(ESTIMATORS):
                per_gen[name].append(
                    [
                        _spearman(est[e, 0, g : g + population], truth[g : g + population])
                        for g in gens
                    ]
                )
                rmse_gen[name].append(
                    [
                        float(
                            np.sqrt(
                                (
                                    (est[e, 0, g : g + population] - truth[g : g + population]) ** 2
                                ).mean()
                            )
                        )
                        for g in gens
                    ]
                )
        n_gen = min(len(x) for x in spread_gen)
        out.append(
            f"## Ranking agreement along (a)'s search path, per generation of {population} "
            "(Spearman of each estimator's fitness with the truth among the generation's "
            "candidates, mean over seeds; RMSE in points)\n"
        )
        out.append(
            "| estimator | "
            + " | ".join(f"gen {g}" for g in range(n_gen))
            + " | RMSE per generation |"
        )
        out.append("|---|" + "---|" * (n_gen + 1))
        result["path"] = {}
        for name in ESTIMATORS:
            rho = np.nanmean(np.array([x[:n_gen] for x in per_gen[name]]), axis=0)
            rmse = np.mean(np.array([x[:n_gen] for x in rmse_gen[name]]), axis=0)
            result["path"][name] = {
                "spearman": [round(float(v), 3) for v in rho],
                "rmse": [round(float(v), 4) for v in rmse],
            }
            out.append(
                f"| {LABELS[name]} | "
                + " | ".join(f"{v:.2f}" for v in rho)
                + " | "
                + " / ".join(f"{100 * v:.1f}" for v in rmse)
                + " |"
            )
        true_sd = np.mean(np.array([x[:n_gen] for x in spread_gen]), axis=0)
        result["path"]["truth_sd"] = [round(float(v), 4) for v in true_sd]
        out.append(
            "| spread of the truth (s.d., points) | "
            + " | ".join(f"{100 * v:.1f}" for v in true_sd)
            + " | |"
        )
        out.append("")
    return result
