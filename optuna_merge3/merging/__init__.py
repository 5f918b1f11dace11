"""Merging: MergeKit-exact merge methods, the search space, and the in-memory merger.

* :data:`MERGE_METHODS` / :func:`merge_tensor`: pure tensor math per method (MergeKit 0.1.5).
* :class:`MergeSpace`: genotype <-> Optuna distributions (stable names), per-tensor resolution
  of blocks / filters, MergeKit YAML.
* :class:`InMemoryMerger`: endpoints (dense or PEFT LoRA) read from safetensors tensor by tensor,
  merged on the device and written into a live full-precision or bitsandbytes nf4 model; export.
* :func:`counter_bernoulli` / :func:`mask_key`: the hash-based DARE / DELLA masks of
  ``rng="counter"`` (the default) and the hook that hands them to MergeKit.

This package is torch by nature; transformers / peft / bitsandbytes load where they are used.
"""

from ._export import export_merge, mergekit_config, mergekit_yaml
from ._gradient import gradient_value, layer_t
from ._masks import counter_bernoulli, mask_key
from ._merger import InMemoryMerger
from ._methods import MERGE_METHODS, MethodSpec, merge_tensor
from ._quant import MODEL_DTYPES, QUANTIZATIONS
from ._space import MergeSpace

__all__ = [
    "MERGE_METHODS",
    "MODEL_DTYPES",
    "QUANTIZATIONS",
    "InMemoryMerger",
    "MergeSpace",
    "MethodSpec",
    "counter_bernoulli",
    "export_merge",
    "gradient_value",
    "layer_t",
    "mask_key",
    "merge_tensor",
    "mergekit_config",
    "mergekit_yaml",
]
