"""The MERGE^3 headline in miniature: evolve merges with cheap fitness, keep most of the accuracy.

On the embedded tiny world (studies/tiny_world.toml: task arithmetic of ``math_en`` + ``lang_it``
over ``weight/<endpoint>`` in [0, 1.5]) every variant runs the SAME search: the library's NSGA-II
(``create_sampler("nsga2")``: SBX + polynomial mutation, population 8, generation 0 seeded with
both endpoints and the uniform merge), the same budget of complete trials and the same seeds. Only
the fitness differs:

* (a) ``full``: accuracy on ALL items of the task (the expensive baseline);
* (b) ``gmpirt``: 20 items + gmp-IRT (MERGE^3 eq. 5), the library default;
* (c) ``naive``: 20 items + their mean;
* (d) ``pirt``: 20 items + p-IRT (tinyBenchmarks);
* extras: 20 items + mp-IRT (eq. 4) / gmp-IRT* (app. C.2.3), and 10 items + gmp-IRT / naive
  (10 of 200 items is the 20x reduction the issue asks for; 20 of 200 can only give 10x).

A seed sets the sampler seed AND the random 20-item subset (``extract_subset("random")`` with the
pipeline's stream ``default_rng([seed, task_index])``; the 10-item subsets are drawn inside the
20, so every variant of a seed leaves the same items unseen). IRT item parameters (2PL, d = 2, on
the 68-model reference population) and the endpoints' abilities come once from the library's
Extract + Estimate step (``StudyRunner.setup``), as in a real study.

Reported: the TRUE accuracy of the best merge each search returns (the trial with the best
fitness), on all items and on the items outside the seed's 20-item subset (held out from every
subset variant; variant (a) saw them, so its held-out number is the optimistic baseline), mean and
std over seeds, and the items evaluated (complete trials x items per trial; the one-off Estimate
evaluation of the endpoints on all items is listed apart). ``--two-objective`` repeats (a)-(d) on
the default study's two objectives (math_it, qa_en) and reports the hypervolume (reference point
0, 0) of the true accuracies of each returned Pareto front.

Measurement shortcut (does not change what any search sees): a genotype's answers are cached, so
variants that visit the same merge do not regenerate; the true accuracy is computed only for the
incumbent of each generation (the progress curve). Usage::

    python benchmarks/headline.py [--seeds 5] [--trials 48] [--two-objective] [--quick]
    python benchmarks/headline.py --world xl --seeds 10 --two-objective --spread 200

``--world xl`` (issue 16) runs the same protocol on studies/tiny_world_xl.toml: 1,000-item
targets (20 items = 50x fewer), three endpoints x four layer blocks = 12 genes, variants (a),
(b), (b*), (c), (d), (e) and gmp-IRT on IRT-clustered / representation-clustered subsets
(held-out = items outside every subset of the seed); two objectives ``math_it`` + ``math_en``;
FLOPs next to items; paired differences with standard errors; ``--spread N`` first measures N
random genotypes, and the estimator diagnostics (``_headline_diag.py``: bias vs variance,
ranking agreement per generation) re-score answers the run already has.

Prints markdown tables, writes benchmarks/results/headline{,_xl}.md and .png, ends with one JSON
line.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from optuna.trial import TrialState

from optuna_merge3 import evaluation, irt
from optuna_merge3.config import StudyConfig, load_config
from optuna_merge3.objective import genotype_seed
from optuna_merge3.runner import StudyRunner
from optuna_merge3.study import create_sampler, seed_population
from optuna_merge3.workers import claim_genotype

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _headline_diag as _diagnostics  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
CONFIG = ROOT / "studies" / "tiny_world.toml"


@dataclass(frozen=True)
class Variant:
    label: str
    n_items: int | None  # None: all items
    estimator: str | None = None
    extraction: str = "random"  # how the subset is chosen (MERGE^3 appendix C.1)


VARIANTS = {
    "full": Variant("(a) all items", None),
    "gmpirt": Variant("(b) 20 items + gmp-IRT", 20, "gmpirt"),
    "naive": Variant("(c) 20 items + naive", 20, "naive"),
    "pirt": Variant("(d) 20 items + p-IRT", 20, "pirt"),
    "mpirt": Variant("20 items + mp-IRT", 20, "mpirt"),
    "gmpirt_star": Variant("20 items + gmp-IRT*", 20, "gmpirt_star"),
    "gmpirt10": Variant("10 items + gmp-IRT", 10, "gmpirt"),
    "naive10": Variant("10 items + naive", 10, "naive"),
}
VARIANTS.update({
    "gmpirt_irtclust": Variant("20 IRT-clustered items + gmp-IRT", 20, "gmpirt", "irt_clusters"),
    "gmpirt_reprclust": Variant("20 representation-clustered items + gmp-IRT", 20, "gmpirt",
                                "representation_clusters"),
})
TWO_OBJECTIVE = ("full", "gmpirt", "naive", "pirt")


@dataclass(frozen=True)
class WorldSpec:
    """Which embedded world a headline runs on."""

    config: Path
    two_objective: tuple[str, str]
    stem: str  # results file name
    variants: tuple[str, ...]  # single-objective variants (--quick: (a)-(d))
    grid: bool  # the tiny world's 7 x 7 weight grid as a reference
    goal_ratio: int  # the items cut the issue asks for (20 items of 200 cannot give 20x)


WORLDS = {
    "tiny": WorldSpec(CONFIG, ("math_it", "qa_en"), "headline",
                      ("full", "gmpirt", "naive", "pirt", "mpirt", "gmpirt_star", "gmpirt10",
                       "naive10"), True, 20),
    # issue 16: 1,000-item targets (20 items = 50x), 3 endpoints x 4 layer blocks = 12 genes
    "xl": WorldSpec(ROOT / "studies" / "tiny_world_xl.toml", ("math_it", "math_en"),
                    "headline_xl", ("full", "gmpirt", "gmpirt_star", "naive", "pirt", "mpirt",
                                    "gmpirt_irtclust", "gmpirt_reprclust"), False, 50),
}


def say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class World:
    """The tiny world's live model, the Estimate output, and answer caches per genotype."""

    def __init__(self, task_names: list[str], out_dir: Path, blocks: int | None = 1,
                 config: Path = CONFIG) -> None:
        base = load_config(config)
        raw = copy.deepcopy(base.raw)
        raw["study"]["out_dir"] = str(out_dir)
        if blocks is not None:  # > 1: a weight per endpoint per block of layers
            raw["merge"]["blocks"] = blocks
        raw["tasks"] = [t for t in raw["tasks"] if t["name"] in task_names]
        self.config = StudyConfig.from_dict(raw, config.resolve().parent, source=config)
        self.runner = StudyRunner(self.config, progress=say)
        self.setup = self.runner.setup  # Extract + Estimate (loads the model, fits the IRT)
        self.tasks = {t.config.name: t for t in self.setup.tasks}
        self.space = self.runner.space
        self._applied: tuple | None = None
        self._answers: dict[tuple, np.ndarray] = {}
        self.generated_items = 0  # items actually generated (after caching)

    def _apply(self, params: dict[str, float]) -> None:
        key = _key(params)
        if key != self._applied:
            self.runner.merger.apply(params, self.runner.model,
                                     seed=genotype_seed(params, self.config.seed))
            self._applied = key

    def correct(self, params: dict[str, float], task: str, indices: np.ndarray | None = None
                ) -> np.ndarray:
        """0/1 answers of the merge on ``indices`` (None: all items) of ``task``."""
        setup = self.tasks[task]
        sel = None if indices is None else tuple(int(i) for i in indices)
        key = (_key(params), task, sel)
        if key not in self._answers:
            self._apply(params)
            res = evaluation.evaluate(self.runner.model, self.runner.tokenizer, setup.task,
                                      indices=None if sel is None else list(sel),
                                      batch_size=256)
            self._answers[key] = np.asarray(res.correct, dtype=float)
            self.generated_items += len(res.correct)
        return self._answers[key]

    def n_items(self, task: str) -> int:
        return len(self.tasks[task].task.items)

    def embeddings(self, task: str) -> list[np.ndarray]:
        """Each endpoint's mean last hidden state over every item's prompt tokens (the
        representation clustering's input, MERGE^3 appendix C.1); computed once per task."""
        cache = self.__dict__.setdefault("_embeddings", {})
        if task not in cache:
            prompts = [item.prompt for item in self.tasks[task].task.items]
            tok, model, out = self.runner.tokenizer, self.runner.model, []
            for name in self.setup.endpoint_names:
                self.runner.merger.write_endpoint(name, model)
                self._applied = None
                rows = []
                with torch.no_grad():
                    for start in range(0, len(prompts), 256):
                        enc = tok(prompts[start:start + 256], return_tensors="pt", padding=True)
                        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
                        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                        rows.append(((hidden * mask).sum(1) / mask.sum(1)).float().numpy())
                out.append(np.concatenate(rows))
            cache[task] = out
        return cache[task]


def _key(params: dict[str, float]) -> tuple:
    return tuple(sorted((k, round(float(v), 12)) for k, v in params.items()))


def subsets_for(world: World, task_names: list[str], seed: int, extractions: tuple[str, ...] = ()
                ) -> dict[tuple, Any]:
    """The seed's 20-item subset per task (the pipeline's stream), a 10-item one inside it, and
    the 20-item ``extractions`` (clustering; keyed ``(task, 20, method)``)."""
    out: dict[tuple, Any] = {}
    for index, task in enumerate(world.config.tasks):
        if task.name not in task_names:
            continue
        sub20 = irt.extract_subset("random", n_items=world.n_items(task.name), k=20,
                                   random_state=np.random.default_rng([seed, index]))
        pick = np.random.default_rng([seed, index, 10]).choice(sub20.indices, 10, replace=False)
        out[(task.name, 20)] = sub20
        out[(task.name, 10)] = irt.Subset(np.sort(pick), np.full(10, 0.1), "random")
        for method in extractions:
            out[(task.name, 20, method)] = irt.extract_subset(
                method, n_items=world.n_items(task.name), k=20,
                random_state=np.random.default_rng([seed, index, 20]),
                params=world.tasks[task.name].irt, embeddings=world.embeddings(task.name)
                if method == "representation_clusters" else None)
    return out


def estimate(setup: Any, estimator: str, subset: Any, y: np.ndarray) -> float:
    """The fitness of answers ``y`` on ``subset`` with ``estimator`` (a study's Estimate)."""
    kwargs = ({"endpoint_responses": setup.endpoint_correct.astype(float)}
              if estimator == "gmpirt_star" else {})
    return float(irt.estimate_accuracy(estimator, setup.irt, subset, y,
                                       endpoint_abilities=setup.endpoint_abilities,
                                       **kwargs).value)


def _subset(subsets: dict, task: str, variant: Variant) -> Any:
    if variant.extraction == "random":
        return subsets[(task, variant.n_items)]
    return subsets[(task, variant.n_items, variant.extraction)]


@dataclass
class RunResult:
    best_params: list[dict[str, float]]
    best_fitness: list[list[float]]
    items: int
    seconds: float
    trace: list[tuple[int, float, float]] = field(default_factory=list)  # items, acc, held-out
    path: list[dict[str, float]] = field(default_factory=list)  # complete trials, in order


def seeded_study(world: World, n_objectives: int, seed: int, population: int) -> optuna.Study:
    """An in-memory study with the library's NSGA-II, generation 0 seeded with the endpoints
    and the uniform merge (as ``optuna-merge3 run`` seeds it)."""
    sampler = create_sampler("nsga2", n_objectives=n_objectives, seed=seed,
                             population_size=population)
    study = optuna.create_study(directions=["maximize"] * n_objectives, sampler=sampler)
    seeds = {f"endpoint:{n}": world.space.endpoint_params(n) for n in world.setup.endpoint_names}
    seeds["uniform"] = world.space.uniform_params()
    seed_population(study, seeds)
    return study


def run_search(world: World, variant: Variant, task_names: list[str], seed: int,
               n_trials: int, population: int, subsets: dict) -> RunResult:
    """One NSGA-II search with ``variant``'s fitness; the incumbent's truth traced per generation."""
    setups = [world.tasks[t] for t in task_names]
    study = seeded_study(world, len(task_names), seed, population)
    items_per_trial = sum(world.n_items(t) if variant.n_items is None else variant.n_items
                          for t in task_names)
    single = len(task_names) == 1
    held = _heldout_mask(world, task_names[0], subsets) if single else None
    state: dict[str, Any] = {"best": -math.inf, "params": None, "n": 0}
    trace: list[tuple[int, float, float]] = []

    def objective(trial: optuna.Trial) -> list[float]:
        params = world.space.suggest(trial)
        claim_genotype(trial, params)
        values = []
        for setup in setups:
            name = setup.config.name
            if variant.n_items is None:
                values.append(float(world.correct(params, name).mean()))
                continue
            subset = _subset(subsets, name, variant)
            y = world.correct(params, name, subset.indices)
            values.append(estimate(setup, variant.estimator, subset, y))
        return values

    def callback(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if trial.state != TrialState.COMPLETE:
            state["attempts"] = state.get("attempts", 0) + 1
            if state["attempts"] > 4 * n_trials:  # guard against endless pruned repeats
                study.stop()
            return
        state["n"] += 1
        if single and trial.values[0] > state["best"]:  # strict: ties keep the first found
            state["best"], state["params"] = trial.values[0], dict(trial.params)
        if single and (state["n"] % population == 0 or state["n"] == n_trials):
            # the incumbent's truth once per generation (a truth costs a full evaluation)
            full = world.correct(state["params"], task_names[0])
            trace.append((state["n"] * items_per_trial, float(full.mean()),
                          float(full[held].mean())))
        if state["n"] >= n_trials:
            study.stop()

    started = time.perf_counter()
    study.optimize(objective, n_trials=None, callbacks=[callback], gc_after_trial=False)
    seconds = time.perf_counter() - started
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    front = [study.best_trial] if single else sorted(study.best_trials, key=lambda t: t.number)
    return RunResult([dict(t.params) for t in front], [list(t.values) for t in front],
                     len(complete) * items_per_trial, seconds, trace,
                     [dict(t.params) for t in complete])


def _heldout_mask(world: World, task: str, subsets: dict) -> np.ndarray:
    """Items outside every subset of the seed (random, nested 10-item, clustered ones)."""
    mask = np.ones(world.n_items(task), dtype=bool)
    for key, subset in subsets.items():
        if key[0] == task:
            mask[subset.indices] = False
    return mask


def hypervolume_2d(points: np.ndarray) -> float:
    """Area dominated by ``points`` (maximisation) above the reference point (0, 0)."""
    pts = sorted((max(a, 0.0), max(b, 0.0)) for a, b in points)
    area, best_y = 0.0, 0.0
    for x, y in reversed(pts):  # sweep from the largest x
        if y > best_y:
            area += x * (y - best_y)
            best_y = y
    return area


def ms(values: list[float], scale: float = 100.0) -> str:
    arr = np.asarray(values, dtype=float) * scale
    return f"{arr.mean():.1f} ± {arr.std(ddof=1) if arr.size > 1 else 0.0:.1f}"


def flops_per_item(world: World, task: str) -> float:
    """Forward FLOPs of one item: 2 x parameters x (prompt tokens + max_new_tokens).

    An upper bound on generation (it stops at EOS) that ignores attention scores (prompts of
    ~20 tokens); the same per-item cost for every variant, so only the item counts differ.
    """
    cache = world.__dict__.setdefault("_flops", {})
    if task not in cache:
        items = world.tasks[task].task.items
        tok = world.runner.tokenizer
        prompt = np.mean([len(tok(item.prompt)["input_ids"]) for item in items])
        new = world.tasks[task].task.generation.max_new_tokens
        n_params = sum(p.numel() for p in world.runner.model.parameters())
        cache[task] = 2.0 * n_params * (prompt + new)
    return cache[task]


def summary_items(runs: list[RunResult]) -> float:
    return float(np.mean([r.items for r in runs]))


def paired(a: list[float], b: list[float]) -> tuple[float, float]:
    """Mean of a - b over seeds and its standard error."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    return float(d.mean()), float(d.std(ddof=1) / math.sqrt(d.size)) if d.size > 1 else math.nan


def single_objective(world: World, args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    task = "math_it"
    spec: WorldSpec = args.spec
    setup = world.tasks[task]
    n_all = world.n_items(task)
    names = list(spec.variants) if not args.quick else ["full", "gmpirt", "naive", "pirt"]
    extractions = tuple(sorted({VARIANTS[n].extraction for n in names} - {"random"}))
    res: dict[str, list[RunResult]] = {n: [] for n in names}
    held_by: dict[str, list[float]] = {n: [] for n in names}
    acc_by: dict[str, list[float]] = {n: [] for n in names}
    err_by: dict[str, list[float]] = {n: [] for n in names}
    seed_subsets = []
    for seed in range(args.seeds):
        subsets = subsets_for(world, [task], seed, extractions)
        seed_subsets.append(subsets)
        held = _heldout_mask(world, task, subsets)
        for name in names:
            r = run_search(world, VARIANTS[name], [task], seed, args.trials, args.population,
                           subsets)
            full = world.correct(r.best_params[0], task)
            res[name].append(r)
            acc_by[name].append(float(full.mean()))
            held_by[name].append(float(full[held].mean()))
            err_by[name].append(r.best_fitness[0][0] - float(full.mean()))
            w = ", ".join(f"{v:.2f}" for _, v in sorted(r.best_params[0].items()))
            say(f"[seed {seed}] {name:12s} best w=({w}) fitness {r.best_fitness[0][0]:.3f} true "
                f"{full.mean():.3f} held-out {full[held].mean():.3f} ({r.seconds:.1f} s)")
    endpoint_acc = setup.endpoint_correct.mean(axis=1)
    uniform = world.correct(world.space.uniform_params(), task).mean()
    grid = _grid(world, task) if spec.grid and not args.quick and args.blocks == 1 else None
    a_held = float(np.mean(held_by["full"]))
    one_off = {n: (len(world.setup.endpoint_names) * n_all
                   if VARIANTS[n].estimator in ("mpirt", "gmpirt", "gmpirt_star") else 0)
               for n in names}
    fpi = flops_per_item(world, task)
    genes = len(world.space.uniform_params())
    n_held = int(_heldout_mask(world, task, seed_subsets[0]).sum())
    out.append(f"## Single objective: `{task}` ({n_all} items), {genes} genes, NSGA-II population "
               f"{args.population}, {args.trials} complete trials, seeds 0-{args.seeds - 1}\n")
    out.append("Accuracies in %, mean ± std over seeds, of the best merge each search returns. "
               f"Held-out = the items outside every subset of the seed ({n_held} items). FLOPs: "
               f"2 x {sum(p.numel() for p in world.runner.model.parameters()):,} parameters x "
               "(prompt + max new tokens) per item evaluated, search + one-off.\n")
    out.append("| fitness | items / trial | items evaluated | + one-off (Estimate) | "
               "FLOPs (search + one-off) | true acc, all items | true acc, held-out | "
               "share of (a) held-out | fitness - truth (pp) | s / search |")
    out.append("|---|---|---|---|---|---|---|---|---|---|")
    for name in names:
        v = VARIANTS[name]
        items = int(np.mean([r.items for r in res[name]]))
        share = np.mean(held_by[name]) / a_held if a_held > 0 else math.nan
        out.append(
            f"| {v.label} | {v.n_items or n_all} | {items} | {one_off[name]} | "
            f"{fpi * (items + one_off[name]):.2e} | "
            f"{ms(acc_by[name])} | {ms(held_by[name])} | {100 * share:.1f}% | "
            f"{np.mean(err_by[name]) * 100:+.1f} | "
            f"{np.mean([r.seconds for r in res[name]]):.1f} |")
    ends = ", ".join(f"{n} {100 * a:.1f}" for n, a in
                     zip(world.setup.endpoint_names, endpoint_acc, strict=True))
    out.append(f"\nReferences (true acc, all items): endpoints {ends}; uniform merge "
               f"{100 * uniform:.1f}" + (f"; best of the 7 x 7 weight grid {100 * grid[0]:.1f} "
                                         f"at w = {grid[1]}" if grid else "") + ".\n")
    b, c = np.asarray(held_by["gmpirt"]), np.asarray(held_by["naive"])
    out.append("Held-out accuracy per seed (%), with (b) / (a) and (b) - (c):\n")
    out.append("| seed | " + " | ".join(VARIANTS[n].label for n in names)
               + " | (b) / (a) | (b) - (c) |")
    out.append("|---|" + "---|" * (len(names) + 2))
    for seed in range(args.seeds):
        a_s = held_by["full"][seed]
        out.append(f"| {seed} | " + " | ".join(f"{100 * held_by[n][seed]:.1f}" for n in names)
                   + f" | {100 * b[seed] / a_s if a_s > 0 else math.nan:.1f}% | "
                   f"{100 * (b[seed] - c[seed]):+.1f} |")
    out.append("\nPaired differences over seeds (held-out, points, mean ± standard error; "
               "wins / ties / losses per seed):\n")
    out.append("| fitness | minus (c) naive | w/t/l vs (c) | minus (a) all items |")
    out.append("|---|---|---|---|")
    pairs = {}
    for name in names:
        dc, sc = paired(held_by[name], held_by["naive"])
        da, sa = paired(held_by[name], held_by["full"])
        x, y = np.asarray(held_by[name]), c
        pairs[name] = {"minus_naive": round(dc, 4), "minus_naive_se": round(sc, 4),
                       "minus_full": round(da, 4), "minus_full_se": round(sa, 4)}
        out.append(f"| {VARIANTS[name].label} | {100 * dc:+.1f} ± {100 * sc:.1f} | "
                   f"{int((x > y).sum())}/{int((x == y).sum())}/{int((x < y).sum())} | "
                   f"{100 * da:+.1f} ± {100 * sa:.1f} |")
    summary = {
        "task": task,
        "seeds": args.seeds,
        "trials": args.trials,
        "genes": genes,
        "variants": {n: {"items": int(np.mean([r.items for r in res[n]])),
                         "one_off_items": one_off[n],
                         "flops": float(f"{fpi * (summary_items(res[n]) + one_off[n]):.3e}"),
                         "acc_all_mean": round(float(np.mean(acc_by[n])), 4),
                         "acc_all_std": round(float(np.std(acc_by[n], ddof=1)), 4),
                         "heldout_mean": round(float(np.mean(held_by[n])), 4),
                         "heldout_std": round(float(np.std(held_by[n], ddof=1)), 4),
                         "heldout_per_seed": [round(v, 4) for v in held_by[n]]}
                     for n in names},
        "paired": pairs,
        "goal_ratio": spec.goal_ratio,
        "items_ratio_a_over_b": round(res["full"][0].items / res["gmpirt"][0].items, 2),
        "items_ratio_incl_one_off": round(
            res["full"][0].items / (res["gmpirt"][0].items + one_off["gmpirt"]), 2),
        "b_share_of_a_heldout": round(float(b.mean() / a_held), 4),
        "b_minus_c_heldout": round(float(b.mean() - c.mean()), 4),
        "b_minus_c_stderr": round(paired(b, c)[1], 4) if len(b) > 1 else None,
        "b_beats_c_seeds": int(np.sum(b > c)),
        "b_ties_c_seeds": int(np.sum(b == c)),
        "endpoints": dict(zip(world.setup.endpoint_names, endpoint_acc.round(4).tolist(),
                              strict=True)),
        "uniform": round(float(uniform), 4),
        "grid_best": None if grid is None else round(grid[0], 4),
    }
    if "gmpirt10" in res:
        summary["items_ratio_a_over_b10"] = round(res["full"][0].items
                                                  / res["gmpirt10"][0].items, 2)
        summary["b10_share_of_a_heldout"] = round(float(np.mean(held_by["gmpirt10"]) / a_held), 4)
    out.append("")
    out.append(_verdict(summary))
    summary["_traces"] = {n: [r.trace for r in res[n]] for n in names}
    summary["_held"] = held_by
    summary["_runs"] = res
    summary["_subsets"] = seed_subsets
    return summary


def _grid(world: World, task: str) -> tuple[float, str]:
    best = (-1.0, "")
    for wm in np.linspace(0, 1.5, 7):
        for wi in np.linspace(0, 1.5, 7):
            acc = float(world.correct({"weight/math_en": wm, "weight/lang_it": wi}, task).mean())
            if acc > best[0]:
                best = (acc, f"({wm:.2f}, {wi:.2f})")
    return best


def _verdict(s: dict[str, Any]) -> str:
    share, ratio = s["b_share_of_a_heldout"], s["items_ratio_a_over_b"]
    diff, stderr = s["b_minus_c_heldout"], s.get("b_minus_c_stderr")
    se = f" (± {100 * stderr:.1f} paired stderr over seeds)" if stderr else ""
    signif = ("" if not stderr else ", significant (> 2 stderr)" if abs(diff) > 2 * stderr
              else ", but within noise (< 2 stderr)")
    goal = s.get("goal_ratio", 20)
    lines = [
        f"Goal of the issue: (b) keeps >= 90% of (a)'s held-out accuracy at >= {goal}x fewer "
        "items and beats (c) (beyond 2 paired standard errors).\n",
        f"- items: (a) / (b) = {ratio:.1f}x per search ({s['items_ratio_incl_one_off']:.1f}x "
        "counting the one-off endpoint evaluation)"
        + ("; 20 of 200 items cannot reach 20x" if ratio < goal else "")
        + f" -> {'met' if ratio >= goal else 'NOT met'} for 20 items.",
        f"- accuracy: (b) keeps {100 * share:.1f}% of (a)'s held-out accuracy -> "
        f"{'met' if share >= 0.9 else 'NOT met'}.",
        f"- (b) vs (c): {100 * s['b_minus_c_heldout']:+.1f} points held-out on average{se}; "
        f"(b) better on {s['b_beats_c_seeds']} of {s['seeds']} seeds, tied on "
        f"{s['b_ties_c_seeds']} -> {'met' if s['b_minus_c_heldout'] > 0 else 'NOT met'} on the "
        f"mean{signif}.",
    ]
    if "b10_share_of_a_heldout" in s:
        lines.append(f"- 10 items + gmp-IRT: {s['items_ratio_a_over_b10']:.0f}x fewer items, "
                     f"keeps {100 * s['b10_share_of_a_heldout']:.1f}% of (a)'s held-out "
                     "accuracy.")
    return "\n".join(lines)


def two_objective(world: World, args: argparse.Namespace, out: list[str]) -> dict[str, Any]:
    tasks = list(args.spec.two_objective)
    hv: dict[str, list[float]] = {n: [] for n in TWO_OBJECTIVE}
    fronts: dict[str, list[np.ndarray]] = {n: [] for n in TWO_OBJECTIVE}
    items: dict[str, int] = {}
    for seed in range(args.mo_seeds):
        subsets = subsets_for(world, tasks, seed)
        for name in TWO_OBJECTIVE:
            r = run_search(world, VARIANTS[name], tasks, seed, args.trials, args.population,
                           subsets)
            truth = np.array([[world.correct(p, t).mean() for t in tasks] for p in r.best_params])
            hv[name].append(hypervolume_2d(truth))
            fronts[name].append(truth)
            items[name] = r.items
            say(f"[2-obj seed {seed}] {name:8s} front {len(truth)} HV {hv[name][-1]:.4f} "
                f"({r.seconds:.1f} s)")
    a = float(np.mean(hv["full"]))
    out.append(f"\n## Two objectives: `{tasks[0]}` + `{tasks[1]}`, {args.trials} complete trials, "
               f"seeds 0-{args.mo_seeds - 1}\n")
    out.append("Hypervolume (reference 0, 0; x 100) of the TRUE accuracies (all items) of the "
               "Pareto front each search returns.\n")
    out.append("| fitness | items evaluated | true-front hypervolume | share of (a) | "
               "minus (c), paired ± s.e. | front size |")
    out.append("|---|---|---|---|---|---|")
    for name in TWO_OBJECTIVE:
        size = np.mean([len(f) for f in fronts[name]])
        d, se = paired(hv[name], hv["naive"])
        out.append(f"| {VARIANTS[name].label} | {items[name]} | {ms(hv[name])} | "
                   f"{100 * np.mean(hv[name]) / a:.1f}% | {100 * d:+.1f} ± {100 * se:.1f} | "
                   f"{size:.1f} |")
    return {"hv": {n: round(float(np.mean(v)), 4) for n, v in hv.items()},
            "hv_std": {n: round(float(np.std(v, ddof=1)), 4) for n, v in hv.items()},
            "hv_per_seed": {n: [round(float(x), 4) for x in v] for n, v in hv.items()},
            "items": items, "seeds": args.mo_seeds, "_fronts": fronts}


def plot(summary: dict[str, Any], mo: dict[str, Any] | None, path: Path,
         mo_tasks: tuple[str, str] = ("math_it", "qa_en")) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_panels = 4 if mo else 3
    fig, axes = plt.subplots(1, n_panels, figsize=(5.2 * n_panels, 4.4))
    traces = summary["_traces"]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, (name, runs) in enumerate(traces.items()):
        x = np.array([t[0] for t in runs[0]])
        acc = np.array([[t[1] for t in run] for run in runs]) * 100
        m, s = acc.mean(0), acc.std(0)
        ax = axes[0]
        ax.plot(x, m, color=colors[i % len(colors)], label=VARIANTS[name].label)
        ax.fill_between(x, m - s, m + s, color=colors[i % len(colors)], alpha=0.12)
    axes[0].set_xscale("log")
    axes[0].set_xlabel("items evaluated (complete trials x items per trial)")
    axes[0].set_ylabel("true math_it accuracy of the incumbent (%)")
    axes[0].set_title("search progress (mean ± std over seeds)")
    if summary.get("grid_best") is not None:
        axes[0].axhline(100 * summary["grid_best"], color="grey", ls=":", label="grid best")
    axes[0].legend(fontsize=7)
    held = summary["_held"]
    names = list(held)
    for i, name in enumerate(names):
        vals = np.asarray(held[name]) * 100
        axes[1].bar(i, vals.mean(), yerr=vals.std(), color=colors[i % len(colors)], alpha=0.6)
        axes[1].scatter(np.full(vals.size, i), vals, color="k", s=8, zorder=3)
    axes[1].set_xticks(range(len(names)), [VARIANTS[n].label for n in names], rotation=35,
                       ha="right", fontsize=7)
    axes[1].set_ylabel("held-out true accuracy of the best merge (%)")
    axes[1].set_title("final result per seed")
    b, c = np.asarray(held["gmpirt"]) * 100, np.asarray(held["naive"]) * 100
    a = np.asarray(held["full"]) * 100
    seeds = np.arange(b.size)
    d, se = paired(list(b), list(c))
    axes[2].bar(seeds, b - c, color=colors[1], alpha=0.7, label="(b) - (c), points")
    axes[2].axhline(d, color="k", lw=1, label=f"mean {d:+.1f} ± {se:.1f} s.e.")
    axes[2].axhspan(d - 2 * se, d + 2 * se, color="k", alpha=0.1, label="± 2 s.e.")
    twin = axes[2].twinx()
    twin.plot(seeds, 100 * b / np.where(a > 0, a, np.nan), "o-", color=colors[2],
              label="(b) / (a) held-out (%)")
    twin.axhline(90, color=colors[2], ls=":", lw=1)
    twin.set_ylabel("(b) share of (a)'s held-out accuracy (%)")
    axes[2].set_xlabel("seed")
    axes[2].set_ylabel("(b) gmp-IRT minus (c) naive, held-out (points)")
    axes[2].set_title(f"per seed, {summary['items_ratio_a_over_b']:.0f}x fewer items")
    handles = axes[2].get_legend_handles_labels()
    extra = twin.get_legend_handles_labels()
    axes[2].legend(handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="lower left")
    if mo:
        for i, name in enumerate(TWO_OBJECTIVE):
            front = mo["_fronts"][name][0] * 100
            order = np.argsort(front[:, 0])
            axes[3].plot(front[order, 0], front[order, 1], "o-", ms=4,
                         color=colors[i % len(colors)], label=VARIANTS[name].label)
        axes[3].set_xlabel(f"{mo_tasks[0]} true accuracy (%)")
        axes[3].set_ylabel(f"{mo_tasks[1]} true accuracy (%)")
        axes[3].set_title("returned fronts, true accuracies (seed 0)")
        axes[3].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--world", choices=sorted(WORLDS), default="tiny",
                        help="tiny: studies/tiny_world.toml (200 items, 2 genes); xl: "
                             "studies/tiny_world_xl.toml (1,000 items, 12 genes)")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--trials", type=int, default=48, help="complete trials per search")
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--two-objective", action="store_true",
                        help="also run (a)-(d) on two objectives (hypervolume)")
    parser.add_argument("--mo-seeds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="(a)-(d) only, no grid")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=None,
                        help="weights per endpoint across layer blocks (default: the world's "
                             "config, 1 for tiny; 4 there: 8 genes, a harder search)")
    parser.add_argument("--spread", type=int, default=0,
                        help="random candidates whose truth is measured first (the search "
                             "space's spread) and that the estimator diagnostics score")
    parser.add_argument("--results", default=str(RESULTS),
                        help="folder for headline.md / headline.png ('' to write nothing)")
    args = parser.parse_args()
    args.spec = WORLDS[args.world]
    torch.set_num_threads(args.threads)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.getLogger("optuna_merge3").setLevel(logging.WARNING)
    started = time.perf_counter()
    tasks = list(args.spec.two_objective) if args.two_objective else ["math_it"]
    world_name = "tiny world" if args.world == "tiny" else "XL tiny world"
    out = [f"# Headline in miniature: cheap fitness vs all items ({world_name})\n",
           f"`python benchmarks/headline.py {' '.join(sys.argv[1:])}`".replace(" `", "`") + " on "
           f"{platform.machine()}, torch {torch.__version__} ({args.threads} thread), "
           f"optuna {optuna.__version__}.\n"]
    with tempfile.TemporaryDirectory(prefix="headline-") as tmp:
        world = World(tasks, Path(tmp), blocks=args.blocks, config=args.spec.config)
        args.blocks = world.space.blocks
        spread = _diagnostics.spread(world, "math_it", args.spread, out) if args.spread else None
        summary = single_objective(world, args, out)
        diag = _diagnostics.diagnose(world, summary, spread, out, estimate, args.population)
        mo = two_objective(world, args, out) if args.two_objective else None
    wall = time.perf_counter() - started
    out.append(f"\nWall time {wall:.0f} s; items actually generated (answers cached per genotype) "
               f"{world.generated_items}.")
    text = "\n".join(out)
    print(text)
    result = {"benchmark": "headline", "world": args.world, "blocks": args.blocks,
              **{k: v for k, v in summary.items() if not k.startswith("_")},
              "diagnostics": diag, "wall_s": round(wall, 1)}
    if spread:
        result["spread"] = {k: v for k, v in spread.items() if not k.startswith("_")}
    if mo:
        result["two_objective"] = {k: v for k, v in mo.items() if not k.startswith("_")}
    if args.results:
        results = Path(args.results)
        results.mkdir(parents=True, exist_ok=True)
        stem = args.spec.stem
        if args.world == "tiny" and args.blocks != 1:
            stem = f"headline_blocks{args.blocks}"
        plot(summary, mo, results / f"{stem}.png", args.spec.two_objective)
        (results / f"{stem}.md").write_text(text + "\n\n```json\n" + json.dumps(result)
                                                  + "\n```\n", encoding="utf-8")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
