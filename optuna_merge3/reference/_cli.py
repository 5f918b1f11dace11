"""``optuna-merge3 reference import | build``: the command-line face of this package (prints)."""

from __future__ import annotations

import argparse
from typing import Any

from ._import import FORMATS

__all__ = ["add_reference_commands"]


def _say(message: str) -> None:
    print(message, flush=True)


def cmd_import(args: argparse.Namespace) -> int:
    from optuna_merge3 import evaluation

    from ._import import import_responses
    from ._matrix import write_responses

    task = evaluation.load_task(args.task) if args.task else None
    matrix = import_responses(args.format, args.files, task=task, metric=args.metric,
                              filter_name=args.filter, item_key=args.item_key,
                              scenario=args.scenario)
    write_responses(args.out, matrix.models, matrix.item_ids, matrix.values)
    _say(matrix.summary())
    _say(f"wrote {args.out}")
    if args.fit_report:
        from ._fit_report import irt_fit_report

        for line in irt_fit_report(matrix.values, args.fit_report).lines():
            _say(line)
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from optuna_merge3.config import load_config

    from ._build import build_reference
    from ._fit_report import irt_fit_report

    config = load_config(args.config)
    seed = config.seed if args.seed is None else args.seed
    bar = tqdm(total=None, unit="model", desc=f"[reference] {args.task}")

    def on_model(done: int, total: int, name: str, cached: bool) -> None:
        bar.total = total
        bar.set_postfix_str(f"{name[:40]}{' (cached)' if cached else ''}")
        bar.update(1)

    try:
        result = build_reference(config, args.task, models=args.models or (),
                                 random_merges=args.random_merges, seed=seed, out=args.out,
                                 overwrite=args.overwrite, on_model=on_model)
    finally:
        bar.close()
    _say(f"[reference] {len(result.models)} models x {len(result.item_ids)} items "
         f"({result.n_evaluated} evaluated, {len(result.models) - result.n_evaluated} from the "
         f"cache) in {result.seconds:.1f} s -> {result.path}")
    task = next(t for t in config.tasks if t.name == args.task)
    if task.reference is None and args.out is None:
        _say(f"[reference] add to task {args.task!r}: reference = \"{result.path}\"")
    endpoints = [result.models.index(e) for e in config.merge.endpoints]
    judged = task.estimator if task.estimator in ("pirt", "mpirt", "gmpirt") else "gmpirt"
    report = irt_fit_report(result.values, config.irt.n_dims, endpoints=endpoints,
                            estimator=judged, n_items=task.n_items, random_state=seed)
    for line in report.lines():
        _say(line)
    return 0


def add_reference_commands(sub: Any) -> None:
    """Add ``reference import`` and ``reference build`` to the CLI's subparsers."""
    group = sub.add_parser("reference", help="Import or build a task's reference population.",
                           description="Import or build a task's reference population.")
    commands = group.add_subparsers(dest="reference_command", required=True)
    imp = commands.add_parser(
        "import", help="Public per-item results -> responses CSV.",
        description="Read public per-item correctness files into the project's responses CSV.")
    imp.add_argument("--format", required=True, choices=FORMATS)
    imp.add_argument("files", nargs="+", help="input files; NAME=FILE names a file's model")
    imp.add_argument("--out", required=True, help="responses CSV to write (.csv or .csv.gz)")
    imp.add_argument("--task", help="task file (JSONL / CSV): items must be its items")
    imp.add_argument("--metric", help="per-item metric (default: the only 0/1 one); lm-eval's "
                     "'<metric>,<filter>' also sets --filter")
    imp.add_argument("--filter", help="lm-eval filter (default: the only one)")
    imp.add_argument("--item-key", default="doc_id",
                     help="lm-eval item id: doc_id (default) or doc.<field>")
    imp.add_argument("--scenario", help="tinyBenchmarks pickle scenario")
    imp.add_argument("--fit-report", type=int, metavar="D",
                     help="also cross-validate a d = D 2PL on it (does IRT help?)")
    imp.set_defaults(func=cmd_import)
    build = commands.add_parser(
        "build", help="Evaluate local checkpoints and random merges on a task.",
        description="Evaluate the study's base, endpoints, local checkpoints and K random merges "
                    "on all items of a task, write its responses CSV and report the IRT fit.")
    build.add_argument("config", help="study TOML file")
    build.add_argument("--task", required=True, help="task name in the config")
    build.add_argument("--models", nargs="*", help="extra local checkpoint folders")
    build.add_argument("--random-merges", type=int, default=0, metavar="K")
    build.add_argument("--seed", type=int, help="seed of the random merges (default: the "
                       "study's seed)")
    build.add_argument("--out", help="CSV to write (default: the task's reference path)")
    build.add_argument("--overwrite", action="store_true", help="replace an existing CSV")
    build.set_defaults(func=cmd_build)
