"""Keeping pruned zeros through later stages of a pipeline.

After pruning, a clustering or QAT stage trains the pruned kernels again; the
zero pattern pruning made is recorded, put back after each later stage, and
checked, so a pipeline's result is as sparse as pruning left it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tflight.compress.models import short_name
from tflight.errors import CompressionError

__all__ = [
    "check_sparsity_kept",
    "zero_masks",
    "zeros_by_layer",
]

def zeros_by_layer(model: Any) -> dict[str, float]:
    from tflight.compress.sparsity import sparsity_report

    return {row.layer: row.sparsity for row in sparsity_report(model).layers}


def zero_masks(wrapped: Any, pruned: dict[str, float]) -> list[tuple[Any, np.ndarray]]:
    """The zero patterns of the pruned kernels, to put back after a later stage.

    Layers a later stage keeps float or skips train as plain float layers and
    would refill their zeros; TF-MOT's prune-preserving QAT also lets a few
    zeros drift in small layers. The pattern pruning made is put back after
    the stage (a projection of the trained kernel onto it), so the result is as
    sparse as pruning left it.
    """
    masks = []
    for layer in wrapped.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name not in pruned or pruned[inner.name] <= 0:
            continue
        # A QuantizeWrapper holds the inner layer's kernel itself: look at both.
        seen: set[int] = set()
        for w in [*layer.weights, *inner.weights]:
            if id(w) in seen:
                continue
            seen.add(id(w))
            if short_name(w).split("/")[-1] in ("kernel", "depthwise_kernel"):
                values = w.numpy()
                masks.append((w, (values != 0).astype(values.dtype)))
    return masks


def check_sparsity_kept(
    before: dict[str, float], model: Any, technique: Any, preserve: frozenset[str]
) -> None:
    """A later stage must not refill the zeros pruning made."""
    after = zeros_by_layer(model)
    lost = [
        f"{name} {before[name]:.0%} -> {after.get(name, 0.0):.0%}"
        for name in before
        if before[name] > 0.05 and after.get(name, 0.0) < before[name] - 0.02
    ]
    if not lost:
        return
    if "clusters" in preserve:
        advice = (
            "Sparsity-preserving QAT after clustering keeps zeros only in clustered layers: "
            "cluster every pruned layer (widen Cluster's `select`), or prune only the layers "
            "you cluster."
        )
    else:
        advice = (
            "Sparsity-preserving QAT keeps zeros only in the layers it quantizes: quantize "
            "every pruned layer (do not keep it float), or prune only the layers QAT wraps."
        )
    raise CompressionError(
        f"{type(technique).__name__} did not preserve the pruned sparsity: {', '.join(lost)}. "
        + advice
    )

