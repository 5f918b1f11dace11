"""Study reports: a results table (markdown) and a PNG of the front and the search history.

Plots use matplotlib's Agg backend, so they work offline and headless (Optuna's plotly figures
need kaleido + Chrome to become PNGs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

__all__ = ["report_figure", "results_table", "study_note", "write_report"]


def results_table(rows: Sequence[Any], task_names: Sequence[str]) -> str:
    """Markdown table of :class:`~optuna_merge3.runner.TrialSummary` rows.

    ``est. %`` columns are what the search saw (MERGE^3 fitness from the subset), ``full %``
    columns the accuracy on all items of the task, both in percent.
    """
    head = (["model"] + [f"{t} est. %" for t in task_names]
            + [f"{t} full %" for t in task_names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        est = row.estimates or [None] * len(task_names)
        full = row.full_accuracy or [None] * len(task_names)
        cells = [row.label] + [_pct(v) for v in est] + [_pct(v) for v in full]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


# How the right panel and the seeds in the left panel show each kind of row.
_KIND_STYLE = {
    "front": dict(marker="*", color="tab:red", label="Pareto-front trial"),
    "endpoint": dict(marker="s", color="black", label="endpoint (seed trial)"),
    "uniform": dict(marker="D", color="tab:blue", label="uniform merge (seed trial)"),
}


def write_report(
    study: optuna.Study, rows: Sequence[Any], task_names: Sequence[str], out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``report.png`` (front or best-so-far history, and full accuracy of the front vs the
    endpoints) and ``report.md`` (the table and the study's numbers) into ``out_dir``.

    Values are shown in percent, as in the tables and the progress line.

    Returns:
        (png path, markdown path).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig = report_figure(study, rows, task_names)
    import matplotlib.pyplot as plt  # after report_figure chose the Agg backend

    png = out / "report.png"
    fig.savefig(png, dpi=110)
    plt.close(fig)

    items = sum(t.user_attrs.get("items_evaluated", 0) for t in complete)
    md = out / "report.md"
    md.write_text(
        f"# Study {study.study_name}\n\n"
        f"{len(complete)} complete trials, {items} items evaluated in trials.\n\n"
        f"{results_table(rows, task_names)}\n\n![report](report.png)\n",
        encoding="utf-8",
    )
    return png, md


def report_figure(study: optuna.Study, rows: Sequence[Any], task_names: Sequence[str]) -> Any:
    """The report's matplotlib figure (Agg backend): left, the search (two tasks: every trial's
    estimates coloured by trial number with a colourbar, the seeds marked, the Pareto front as a
    staircase; one task: the history and the best so far); right, accuracy on all items of the
    front vs the endpoints and the uniform merge, with a legend. Values in percent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig, (ax_front, ax_full) = plt.subplots(1, 2, figsize=(13, 5.2))
    if len(task_names) >= 2:
        _plot_search(fig, ax_front, study, complete, task_names)
    else:
        _plot_history(ax_front, complete, task_names[0])
    if len(task_names) >= 2:
        _plot_full(ax_full, rows, task_names)
    else:
        _plot_full_bars(ax_full, rows, task_names[0])
    ax_full.set_title("Front vs endpoints: accuracy on ALL items")
    fig.suptitle(f"optuna-merge3 study {study.study_name!r}: {len(complete)} complete trials")
    fig.tight_layout()
    return fig


def _pct_values(trials: Sequence[FrozenTrial], k: int) -> list[float]:
    return [100 * t.values[k] for t in trials]


def _mark_seeds(ax: Any, complete: Sequence[FrozenTrial], x: Any, y: Any) -> None:
    """Open markers on the generation-0 seeds (the endpoints, the uniform merge), at
    ``(x(trials), y(trials))``."""
    from optuna_merge3.study import SEED_KEY, seed_role

    for kind in ("endpoint", "uniform"):
        seeds = [t for t in complete if seed_role(t.user_attrs.get(SEED_KEY, "")) == kind]
        if seeds:
            style = _KIND_STYLE[kind]
            ax.scatter(x(seeds), y(seeds), s=70, marker=style["marker"], facecolors="none",
                       edgecolors=style["color"], label=style["label"], zorder=3)


def _plot_search(fig: Any, ax: Any, study: optuna.Study, complete: Sequence[FrozenTrial],
                 task_names: Sequence[str]) -> None:
    """Every trial's estimates (colour: trial number), the seeds marked, the front a staircase."""
    points = ax.scatter(_pct_values(complete, 0), _pct_values(complete, 1), s=18,
                        c=[t.number for t in complete], cmap="viridis", label="trial", zorder=2)
    fig.colorbar(points, ax=ax, label="trial number")
    _mark_seeds(ax, complete, lambda ts: _pct_values(ts, 0), lambda ts: _pct_values(ts, 1))
    front = sorted(study.best_trials, key=lambda t: (t.values[0], t.values[1]))
    # The front's attainment surface: between two front points the better-in-x one sets the
    # level, so the staircase steps at the point itself ("pre") when x is maximized.
    where = "pre" if study.directions[0] == optuna.study.StudyDirection.MAXIMIZE else "post"
    ax.step(_pct_values(front, 0), _pct_values(front, 1), where=where, color="tab:red",
            linewidth=1.5, label="Pareto front", zorder=1)
    ax.set_xlabel(f"{task_names[0]}: estimated accuracy (%)")
    ax.set_ylabel(f"{task_names[1]}: estimated accuracy (%)")
    ax.set_title("Search: MERGE^3 estimate of every trial")
    ax.legend(fontsize=8, loc="best")


def _plot_history(ax: Any, complete: Sequence[FrozenTrial], task_name: str) -> None:
    values = _pct_values(complete, 0)
    best = [max(values[: i + 1]) for i in range(len(values))]
    numbers = [t.number for t in complete]
    ax.plot(numbers, values, ".", label="trial")
    ax.step(numbers, best, "r-", where="post", label="best so far")
    _mark_seeds(ax, complete, lambda ts: [t.number for t in ts], lambda ts: _pct_values(ts, 0))
    ax.set_xlabel("trial number")
    ax.set_ylabel(f"{task_name}: estimated accuracy (%)")
    ax.set_title("Search history")
    ax.legend(fontsize=8)


def _plot_full(ax: Any, rows: Sequence[Any], task_names: Sequence[str]) -> None:
    shown: set[str] = set()
    labels: dict[tuple[float, float], list[str]] = {}  # rows at one point share one annotation
    seeds = {r.trial_number for r in rows if r.kind != "front" and r.trial_number is not None}
    for row in rows:
        if row.full_accuracy is None or (row.kind == "front" and row.trial_number in seeds):
            continue  # a front trial that is a seed is shown once, as its seed
        x, y = 100 * row.full_accuracy[0], 100 * row.full_accuracy[1]
        style = _KIND_STYLE[row.kind]
        ax.scatter(x, y, s=80, marker=style["marker"], color=style["color"],
                   label=None if row.kind in shown else style["label"].replace(" (seed trial)", ""))
        shown.add(row.kind)
        labels.setdefault((round(x, 6), round(y, 6)), []).append(row.label)
    for (x, y), names in labels.items():
        ax.annotate("\n".join(names), (x, y), fontsize=7, xytext=(5, 3),
                    textcoords="offset points", va="bottom")
    ax.set_xlabel(f"{task_names[0]}: accuracy on all items (%)")
    ax.set_ylabel(f"{task_names[1]}: accuracy on all items (%)")
    ax.margins(0.15)
    ax.legend(fontsize=8, loc="best")


def _plot_full_bars(ax: Any, rows: Sequence[Any], task_name: str) -> None:
    shown = [r for r in rows if r.full_accuracy is not None]
    colors = [_KIND_STYLE[r.kind]["color"] for r in shown]
    ax.barh([r.label for r in shown], [100 * r.full_accuracy[0] for r in shown], color=colors)
    for kind, style in _KIND_STYLE.items():
        if any(r.kind == kind for r in shown):
            label = "best trial" if kind == "front" else style["label"].replace(" (seed trial)", "")
            ax.barh([], [], color=style["color"], label=label)
    ax.set_xlabel(f"{task_name}: accuracy on all items (%)")
    ax.legend(fontsize=8)


def study_note(config: Any, setup: Any = None, cli_args: str = "CONFIG") -> str:
    """The study's markdown note for optuna-dashboard: what is searched and how, what each
    trial's attributes mean, the commands that reach this study, and the config itself.

    Args:
        config: the :class:`~optuna_merge3.config.StudyConfig`.
        setup: the Estimate output (:class:`~optuna_merge3.pipeline.FitnessSetup`), when known:
            adds each task's size and the endpoints' accuracies.
        cli_args: ``CONFIG [--storage URL]`` for the commands shown.
    """
    merge, sampler = config.merge, config.sampler
    endpoints = ", ".join(f"`{n}`" for n in merge.endpoints)
    base = f" on base `{Path(merge.base).name}`" if merge.base else ""
    sizes = {t.config.name: t for t in setup.tasks} if setup is not None else {}
    lines = [
        f"# {config.name}",
        "",
        f"MERGE^3 evolutionary merging: **{merge.method}** of {endpoints}{base}, searched "
        f"by **{sampler.name}** (population {sampler.population_size}) for "
        f"**{config.n_trials}** complete trials, seed {config.seed}.",
        "",
        "## Objectives: one per task, the MERGE^3 estimate of the accuracy on all its items",
        "",
        "| task | direction | estimator | items evaluated per trial | items in the task | "
        "endpoints' accuracy (all items) |",
        "|---|---|---|---|---|---|",
    ]
    for task in config.tasks:
        known = sizes.get(task.name)
        total = str(len(known.task.items)) if known else ""
        acc = ", ".join(
            f"{name} {100 * a:.1f}%"
            for name, a in zip(setup.endpoint_names, known.endpoint_correct.mean(axis=1),
                               strict=True)
        ) if known else ""
        lines.append(f"| {task.name} | {task.direction} | {task.estimator} | {task.n_items} | "
                     f"{total} | {acc} |")
    lines += [
        "",
        "## Trials",
        "",
        "- user attribute `role`: `endpoint` and `uniform` are the generation-0 seeds (each "
        "endpoint as it is, and the uniform merge), `search` a sampled trial, `retry` a killed "
        "worker's trial run again;",
        "- `estimate/<task>` is the objective value, `subset_accuracy/<task>` the plain accuracy "
        "on the evaluated items, `lambda/<task>` the fitted merge weights; the artifact "
        "`answers.json` holds each answer;",
        "- the study artifact `estimate.json` holds the Estimate step: subset item ids, IRT fit "
        "statistics, endpoint abilities and accuracies.",
        "",
        "## Commands",
        "",
        "```sh",
        f"optuna-merge3 best {cli_args}              # front, endpoints, uniform merge",
        f"optuna-merge3 export {cli_args} TRIAL --out merged/",
        f"optuna-merge3 run {cli_args} --n-trials N  # resume, up to N complete trials",
        "```",
        "",
        "## Config",
        "",
        "```toml",
        (config.text or str(config.raw)).strip(),
        "```",
        "",
    ]
    return "\n".join(lines)
