"""``build_reference``: a reference population for a task that has none.

Evaluates, on every item of one task of a study, the study's base and endpoints, any other local
checkpoints, and K random merges drawn uniformly from the study's own search space (the region
the search will explore, so the item parameters are fitted where they are used). Each model's
correctness goes through the study's correctness cache, so an interrupted build resumes where
it stopped and the Estimate step later finds the endpoints already evaluated.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._matrix import write_responses

__all__ = ["BuildResult", "build_reference", "random_genotypes"]

_logger = logging.getLogger(__name__)

#: ``on_model(done, total, name, cached)`` after each model (the CLI drives a progress bar).
OnModel = Callable[[int, int, str, bool], None]


@dataclass
class BuildResult:
    """The built population and where it went."""

    models: list[str]
    item_ids: list[str]
    values: np.ndarray  # (models, items) 0/1
    path: Path
    n_evaluated: int  # models evaluated now (the others came from the cache)
    seconds: float


def random_genotypes(distributions: dict[str, Any], k: int, seed: int) -> list[dict[str, float]]:
    """``k`` genotypes drawn uniformly within each gene's bounds (seeded, order-stable)."""
    rng = np.random.default_rng([seed, 13])  # its own stream: not the study's sampler seed
    return [{name: float(rng.uniform(d.low, d.high)) for name, d in distributions.items()}
            for _ in range(k)]


def _label(i: int, genotype: dict[str, float]) -> str:
    return f"random_merge_{i:03d}[" + " ".join(f"{k}={v:.3f}" for k, v in genotype.items()) + "]"


def build_reference(config: Any, task_name: str, *, models: Sequence[str | Path] = (),
                    random_merges: int = 0, seed: int = 0, out: str | Path | None = None,
                    overwrite: bool = False, runner: Any = None,
                    on_model: OnModel | None = None) -> BuildResult:
    """Evaluate the population on all items of task ``task_name`` and write its responses CSV.

    Args:
        config: the study's :class:`~optuna_merge3.config.StudyConfig`.
        task_name: one of its tasks.
        models: extra local checkpoints (Hugging Face folders) to include.
        random_merges: K random merges of the study's endpoints in its search space.
        seed: seed of the random merges (and of their DARE / DELLA masks).
        out: the CSV to write (default: the task's ``reference`` path, else
            ``<out_dir>/reference/<task>_responses.csv.gz``).
        overwrite: replace an existing file (else refused before anything is evaluated).
        runner: a :class:`~optuna_merge3.runner.StudyRunner` to reuse (its merger and live model).
        on_model: progress callback.

    Raises:
        ValueError: an unknown task, a checkpoint folder that does not exist, two members with
            the same name, K < 0, or an existing output without ``overwrite``.
    """
    from optuna_merge3 import evaluation
    from optuna_merge3.pipeline import correctness_cache, load_task
    from optuna_merge3.runner import StudyRunner

    started = time.perf_counter()
    names = [t.name for t in config.tasks]
    if task_name not in names:
        raise ValueError(f"unknown task {task_name!r}; the config has {names}")
    if random_merges < 0:
        raise ValueError(f"--random-merges must be >= 0, got {random_merges}")
    task_config = config.tasks[names.index(task_name)]
    for folder in models:
        if not (Path(folder) / "config.json").is_file():
            raise ValueError(f"{folder}: not a Hugging Face model folder (no config.json)")
    path = Path(out) if out is not None else (
        task_config.reference or config.out_dir / "reference" / f"{task_name}_responses.csv.gz")
    if path.exists() and not overwrite:
        raise ValueError(f"{path} exists; pass --out elsewhere, or --overwrite to replace it "
                         "(models already evaluated come from the cache)")
    runner = runner or StudyRunner(config)
    merger, model, tokenizer = runner.merger, runner.model, runner.tokenizer
    # the study's own loading: a task file or an lm-eval task, with the entry's overrides
    task = load_task(task_config, config.evaluation.lm_eval_backend, tokenizer)
    members = _members(merger, runner.space, models, random_merges, seed,
                       config.evaluation.quantization)
    cache = correctness_cache(config)
    batch_size = config.evaluation.batch_size
    rows, evaluated = [], 0
    for done, (name, write) in enumerate(members, start=1):
        live, tok = write(model, tokenizer)
        fingerprint = evaluation.model_fingerprint(live)
        correct = cache.get(fingerprint, task)
        cached = correct is not None
        if not cached:
            correct = evaluation.evaluate(live, tok, task, batch_size=batch_size).correct
            cache.put(fingerprint, task, correct)
            evaluated += 1
        rows.append(np.asarray(correct, dtype=float))
        if on_model is not None:
            on_model(done, len(members), name, cached)
    values = np.stack(rows)
    item_ids = [item.id for item in task.items]
    write_responses(path, [m[0] for m in members], item_ids, values)
    _logger.info("reference for %s: %d models (%d evaluated) -> %s", task_name, len(members),
                 evaluated, path)
    return BuildResult([m[0] for m in members], item_ids, values, path, evaluated,
                       time.perf_counter() - started)


def _members(merger: Any, space: Any, folders: Sequence[str | Path], k: int, seed: int,
             quantization: str | None) -> list[tuple[str, Callable[[Any, Any], tuple[Any, Any]]]]:
    """(name, write) per population member; ``write(model, tokenizer)`` puts the member's
    weights into the live model (or loads a checkpoint) and returns what to evaluate."""

    def into_live(write: Callable[[Any], Any]) -> Callable:
        def member(model: Any, tok: Any) -> tuple[Any, Any]:
            write(model)  # the member's weights, in place in the live model
            return model, tok

        return member

    members: list[tuple[str, Callable]] = []
    if merger.base_path is not None:
        members.append(("base", into_live(merger.write_base)))
    members += [(name, into_live(lambda m, n=name: merger.write_endpoint(n, m)))
                for name in space.endpoints]
    members += [(Path(folder).name, _checkpoint(folder, merger, quantization)) for folder in folders]
    genotypes = random_genotypes(space.distributions(), k, seed)
    members += [(_label(i, g), into_live(lambda m, g=g, i=i: merger.apply(g, m, seed=seed + i)))
                for i, g in enumerate(genotypes)]
    seen: dict[str, None] = {}
    for name, _ in members:
        if name in seen:
            raise ValueError(f"two population members are named {name!r}; rename a folder")
        seen[name] = None
    return members


def _checkpoint(folder: str | Path, merger: Any, quantization: str | None) -> Callable:
    """Load a local checkpoint as its own model (its tokenizer if it ships one)."""

    def write(model: Any, tok: Any) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        from optuna_merge3.merging._quant import load_causal_lm

        own = load_causal_lm(folder, device=merger.device, dtype=merger.dtype,
                             quantization=quantization)
        own.eval()
        has_tokenizer = any((Path(folder) / f).is_file()
                            for f in ("tokenizer.json", "tokenizer_config.json"))
        return own, AutoTokenizer.from_pretrained(str(folder)) if has_tokenizer else tok

    return write
