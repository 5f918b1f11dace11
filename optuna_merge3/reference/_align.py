"""Which reference item answers for which task item: by id, or by position (translations)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["ALIGNMENTS", "align_items"]

#: "id": the reference's item ids must include the task's; "position": task item k reuses
#: reference item k (a translated task on a source-language population, as Mergenetic reuses
#: tinyBenchmarks' English item parameters for its translated ARC / GSM8K rows).
ALIGNMENTS = ("id", "position")


def align_items(source_ids: Sequence[str], task_ids: Sequence[str], align: str = "id", *,
                source: str = "the reference", task: str = "the task") -> np.ndarray:
    """Indices into ``source_ids`` giving each task item its reference column / parameters.

    Raises:
        ValueError: an unknown ``align``; with "id" task items the source lacks; with
            "position" a different number of items (a misaligned translation would silently
            give every item another item's parameters).
    """
    if align not in ALIGNMENTS:
        raise ValueError(f"align = {align!r} is not one of {list(ALIGNMENTS)}")
    if align == "position":
        if len(source_ids) != len(task_ids):
            raise ValueError(
                f"{source}: align = 'position' needs as many items as {task}: it has "
                f"{len(source_ids)}, the task {len(task_ids)}"
            )
        return np.arange(len(task_ids))
    position = {item_id: k for k, item_id in enumerate(source_ids)}
    missing = [i for i in task_ids if i not in position]
    if missing:
        raise ValueError(
            f"{source}: no reference responses for {len(missing)} of {len(task_ids)} item(s) "
            f"of {task}, e.g. {missing[:3]}; the reference CSV header must list the task's "
            "item ids (or set align = 'position' for a translation of the reference's task)"
        )
    return np.array([position[i] for i in task_ids], dtype=int)
