"""MergeKit 0.1.5's per-tensor gradient rules (``mergekit/plan.py``, ``mergekit/config.py``).

A list-valued parameter ``[v_0 .. v_{n-1}]`` is a gradient over the decoder layers: layer ``i`` of
``L`` reads it at ``t = i / (L - 1)`` (``t = 1`` when ``L == 1``) by piecewise-linear
interpolation on an even grid (``np.interp(t, linspace(0, 1, n), values)``); tensors outside the
layers (embeddings, final norm, lm_head: MergeKit's pre / post weights) read it at ``t = 0``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

__all__ = ["LAYER_RE", "gradient_value", "layer_t"]

# Decoder-layer tensors: ``model.layers.<i>.`` (Llama, Mistral, Qwen...), ``h.<i>.`` (GPT-2),
# ``blocks.<i>.``.
LAYER_RE = re.compile(r"(?:^|\.)(?:layers|h|blocks)\.(\d+)\.")


def layer_t(tensor_name: str, n_layers: int) -> float:
    """MergeKit's gradient position of a tensor: ``layer / (n_layers - 1)``, 0 outside layers."""
    match = LAYER_RE.search(tensor_name)
    if match is None:
        return 0.0
    if n_layers <= 1:
        return 1.0
    return int(match.group(1)) / (n_layers - 1)


def gradient_value(values: Sequence[float], t: float) -> float:
    """Read a MergeKit gradient at ``t`` (``mergekit.config.evaluate_setting``, same float ops)."""
    if len(values) == 1:
        return float(values[0])
    scaled = t * (len(values) - 1)
    i0 = int(scaled)
    i1 = min(len(values) - 1, i0 + 1)
    frac = scaled - i0
    return float((1 - frac) * values[i0] + frac * values[i1])
