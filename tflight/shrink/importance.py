"""Importance criteria for structured pruning: which channels of a coupled group matter.

Each criterion is a small object with `scores(graph, groups, data)` returning
one score per channel of every group of a `tflight.depgraph.DependencyGraph`
(higher means more important). Data-free: filter norms (`MagnitudeImportance`)
and BatchNorm scales (`BNScaleImportance`); on the user's data: first-order
Taylor (`TaylorImportance`) and the average percentage of zeros
(`APoZImportance`). Write your own by subclassing `Importance`.

References:
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017,
  https://arxiv.org/abs/1608.08710
  Liu et al., "Learning Efficient Convolutional Networks through Network
  Slimming", ICCV 2017, https://arxiv.org/abs/1708.06519
  Molchanov et al., "Pruning Convolutional Neural Networks for Resource
  Efficient Inference", ICLR 2017, https://arxiv.org/abs/1611.06440
  Hu et al., "Network Trimming: A Data-Driven Neuron Pruning Approach",
  2016, https://arxiv.org/abs/1607.03250
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tflight._keras import tf
from tflight.errors import CompressionError
from tflight.shrink.depgraph import ChannelGroup, DependencyGraph

__all__ = [
    "Importance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "TaylorImportance",
    "APoZImportance",
    "importance_from_name",
]


# --------------------------------------------------------------------------- weights


def _role(variable: Any) -> str:
    return variable.name.split("/")[-1].split(":")[0]


def _weights(layer: Any) -> dict[str, np.ndarray]:
    return {_role(v): np.asarray(v.numpy()) for v in layer.weights}


# --------------------------------------------------------------------------- importance


class Importance:
    """Scores every channel of a group; higher means more important.

    Subclass and implement `scores`; set `needs_data = True` when the
    criterion needs the user's data.
    """

    needs_data: bool = False
    name: str = "importance"

    def scores(
        self, graph: DependencyGraph, groups: Sequence[ChannelGroup], data: Any = None
    ) -> dict[int, np.ndarray]:
        """Returns one score vector (length `group.size`) per group id."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def _producer_kernels(graph: DependencyGraph, group: ChannelGroup) -> list[np.ndarray]:
    """Kernels of the group's producers, output channels on the last axis."""
    out = []
    for rec in graph.layers.values():
        if rec.path in group.producers:
            w = _weights(rec.layer)
            out.append(w["pointwise_kernel"] if rec.kind == "separable" else w["kernel"])
    return out


@dataclasses.dataclass(frozen=True, repr=False)
class MagnitudeImportance(Importance):
    """L1 (`p=1`) or L2 (`p=2`) norm of each output filter, summed over the group's producers.

    References:
      Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017.
    """

    p: int = 1

    def __post_init__(self) -> None:
        if self.p not in (1, 2):
            raise CompressionError(f"MagnitudeImportance(p=...) must be 1 or 2, got {self.p!r}.")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"l{self.p}"

    def __repr__(self) -> str:
        return f"MagnitudeImportance(p={self.p})"

    def scores(self, graph, groups, data=None):
        out = {}
        for g in groups:
            total = np.zeros(g.size)
            for k in _producer_kernels(graph, g):
                flat = np.abs(k.reshape(-1, k.shape[-1]))
                total += (flat**self.p).sum(0) ** (1.0 / self.p)
            out[g.gid] = total
        return out


@dataclasses.dataclass(frozen=True, repr=False)
class BNScaleImportance(Importance):
    """|γ| of the BatchNormalization layers in the group (network slimming).

    A group with no BatchNormalization is scored by the L1 norm of its filters
    instead; `fallback_groups` on the result names those groups.

    References:
      Liu et al., "Learning Efficient Convolutional Networks through Network
      Slimming", ICCV 2017.
    """

    name = "bn"

    def scores(self, graph, groups, data=None):
        out, fallback = {}, MagnitudeImportance(1)
        for g in groups:
            gammas = [
                np.abs(_weights(rec.layer)["gamma"])
                for rec in graph.layers.values()
                if rec.kind == "bn"
                and rec.path in g.members
                and getattr(rec.layer, "scale", False)
                and len(graph.keep_indices(rec.in_space, {})) == g.size
            ]
            out[g.gid] = sum(gammas) if gammas else fallback.scores(graph, [g])[g.gid]
        return out


def _check_xy(data: Any, who: str) -> tuple[np.ndarray, np.ndarray | None]:
    if data is None:
        raise CompressionError(
            f"The {who} criterion is measured on your data: pass `data=(x, y)` "
            f"(CLI: --data train.npz), or use a data-free criterion (l1, l2, bn)."
        )
    if isinstance(data, tuple | list) and len(data) == 2:
        return np.asarray(data[0]), np.asarray(data[1])
    return np.asarray(data), None


@dataclasses.dataclass(frozen=True, repr=False)
class TaylorImportance(Importance):
    """First-order Taylor: |gradient × activation| at each producer's output, on your data.

    For a convolution or Dense output `z = W·x + b`, the sum over positions of
    `∂L/∂z · z` equals the sum of `w · ∂L/∂w` over the channel's filter plus
    `b · ∂L/∂b`, so the criterion is computed from weight gradients (which
    nested models expose) rather than from intermediate activations. Absolute
    values are taken per batch and averaged; producers of a coupled group add.

    Args:
      loss: a loss `loss(y_true, y_pred)`; default sparse categorical
        cross-entropy (logits unless the model ends in a softmax).
      batch_size: batch size.
      max_batches: batches used at most.

    References:
      Molchanov et al., "Pruning Convolutional Neural Networks for Resource
      Efficient Inference", ICLR 2017.
    """

    loss: Callable[[Any, Any], Any] | None = None
    batch_size: int = 32
    max_batches: int = 8
    name = "taylor"
    needs_data = True

    def scores(self, graph, groups, data=None):
        x, y = _check_xy(data, "taylor")
        if y is None:
            raise CompressionError("TaylorImportance needs labels: pass `data=(x, y)`.")
        model = graph.model
        loss = self.loss or _default_loss(model)
        variables, owners = [], []
        for g in groups:
            for rec in graph.layers.values():
                if rec.path not in g.producers:
                    continue
                for v in rec.layer.weights:
                    role = _role(v)
                    if role in ("kernel", "pointwise_kernel", "bias"):
                        variables.append(v)
                        owners.append(g.gid)
        totals = {g.gid: np.zeros(g.size) for g in groups}
        n = min(len(x), self.batch_size * self.max_batches)
        for start in range(0, n, self.batch_size):
            xb = tf.convert_to_tensor(x[start : start + self.batch_size])
            yb = tf.convert_to_tensor(y[start : start + self.batch_size])
            with tf.GradientTape() as tape:
                pred = model(xb, training=False)
                value = tf.reduce_mean(loss(yb, pred))
            grads = tape.gradient(value, variables)
            per = {g.gid: np.zeros(g.size) for g in groups}
            for v, grad, gid in zip(variables, grads, owners, strict=True):
                if grad is None:
                    continue
                prod = np.asarray(v.numpy()) * np.asarray(grad)
                per[gid] += prod.reshape(-1, prod.shape[-1]).sum(0)
            for gid in per:
                totals[gid] += np.abs(per[gid])
        return totals


@dataclasses.dataclass(frozen=True, repr=False)
class APoZImportance(Importance):
    """1 − average percentage of zeros of each channel after its ReLU, on your data.

    A channel that is almost always zero after its activation carries little
    information (network trimming). Activations are recorded at the output of
    each group's producers while the model runs on your data; a producer with
    no activation of its own is read through a ReLU (what a directly following
    ReLU would see; a BatchNormalization in between is not taken into account).
    A producer whose activation can be negative (swish, tanh) is scored by its
    mean |activation| instead.

    Args:
      batch_size: batch size.
      max_batches: batches used at most.

    References:
      Hu et al., "Network Trimming: A Data-Driven Neuron Pruning Approach", 2016.
    """

    batch_size: int = 32
    max_batches: int = 8
    name = "apoz"
    needs_data = True

    def scores(self, graph, groups, data=None):
        x, _ = _check_xy(data, "apoz")
        probes = _probe_outputs(graph, groups)
        totals = {g.gid: np.zeros(g.size) for g in groups}
        counts = {g.gid: 0 for g in groups}
        n = min(len(x), self.batch_size * self.max_batches)
        with _recording(probes) as seen:
            for start in range(0, n, self.batch_size):
                graph.model(tf.convert_to_tensor(x[start : start + self.batch_size]), training=False)
                for gid, layers in probes.items():
                    for layer in layers:
                        for a in seen.pop(id(layer), []):
                            a = np.asarray(a).reshape(-1, a.shape[-1])
                            if np.any(a < 0):  # not after a zeroing activation
                                totals[gid] += np.abs(a).mean(0)
                            else:
                                totals[gid] += (a > 0).mean(0)
                            counts[gid] += 1
        return {gid: totals[gid] / max(counts[gid], 1) for gid in totals}


def _probe_outputs(graph: DependencyGraph, groups: Sequence[ChannelGroup]) -> dict[int, list]:
    """Per group, the layers whose outputs carry its channels (after activations if any)."""
    out: dict[int, list] = {}
    for g in groups:
        layers = []
        for rec in graph.layers.values():
            if rec.path in g.producers:
                layers.append(rec.layer)
        out[g.gid] = layers
    return out


class _recording:
    """Records the outputs of some layers while a model runs eagerly."""

    def __init__(self, probes: dict[int, list]) -> None:
        self.layers = [layer for layers in probes.values() for layer in layers]
        self.seen: dict[int, list] = {}

    def __enter__(self) -> dict[int, list]:
        for layer in self.layers:
            original = layer.call

            def call(*args, __original=original, __layer=layer, **kwargs):
                out = __original(*args, **kwargs)
                act = getattr(__layer, "activation", None)
                value = out
                if act is None or getattr(act, "__name__", "") == "linear":
                    value = tf.nn.relu(out)  # what the next ReLU would see
                self.seen.setdefault(id(__layer), []).append(np.asarray(value))
                return out

            layer.call = call
        return self.seen

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            del layer.call


def _default_loss(model: Any) -> Callable[[Any, Any], Any]:
    last = model.layers[-1]
    probs = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
    probs = probs or type(last).__name__ == "Softmax"
    return lambda y, p: tf.keras.losses.sparse_categorical_crossentropy(
        y, p, from_logits=not probs
    )


_CRITERIA = {
    "l1": lambda: MagnitudeImportance(1),
    "l2": lambda: MagnitudeImportance(2),
    "bn": BNScaleImportance,
    "taylor": TaylorImportance,
    "apoz": APoZImportance,
}


def importance_from_name(name: str) -> Importance:
    """An importance criterion from its CLI word: l1, l2, bn, taylor or apoz."""
    try:
        return _CRITERIA[name]()
    except KeyError:
        raise CompressionError(
            f"Unknown importance criterion {name!r}; use one of {sorted(_CRITERIA)}."
        ) from None
