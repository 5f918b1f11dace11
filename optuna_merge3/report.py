"""Study reports: a results table (markdown) and a PNG of the front and the search history.

Plots use matplotlib's Agg backend, so they work offline and headless (Optuna's plotly figures
need kaleido + Chrome to become PNGs).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

__all__ = ["results_table", "write_report"]


def results_table(rows: Sequence[Any], task_names: Sequence[str]) -> str:
    """Markdown table of :class:`~optuna_merge3.runner.TrialSummary` rows.

    ``estimate`` columns are what the search saw (MERGE^3 fitness from the subset), ``full``
    columns the accuracy on all items of the task.
    """
    head = ["model"] + [f"{t} est." for t in task_names] + [f"{t} full" for t in task_names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        est = row.estimates or [None] * len(task_names)
        full = row.full_accuracy or [None] * len(task_names)
        cells = [row.label] + [_pct(v) for v in est] + [_pct(v) for v in full]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}"


def write_report(
    study: optuna.Study, rows: Sequence[Any], task_names: Sequence[str], out_dir: str | Path
) -> tuple[Path, Path]:
    """Write ``report.png`` (front or best-so-far history, and full accuracy of the front vs the
    endpoints) and ``report.md`` (the table and the study's numbers) into ``out_dir``.

    Returns:
        (png path, markdown path).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    fig, (ax_front, ax_full) = plt.subplots(1, 2, figsize=(12, 5))
    if len(task_names) >= 2:
        xs = [t.values[0] for t in complete]
        ys = [t.values[1] for t in complete]
        ax_front.scatter(xs, ys, s=18, c=[t.number for t in complete], cmap="viridis",
                         label="trials (colour = trial number)")
        front = sorted(study.best_trials, key=lambda t: t.values[0])
        ax_front.plot([t.values[0] for t in front], [t.values[1] for t in front], "r.-",
                      label="Pareto front")
        ax_front.set_xlabel(f"{task_names[0]} (estimated)")
        ax_front.set_ylabel(f"{task_names[1]} (estimated)")
        ax_front.set_title("Search: estimated fitness of every trial")
    else:
        values = [t.values[0] for t in complete]
        best = [max(values[: i + 1]) for i in range(len(values))]
        ax_front.plot(values, ".", label="trial")
        ax_front.plot(best, "r-", label="best so far")
        ax_front.set_xlabel("trial")
        ax_front.set_ylabel(f"{task_names[0]} (estimated)")
        ax_front.set_title("Search history")
    ax_front.legend(fontsize=8)
    if len(task_names) >= 2:
        for row in rows:
            if row.full_accuracy is None:
                continue
            marker = "r*" if row.label.startswith("trial") else "ks"
            ax_full.plot(row.full_accuracy[0], row.full_accuracy[1], marker, markersize=9)
            ax_full.annotate(row.label, (row.full_accuracy[0], row.full_accuracy[1]),
                             fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax_full.set_xlabel(f"{task_names[0]} (accuracy on all items)")
        ax_full.set_ylabel(f"{task_names[1]} (accuracy on all items)")
    else:
        labels = [r.label for r in rows if r.full_accuracy is not None]
        ax_full.barh(labels, [r.full_accuracy[0] for r in rows if r.full_accuracy is not None])
        ax_full.set_xlabel(f"{task_names[0]} (accuracy on all items)")
    ax_full.set_title("Front vs endpoints: accuracy on ALL items")
    fig.suptitle(f"optuna-merge3 study {study.study_name!r}: {len(complete)} complete trials")
    fig.tight_layout()
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
