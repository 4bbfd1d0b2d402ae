"""Keeping pruned zeros through later stages, and saying how many had to be put back.

After `Prune`, a later stage (Cluster, QAT) trains the pruned kernels again.
Layers that stage wraps are meant to keep their zeros (TF-MOT's
sparsity-preserving schemes); layers it keeps float or skips train as plain
layers and refill them. The pipeline measures, per layer and **before** any
repair, how many pruned positions a stage refilled: in a layer the stage
promised to keep sparse, losing more than a small tolerance is an error (the
check can fire because it looks before the repair); elsewhere the zeros are put
back (a projection of the trained kernel onto the pruned pattern) and the count
is reported in the stage's `CompressionReport.rezeroed`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tflight.compress.models import short_name
from tflight.errors import CompressionError

__all__ = [
    "PrunedMask",
    "Refill",
    "check_refills",
    "measure_refills",
    "pruned_masks",
    "preserve_concat_feeds",
    "rezero",
    "zeros_by_layer",
]

# A wrapped layer may refill this share of its pruned positions (TF-MOT's
# prune-preserving QAT lets a few drift in small layers) before it is an error.
TOLERANCE = 0.05


@dataclasses.dataclass(frozen=True)
class PrunedMask:
    """The zero pattern pruning left in one kernel variable."""

    layer: str
    variable: Any
    keep: np.ndarray  # 1 where pruning kept the weight, 0 where it zeroed it

    @property
    def pruned(self) -> int:
        return int(self.keep.size - np.count_nonzero(self.keep))


@dataclasses.dataclass(frozen=True)
class Refill:
    """How many of a layer's pruned positions a stage refilled (before repair)."""

    layer: str
    refilled: int
    pruned: int

    @property
    def share(self) -> float:
        return self.refilled / self.pruned if self.pruned else 0.0


def zeros_by_layer(model: Any) -> dict[str, float]:
    from tflight.compress.sparsity import sparsity_report

    return {row.layer: row.sparsity for row in sparsity_report(model).layers}


def pruned_masks(wrapped: Any, pruned: dict[str, float]) -> list[PrunedMask]:
    """The zero patterns of the pruned kernels of `wrapped`, read before it trains."""
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
            if short_name(w).split("/")[-1] in ("kernel", "depthwise_kernel", "pointwise_kernel"):
                values = w.numpy()
                masks.append(PrunedMask(inner.name, w, (values != 0).astype(values.dtype)))
    return masks


def measure_refills(masks: list[PrunedMask]) -> list[Refill]:
    """Per layer, pruned positions that are non-zero now (nothing is changed)."""
    by_layer: dict[str, list[int]] = {}
    for m in masks:
        values = m.variable.numpy()
        refilled = int(np.count_nonzero(values[m.keep == 0]))
        row = by_layer.setdefault(m.layer, [0, 0])
        row[0] += refilled
        row[1] += m.pruned
    return [Refill(layer, r, p) for layer, (r, p) in by_layer.items()]


def check_refills(
    refills: list[Refill], wrapped_layers: set[str], technique: Any, preserve: frozenset[str]
) -> None:
    """Raises if a layer the stage wrapped (and so promised to keep sparse) lost its zeros.

    Runs before `rezero`, on what training left.

    Raises:
      CompressionError: a wrapped layer refilled more than `TOLERANCE` of its
        pruned positions; `layer` names the first, `kind` is "sparsity_lost".
    """
    lost = [r for r in refills if r.layer in wrapped_layers and r.share > TOLERANCE]
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
            f"{type(technique).__name__} was to keep the zeros of the layers it wraps; pass it "
            "the pruned sparsity to preserve, or prune only the layers it wraps."
        )
    text = ", ".join(f"{r.layer} refilled {r.refilled} of {r.pruned} pruned weights" for r in lost)
    raise CompressionError(
        f"{type(technique).__name__} did not preserve the pruned sparsity: {text}. {advice}",
        layer=lost[0].layer,
        kind="sparsity_lost",
        fix=advice,
    )


def rezero(masks: list[PrunedMask]) -> None:
    """Puts the pruned zeros back (after `measure_refills` has counted them)."""
    for m in masks:
        m.variable.assign(m.variable.numpy() * m.keep)


def preserve_concat_feeds(qat: Any, registry: Any) -> None:
    """Gives the layers feeding a Concatenate their sparsity-preserving quantizer back.

    TF-MOT's Concatenate transform configures the layers feeding a Concatenate
    from the plain 8-bit registry, so PQAT trained their pruned zeros back in.
    The wrapper is built by then: swap its weight quantizer for the scheme's
    and give it the mask of the current (pruned) kernel.
    """
    import tensorflow as tf
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        current = getattr(layer, "_weight_vars", None)
        if inner is None or not current or not registry.supports(inner):
            continue
        want = registry.get_quantize_config(inner).weight_quantizer
        if "PrunePreserve" not in type(want).__name__ or type(current[0][1]) is type(want):
            continue
        layer._weight_vars = [
            (w, want, {**qvars, "sparsity_mask": tf.math.divide_no_nan(w, w)})
            for w, _, qvars in current
        ]
        layer.quantize_config.weight_quantizer = want
