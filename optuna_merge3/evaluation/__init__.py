"""Evaluation: tasks, batched greedy generation, scoring, language id, correctness cache.

Importing this package is cheap: torch / transformers / fasttext load inside the functions.
"""

from ._cache import CorrectnessCache, model_fingerprint, task_fingerprint
from ._conventions import CONVENTIONS, Convention
from ._evaluate import EvalResult, evaluate, render_prompt
from ._generate import generate
from ._langid import detect_language, is_language, strip_for_langid
from ._lm_eval import LM_EVAL_BACKENDS, load_lm_eval_task
from ._lm_eval_run import evaluate_lm_eval
from ._numbers import read_number, read_numbers
from ._scoring import SCORERS, extract_choice, extract_number, score_answer
from ._task import (
    GENERATION_DEFAULTS,
    GenerationConfig,
    Task,
    TaskItem,
    load_hf_task,
    load_task,
    task_from_dataset,
)
from ._transfer import negative_transfer_rate

__all__ = [
    "CONVENTIONS",
    "GENERATION_DEFAULTS",
    "LM_EVAL_BACKENDS",
    "SCORERS",
    "Convention",
    "CorrectnessCache",
    "EvalResult",
    "GenerationConfig",
    "Task",
    "TaskItem",
    "detect_language",
    "evaluate",
    "evaluate_lm_eval",
    "extract_choice",
    "extract_number",
    "generate",
    "is_language",
    "load_hf_task",
    "load_lm_eval_task",
    "load_task",
    "model_fingerprint",
    "negative_transfer_rate",
    "read_number",
    "read_numbers",
    "render_prompt",
    "score_answer",
    "strip_for_langid",
    "task_from_dataset",
    "task_fingerprint",
]
