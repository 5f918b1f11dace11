"""Loading and splitting of the real Open LLM Leaderboard responses (metabench export).

Shared by ``benchmarks/estimators_leaderboard.py`` and ``benchmarks/irt_fit_speed.py``.
The data live outside the repository in ``../shared/data/leaderboard/metabench`` (see its README:
CC BY-NC-SA, benchmark data only, never copied into the package). Only the standard library and
numpy are used to read it.
"""

from __future__ import annotations

import csv
import gzip
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "leaderboard" / "metabench"

#: Benchmark name -> metabench tags joined on the model name (v1 and v2 hold disjoint items).
BENCHMARK_TAGS: dict[str, tuple[str, ...]] = {
    "arc": ("arc_v1", "arc_v2"),
    "gsm8k": ("gsm8k_v1", "gsm8k_v2"),
    "mmlu": ("mmlu_v1",),
    "truthfulqa": ("truthfulqa_v1",),
    "winogrande": ("winogrande_v1",),
}

#: Merged models of the leaderboard README with their mergekit endpoints.
MERGES: dict[str, tuple[str, ...]] = {
    "FuseAI/FuseChat-7B-Slerp": ("FuseAI/OpenChat-3.5-7B-Mixtral", "FuseAI/OpenChat-3.5-7B-Solar"),
    "FuseAI/FuseChat-7B-TA": ("FuseAI/OpenChat-3.5-7B-Mixtral", "FuseAI/OpenChat-3.5-7B-Solar"),
    "superlazycoder/NeuralPipe-7B-slerp": (
        "OpenPipe/mistral-ft-optimized-1218",
        "mlabonne/NeuralHermes-2.5-Mistral-7B",
    ),
    "chlee10/T3Q-Merge-Mistral7B": ("liminerity/M7-7b", "yam-peleg/Experiment26-7B"),
    "PracticeLLM/SOLAR-tail-10.7B-Merge-v1.0": (
        "upstage/SOLAR-10.7B-v1.0",
        "Yhyu13/LMCocktail-10.7B-v1",
    ),
}


@dataclass
class Benchmark:
    """Responses of one benchmark, v1/v2 tags outer-joined on the model name.

    Attributes:
        name: benchmark name (key of ``BENCHMARK_TAGS``).
        models: model ids, one per row of ``responses``.
        item_ids: ``"<tag>:<item>"`` per column.
        responses: (n_models, n_items) float array of 0/1, NaN where a model lacks a tag.
        scores: model id -> full-benchmark leaderboard score in percent (from the first tag).
    """

    name: str
    models: list[str]
    item_ids: list[str]
    responses: np.ndarray
    scores: dict[str, float] = field(default_factory=dict)

    @property
    def complete(self) -> np.ndarray:
        """Boolean mask of models with an answer on every item."""
        return ~np.isnan(self.responses).any(axis=1)

    def row(self, model: str) -> np.ndarray:
        """Response vector of one model (NaN where missing)."""
        return self.responses[self.models.index(model)]


def data_available() -> bool:
    """True when the shared leaderboard data directory exists."""
    return (DATA_DIR / "SUMMARY.csv").exists()


def _read_responses(tag: str) -> tuple[list[str], list[str], np.ndarray]:
    with gzip.open(DATA_DIR / f"{tag}_responses_train.csv.gz", "rt", newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        models, rows = [], []
        for rec in reader:
            models.append(rec[0])
            rows.append([float(v) if v not in ("", "NA") else np.nan for v in rec[1:]])
    return models, [f"{tag}:{h}" for h in header[1:]], np.asarray(rows, dtype=float)


def _read_scores(tag: str) -> dict[str, float]:
    out: dict[str, float] = {}
    with gzip.open(DATA_DIR / f"{tag}_scores.csv.gz", "rt", newline="") as fh:
        for rec in csv.DictReader(fh):
            # Each model appears twice (two metabench theta sources); the score is identical.
            out.setdefault(rec["model"], float(rec["score"]))
    return out


def load_benchmark(name: str) -> Benchmark:
    """Load one benchmark, joining its tags on the model name (outer join, NaN if absent).

    Raises:
        ValueError: unknown benchmark name.
        FileNotFoundError: the shared data directory is absent.
    """
    if name not in BENCHMARK_TAGS:
        raise ValueError(f"unknown benchmark {name!r}; valid: {sorted(BENCHMARK_TAGS)}")
    parts = [_read_responses(tag) for tag in BENCHMARK_TAGS[name]]
    models = sorted(set().union(*(set(p[0]) for p in parts)))
    pos = {m: i for i, m in enumerate(models)}
    blocks = []
    item_ids: list[str] = []
    for p_models, p_items, p_resp in parts:
        block = np.full((len(models), len(p_items)), np.nan)
        block[[pos[m] for m in p_models]] = p_resp
        blocks.append(block)
        item_ids += p_items
    scores = _read_scores(BENCHMARK_TAGS[name][0])
    return Benchmark(name, models, item_ids, np.hstack(blocks), scores)


@dataclass
class Split:
    """Seeded split of a benchmark's models.

    Attributes:
        train: row indices used to fit the IRT item parameters (complete models only, merges
            excluded).
        test: held-out complete models for naive / p-IRT / gp-IRT.
        merges: merge id -> (row index, endpoint row indices) for merges usable on this
            benchmark (merge answered every item, every endpoint answered at least one item).
        skipped: merge id -> reason it is not usable here.
    """

    train: np.ndarray
    test: np.ndarray
    merges: dict[str, tuple[int, list[int]]]
    skipped: dict[str, str]


def split_models(bench: Benchmark, n_train: int | None, n_test: int, seed: int) -> Split:
    """Split complete models into train / held-out test; merges never enter the training split.

    ``n_train=None`` trains on every eligible complete model that is not held out.

    Endpoints may be in the training split (their abilities are re-fitted from their own answers
    by the benchmark anyway); merged models are excluded from both train and test.
    """
    rng = np.random.default_rng(seed)
    merges: dict[str, tuple[int, list[int]]] = {}
    skipped: dict[str, str] = {}
    merge_rows = set()
    for merge, endpoints in MERGES.items():
        if merge not in bench.models:
            skipped[merge] = "merge has no responses"
            continue
        row = bench.models.index(merge)
        merge_rows.add(row)
        missing = [e for e in endpoints if e not in bench.models]
        if missing:
            skipped[merge] = f"endpoint(s) without responses: {', '.join(missing)}"
        elif not bench.complete[row]:
            skipped[merge] = "merge answered only part of the items (one tag missing)"
        else:
            merges[merge] = (row, [bench.models.index(e) for e in endpoints])
    eligible = np.array([i for i in np.flatnonzero(bench.complete) if i not in merge_rows])
    perm = rng.permutation(eligible)
    test = np.sort(perm[:n_test])
    train = np.sort(perm[n_test:] if n_train is None else perm[n_test : n_test + n_train])
    return Split(train, test, merges, skipped)
