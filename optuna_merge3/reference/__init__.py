"""Reference populations: the models x items correctness that IRT item parameters are fit on.

Import public per-item results (lm-eval ``--log_samples``, Open LLM Leaderboard details,
metabench CSVs, tinyBenchmarks matrices) with :func:`import_responses`, or build a population
for a task that has none with :func:`build_reference`; both write the project's responses CSV
(:func:`write_responses`, read back by ``pipeline.load_reference_responses``).
:func:`irt_fit_report` says whether a population is large enough for IRT to help.
"""

from __future__ import annotations

from ._align import ALIGNMENTS, align_items
from ._build import BuildResult, build_reference, random_genotypes
from ._fit_report import FitReport, irt_fit_report
from ._import import FORMATS, import_responses, parse_file_spec
from ._matrix import ModelTable, ResponseMatrix, assemble, write_responses

__all__ = [
    "ALIGNMENTS",
    "FORMATS",
    "BuildResult",
    "FitReport",
    "ModelTable",
    "ResponseMatrix",
    "align_items",
    "assemble",
    "build_reference",
    "import_responses",
    "irt_fit_report",
    "parse_file_spec",
    "random_genotypes",
    "write_responses",
]
