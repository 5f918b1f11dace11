"""Tasks: items, generation config and the JSONL / CSV loader."""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_logger = logging.getLogger(__name__)

_ITEM_FIELDS = ("id", "prompt", "answer", "choices", "language")
_CONFIG_KEYS = (
    "name",
    "description",
    "scorer",
    "scorer_options",
    "require_regex",
    "max_new_tokens",
    "stop",
    "prompt_template",
    "use_chat_template",
    "language",
    "answer_language",
    "undecidable_language",
)


@dataclass(frozen=True)
class TaskItem:
    """One item: ``answer`` is the reference; ``choices`` for multiple choice; ``language`` (ISO
    639-1, e.g. "it") makes the scorer also require the answer to be in that language."""

    id: str
    prompt: str
    answer: str
    choices: tuple[str, ...] | None = None
    language: str | None = None


@dataclass(frozen=True)
class GenerationConfig:
    """Greedy decoding settings. ``stop``: strings that end an answer (a stop string that is a
    special token of the tokenizer, e.g. "<eos>", also ends decoding of that row)."""

    max_new_tokens: int = 32
    stop: tuple[str, ...] = ()


# End-of-turn markers of common chat templates (Llama 2 / Mistral, ChatML / Qwen, Llama 3,
# GPT-2 family): a chat endpoint that ends its answer with one stops there. Those that are special
# tokens of the tokenizer also end decoding of the row.
CHAT_STOPS = ("</s>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>")

GENERATION_DEFAULTS: dict[str, GenerationConfig] = {
    # chain of thought (GSM8K-style: reasoning, then the number): lm-eval's gsm8k-cot budget;
    # "Question:" ends a base model's continuation into a next few-shot question
    "number": GenerationConfig(max_new_tokens=256, stop=("Question:", *CHAT_STOPS)),
    # "The answer is (B)" or a short justification first
    "choice": GenerationConfig(max_new_tokens=32, stop=CHAT_STOPS),
    "exact": GenerationConfig(max_new_tokens=32, stop=CHAT_STOPS),
    "exact_first_word": GenerationConfig(max_new_tokens=16, stop=CHAT_STOPS),
    "loglik_choice": GenerationConfig(max_new_tokens=1),  # scored without generation
}
"""Scorer -> generation used when the task config sets no ``max_new_tokens`` / ``stop``
(each key falls back on its own; a study's ``[[tasks]] max_new_tokens`` / ``stop`` override both)."""


@dataclass
class Task:
    """A named list of items plus how to prompt and score them.

    ``prompt_template`` is formatted with ``prompt=item.prompt`` (few-shot examples go in the
    template); ``use_chat_template`` wraps the result in the tokenizer's chat template when it has
    one. ``scorer`` names an entry of :data:`SCORERS`; ``scorer_options`` are its keyword options.
    ``answer_language`` (ISO 639-1) sets how answers of items without a ``language`` are read
    ("1.000" is a thousand in "it") without a fastText check; ``undecidable_language`` ("accept"
    or "reject") judges an item-language answer with too little prose to identify.
    """

    name: str
    items: list[TaskItem]
    scorer: str = "exact"
    scorer_options: dict[str, Any] = field(default_factory=dict)
    require_regex: str | None = None
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    prompt_template: str = "{prompt}"
    use_chat_template: bool = False
    answer_language: str | None = None
    undecidable_language: str = "accept"
    meta: dict[str, Any] = field(default_factory=dict)

    def score(self, answer: str, item: TaskItem, language_check: Any = None) -> bool:
        """Whether ``answer`` is correct for ``item`` under every scoring option of this task."""
        from ._scoring import score_answer

        return score_answer(
            answer,
            item,
            self.scorer,
            self.scorer_options,
            self.require_regex,
            language_check,
            answer_language=self.answer_language,
            undecidable_language=self.undecidable_language,
        )

    def scoring_config(self) -> dict[str, Any]:
        """Everything besides items and weights that changes correctness (for fingerprints)."""
        from ._scoring import RULES_VERSION

        return {
            "rules_version": RULES_VERSION,
            "answer_language": self.answer_language,
            "undecidable_language": self.undecidable_language,
            "scorer": self.scorer,
            "scorer_options": dict(sorted(self.scorer_options.items())),
            "require_regex": self.require_regex,
            "max_new_tokens": self.generation.max_new_tokens,
            "stop": list(self.generation.stop),
            "prompt_template": self.prompt_template,
            "use_chat_template": self.use_chat_template,
            # an lm-eval task's filters, metric and generation kwargs (absent otherwise, so the
            # fingerprints of other tasks are unchanged)
            **({"lm_eval": self.meta["lm_eval_config"]} if "lm_eval_config" in self.meta else {}),
        }


def _item_from_row(
    row: dict[str, Any], where: str, default_language: str | None, from_csv: bool = False
) -> TaskItem:
    for key in ("id", "prompt", "answer"):
        if key not in row or row[key] is None or row[key] == "":
            raise ValueError(f"{where}: missing required field {key!r}")
    unknown = set(row) - set(_ITEM_FIELDS)
    if unknown:
        _logger.debug("%s: ignoring fields %s", where, sorted(unknown))
    choices = row.get("choices")
    if from_csv and isinstance(choices, str):  # CSV: a JSON list or "|"-separated
        choices = choices.strip()
        if choices == "":
            choices = None
        elif choices.startswith("["):
            try:
                choices = json.loads(choices)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: field 'choices' is not a JSON list: {exc}") from None
        else:
            choices = choices.split("|")
    if choices is not None and (
        not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
    ):
        raise ValueError(f"{where}: field 'choices' must be a list of strings")
    for key in ("prompt",):
        if not isinstance(row[key], str):
            raise ValueError(f"{where}: field {key!r} must be a string")
    language = row.get("language") or default_language
    return TaskItem(
        id=str(row["id"]),
        prompt=row["prompt"],
        answer=str(row["answer"]),
        choices=tuple(choices) if choices else None,
        language=language or None,
    )


def load_task(path: str | Path, config: str | Path | dict[str, Any] | None = None) -> Task:
    """Load a task from a JSONL or CSV file.

    Schema (one item per line / row): ``id`` (str, unique), ``prompt`` (str), ``answer`` (str or
    number), optional ``choices`` (list of str; in CSV a JSON list or "a|b|c"), optional
    ``language`` (ISO 639-1). The task config is ``config`` or, when omitted, the sidecar file
    ``<path without suffix>.json`` if present (keys: name, scorer, scorer_options, require_regex,
    max_new_tokens, stop, prompt_template, use_chat_template, language = default item language,
    answer_language = how answers are read without a fastText check, undecidable_language).

    Raises:
        ValueError: naming the file, line and field of malformed input.
    """
    path = Path(path)
    if isinstance(config, (str, Path)):
        config = json.loads(Path(config).read_text("utf-8"))
    elif config is None:
        sidecar = path.with_suffix(".json")
        config = json.loads(sidecar.read_text("utf-8")) if sidecar.is_file() else {}
    _check_config(config, str(path))
    default_language = config.get("language")
    items: list[TaskItem] = []
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                where = f"{path}:{lineno}"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
                if not isinstance(row, dict):
                    raise ValueError(f"{where}: expected a JSON object")
                items.append(_item_from_row(row, where, default_language))
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as fh:
            for lineno, row in enumerate(csv.DictReader(fh), start=2):
                items.append(_item_from_row(dict(row), f"{path}:{lineno}", default_language, True))
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r}; valid: ['.jsonl', '.csv']")
    return _task_from_items(items, config, str(path), default_name=path.stem)


def task_from_dataset(
    dataset: Any,
    config: dict[str, Any] | None = None,
    *,
    columns: dict[str, str] | None = None,
    name: str = "dataset",
) -> Task:
    """Build a task from a Hugging Face ``datasets.Dataset`` (or any iterable of dict rows).

    ``columns`` maps this project's item fields to the dataset's column names, e.g.
    ``{"prompt": "question", "answer": "answer"}`` for GSM8K; a field without a column keeps its
    own name, and a missing ``id`` column becomes the row index. ``config`` takes the same keys
    as a task sidecar file (see :func:`load_task`).

    Raises:
        ValueError: naming the row and field of malformed input.
    """
    config = dict(config or {})
    _check_config(config, name)
    columns = dict(columns or {})
    unknown = set(columns) - set(_ITEM_FIELDS)
    if unknown:
        raise ValueError(f"{name}: unknown item fields in columns {sorted(unknown)}")
    items = []
    for index, row in enumerate(dataset):
        mapped = {field_: row.get(columns.get(field_, field_)) for field_ in _ITEM_FIELDS}
        if mapped["id"] is None and "id" not in columns:
            mapped["id"] = str(index)
        mapped = {k: v for k, v in mapped.items() if v is not None}
        items.append(_item_from_row(mapped, f"{name}: row {index}", config.get("language")))
    return _task_from_items(items, config, name, default_name=name)


def load_hf_task(
    path: str,
    split: str,
    config: dict[str, Any] | None = None,
    *,
    subset: str | None = None,
    columns: dict[str, str] | None = None,
    **load_kwargs: Any,
) -> Task:
    """Load a task with ``datasets.load_dataset(path, subset, split=split)`` (optional package).

    Works offline for local files (``path="json", data_files=...``) and cached hub datasets;
    this project never downloads data at run time by itself.
    """
    try:
        import datasets
    except ImportError as exc:  # optional dependency
        raise ImportError(
            "load_hf_task needs the `datasets` package: pip install 'optuna-merge3[datasets]'"
        ) from exc
    dataset = datasets.load_dataset(path, subset, split=split, **load_kwargs)
    label = f"{path}{'/' + subset if subset else ''}[{split}]"
    return task_from_dataset(dataset, config, columns=columns, name=label)


def _check_config(config: dict[str, Any], where: str) -> None:
    unknown = set(config) - set(_CONFIG_KEYS)
    if unknown:
        raise ValueError(
            f"{where}: unknown task config keys {sorted(unknown)}; valid: {list(_CONFIG_KEYS)}"
        )


def _task_from_items(
    items: list[TaskItem], config: dict[str, Any], where: str, default_name: str
) -> Task:
    seen: set[str] = set()
    for item in items:
        if item.id in seen:
            raise ValueError(f"{where}: duplicate id {item.id!r} (field 'id')")
        seen.add(item.id)
    from ._langid import UNDECIDABLE_POLICIES
    from ._scoring import check_scorer_options

    scorer = config.get("scorer", "exact")
    scorer_options = config.get("scorer_options", {})
    if not isinstance(scorer_options, dict):
        raise ValueError(f"{where}: 'scorer_options' must be a mapping, got {scorer_options!r}")
    check_scorer_options(scorer, scorer_options, where)
    undecidable = config.get("undecidable_language", "accept")
    if undecidable not in UNDECIDABLE_POLICIES:
        raise ValueError(
            f"{where}: unknown undecidable_language {undecidable!r}; "
            f"valid: {list(UNDECIDABLE_POLICIES)}"
        )
    defaults = GENERATION_DEFAULTS.get(scorer, GenerationConfig())
    return Task(
        name=config.get("name", default_name),
        items=items,
        scorer=scorer,
        scorer_options=dict(scorer_options),
        require_regex=config.get("require_regex"),
        generation=GenerationConfig(
            max_new_tokens=int(config.get("max_new_tokens", defaults.max_new_tokens)),
            stop=tuple(config.get("stop", defaults.stop)),
        ),
        prompt_template=config.get("prompt_template", "{prompt}"),
        use_chat_template=bool(config.get("use_chat_template", False)),
        answer_language=config.get("answer_language") or config.get("language"),
        undecidable_language=undecidable,
        meta={k: config[k] for k in ("description",) if k in config},
    )
