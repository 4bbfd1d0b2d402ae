"""Which layers have a kernel: the weights pruning and clustering act on.

Pruning and clustering change kernels (matrices, filters, embedding tables).
A layer without one has nothing for them to do, whatever TF-MOT's registry
says of its class: Normalization and the Random* augmentation layers hold only
non-trainable state, LayerNormalization and per-channel affine layers only
vectors, Rescaling, pooling and reshapes nothing at all. Such layers are left
as they are and listed in the report (with `NO_KERNEL` as the reason), never
an error: asking to prune a model must not fail on a layer with nothing to
prune.
"""

from __future__ import annotations

from typing import Any

__all__ = ["NO_KERNEL", "has_kernel", "no_kernel_reason"]

NO_KERNEL = "nothing to {verb}: {cls} has no kernel (no trainable weight of rank 2 or more)"


def has_kernel(layer: Any) -> bool:
    """Whether `layer` has a trainable weight of rank 2 or more (its own or a sublayer's)."""
    return any(len(getattr(w, "shape", ())) >= 2 for w in layer.trainable_weights)


def no_kernel_reason(layer: Any, verb: str) -> str:
    """The report's reason for leaving `layer` alone."""
    return NO_KERNEL.format(verb=verb, cls=type(layer).__name__)
