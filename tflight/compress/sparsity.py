"""Measuring sparsity: the fraction of exact zeros in each prunable weight.

`sparsity_report` reads a pruning-wrapped model (masks applied, with the
targets of their schedules), a stripped model (with the targets its strip
recorded) or any plain model (the kernels of its Conv and Dense layers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight._keras import is_tf_keras_model
from tflight.compress.training import prune_wrapper_class

__all__ = ["LayerSparsity", "SparsityReport", "TARGETS_ATTR", "sparsity_report", "wrapper_target"]


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """Sparsity of one pruned weight."""

    layer: str
    weight: str
    shape: tuple[int, ...]
    zeros: int
    size: int
    target: float | None

    @property
    def sparsity(self) -> float:
        return self.zeros / self.size if self.size else 0.0


@dataclasses.dataclass(frozen=True)
class SparsityReport:
    """Per-layer sparsity of a model's prunable weights."""

    layers: tuple[LayerSparsity, ...]

    @property
    def overall(self) -> float:
        total = sum(row.size for row in self.layers)
        return sum(row.zeros for row in self.layers) / total if total else 0.0

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints one line per weight (columns sized to the longest name) and the overall sparsity."""
        rows = [
            (
                row.layer,
                row.weight,
                str(row.shape),
                f"{row.sparsity:.1%}",
                f"{row.target:.0%}" if row.target is not None else "-",
            )
            for row in self.layers
        ]
        head = ("layer", "weight", "shape", "sparsity", "target")
        widths = [max([len(head[i])] + [len(r[i]) for r in rows]) for i in range(5)]
        for r in [head, *rows]:
            print_fn(
                f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  "
                f"{r[3]:>{widths[3]}}  {r[4]:>{widths[4]}}"
            )
        print_fn(f"overall sparsity: {self.overall:.1%}")


TARGETS_ATTR = "_tflight_sparsity_targets"


def wrapper_target(wrapper: Any) -> float:
    if wrapper.sparsity_m_by_n:
        m, n = wrapper.sparsity_m_by_n
        return m / n
    schedule = wrapper.pruning_schedule
    return float(getattr(schedule, "target_sparsity", getattr(schedule, "final_sparsity", 0.0)))


def sparsity_report(model: Any) -> SparsityReport:
    """Measures the fraction of exact zeros in each prunable weight of `model`.

    Works on a pruning-wrapped model (mask applied, with targets) and on a
    stripped or plain model (kernels of Conv/Dense layers).

    Args:
      model: a Keras 3 or tf_keras model.

    Returns:
      A `SparsityReport`.
    """
    rows = []
    targets = getattr(model, TARGETS_ATTR, {})
    for layer in model.layers:
        if is_tf_keras_model(layer):
            rows.extend(sparsity_report(layer).layers)
            continue
        if _is_pruning_wrapper(layer):
            for weight, mask, _ in layer.pruning_vars:
                values = weight.numpy() * mask.numpy()
                rows.append(_row(layer.layer.name, weight, values, wrapper_target(layer)))
            continue
        kernel = _kernel_variable(layer)
        if kernel is not None:
            inner = getattr(layer, "layer", layer)  # named after the wrapped layer
            rows.append(_row(inner.name, kernel, kernel.numpy(), targets.get(inner.name)))
    return SparsityReport(tuple(rows))


def _kernel_variable(layer: Any) -> Any:
    """The kernel variable of a layer or of the layer a wrapper holds.

    QAT wrappers replace the inner layer's `kernel` attribute with a fake-quant
    tensor, so look the variable up among the weights instead. A
    SeparableConv2D's is its pointwise kernel (the one TF-MOT prunes), not
    its depthwise one.
    """
    by_role = {weight.name.split("/")[-1].split(":")[0]: weight for weight in layer.weights}
    for role in ("kernel", "pointwise_kernel", "depthwise_kernel"):
        if role in by_role:
            return by_role[role]
    return None


def _is_pruning_wrapper(layer: Any) -> bool:
    if not any(c.__module__.split(".")[0] == "tf_keras" for c in type(layer).__mro__):
        return False
    return isinstance(layer, prune_wrapper_class())


def _row(layer: str, weight: Any, values: np.ndarray, target: float | None) -> LayerSparsity:
    name = weight.name.split("/")[-1].split(":")[0]
    return LayerSparsity(
        layer=layer,
        weight=name,
        shape=tuple(int(d) for d in values.shape),
        zeros=int(np.count_nonzero(values == 0)),
        size=int(values.size),
        target=target,
    )


