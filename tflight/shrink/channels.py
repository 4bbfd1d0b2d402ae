"""Structured channel pruning: remove whole channels so the model really shrinks.

Magnitude pruning and clustering leave a graph of the same shape: a `.tflite`
file is no faster. `prune_channels` removes output channels of convolutions,
separable convolutions and Dense layers, carries each cut through everything
that depends on it (asking `tflight.depgraph.DependencyGraph` which channels
are coupled), and rebuilds a genuinely smaller model of the same Keras
generation with sliced weights. The user's model is never modified.

Which channels go is decided by a pluggable importance criterion
(`MagnitudeImportance`, `BNScaleImportance`, `TaylorImportance`,
`APoZImportance`); how many, by a per-group ratio (uniform, or per layer) or a
FLOPs / parameter target reached by a uniform or a global ranking. After the
cut, `fine_tune` recovers accuracy, optionally distilling from the uncut model.

References:
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017,
  https://arxiv.org/abs/1608.08710
  Liu et al., "Learning Efficient Convolutional Networks through Network
  Slimming", ICCV 2017, https://arxiv.org/abs/1708.06519
  Molchanov et al., "Pruning Convolutional Neural Networks for Resource
  Efficient Inference", ICLR 2017, https://arxiv.org/abs/1611.06440
  Hu et al., "Network Trimming: A Data-Driven Neuron Pruning Approach",
  2016, https://arxiv.org/abs/1607.03250
  Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023,
  https://arxiv.org/abs/2301.12900
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tflight._keras import is_keras3_model, is_tf_keras_model, keras, tf, tf_keras
from tflight.errors import CompressionError, UnsupportedLayerError
from tflight.shrink.depgraph import ChannelGroup, DependencyGraph, LayerCut
from tflight.shrink.importance import (
    APoZImportance,
    BNScaleImportance,
    Importance,
    MagnitudeImportance,
    TaylorImportance,
    _check_xy,
    _role,
    importance_from_name,
)

__all__ = [
    # The criteria live in tflight.importance; re-exported for convenience.
    "Importance",
    "MagnitudeImportance",
    "BNScaleImportance",
    "TaylorImportance",
    "APoZImportance",
    "importance_from_name",
    "GroupCut",
    "ChannelPruningResult",
    "prune_channels",
    "fine_tune",
    "rebuild_model",
]

_MAX_RATIO = 0.95


def _module(model: Any) -> Any:
    if is_keras3_model(model):
        return keras
    if is_tf_keras_model(model):
        return tf_keras()
    raise CompressionError(
        f"Expected a Keras 3 or tf_keras model, got {type(model).__name__}."
    )


# --------------------------------------------------------------------------- result


@dataclasses.dataclass(frozen=True)
class GroupCut:
    """Channels of one coupled group before and after the cut."""

    name: str
    layers: tuple[str, ...]
    before: int
    after: int


@dataclasses.dataclass
class ChannelPruningResult:
    """The cut model and what changed.

    Attributes:
      model: the smaller model (same Keras generation as the input).
      groups: one `GroupCut` per prunable group (uncut ones included).
      macs_before / macs_after: multiply-accumulates of convolutions and Dense
        layers, counted from the layer shapes.
      params_before / params_after: parameter counts of the two models.
      criterion: the importance criterion used.
      kept: kept channel indices per cut group name.
    """

    model: Any
    groups: tuple[GroupCut, ...]
    macs_before: int
    macs_after: int
    params_before: int
    params_after: int
    criterion: str
    kept: dict[str, np.ndarray]
    notes: tuple[str, ...] = ()

    @property
    def macs_ratio(self) -> float:
        """macs_after / macs_before."""
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return {
            "criterion": self.criterion,
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_ratio,
            "params_before": self.params_before,
            "params_after": self.params_after,
            "groups": [dataclasses.asdict(g) for g in self.groups],
            "notes": list(self.notes),
        }

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints channels per group before and after, and the totals."""
        width = max([len(g.name) for g in self.groups] + [5])
        print_fn(f"{'group':<{width}}  before  after  layers")
        for g in self.groups:
            mark = "" if g.after < g.before else " (kept)"
            shown = ", ".join(g.layers[:4]) + (" ..." if len(g.layers) > 4 else "")
            print_fn(f"{g.name:<{width}}  {g.before:>6}  {g.after:>5}  {shown}{mark}")
        print_fn(
            f"MACs (counted): {self.macs_before:,} -> {self.macs_after:,} "
            f"({self.macs_ratio:.1%}); parameters: {self.params_before:,} -> "
            f"{self.params_after:,}; criterion: {self.criterion}"
        )
        for note in self.notes:
            print_fn(f"note: {note}")


# --------------------------------------------------------------------------- planning


def _keep_count(size: int, ratio: float, round_to: int) -> int:
    keep = int(math.floor(size * (1.0 - ratio) + 0.5))
    if round_to > 1 and size >= round_to:
        keep = min(size, max(round_to, round_to * int(round(keep / round_to))))
    return keep


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    order = np.argsort(-scores, kind="stable")[:k]
    return np.sort(order)


def _plan_counts(
    graph: DependencyGraph,
    groups: Sequence[ChannelGroup],
    scores: dict[int, np.ndarray],
    *,
    ratio: float | Mapping[str, float] | None,
    target: float | None,
    metric: str,
    global_ranking: bool,
    round_to: int,
    max_ratio: float,
) -> dict[int, int]:
    if ratio is not None:
        if isinstance(ratio, Mapping):
            wanted = {}
            for name, r in ratio.items():
                g = graph.group_of_layer(name)
                if not g.prunable:
                    raise UnsupportedLayerError(
                        f"Layer {name!r} cannot be cut: {'; '.join(g.blocked) or 'no producers'}."
                    )
                wanted[g.gid] = _check_ratio(r, f"ratio[{name!r}]")
        else:
            wanted = {g.gid: ratio for g in groups}
        counts = {}
        for gid, r in wanted.items():
            g = graph.group(gid)
            counts[gid] = _keep_count(g.size, r, round_to)
            if counts[gid] < 1:
                raise CompressionError(
                    f"A ratio of {r} leaves no channel in {g.name!r} ({g.size} channels); "
                    f"use a ratio below {1 - 1 / g.size:.3f} for it."
                )
        return counts

    base = graph.macs(params=metric == "params")
    goal = target * base

    def counts_for(t: float) -> dict[int, int]:
        if not global_ranking:
            return {g.gid: max(1, _keep_count(g.size, t, round_to)) for g in groups}
        out = {}
        for g in groups:
            s = scores[g.gid] / (np.mean(scores[g.gid]) + 1e-12)
            k = int(np.sum(s > t))
            floor = g.size - int(math.floor(g.size * max_ratio))
            k = max(k, floor, 1)
            if round_to > 1 and g.size >= round_to:
                k = min(g.size, max(round_to, round_to * int(math.ceil(k / round_to))))
            out[g.gid] = k
        return out

    def cost(c: dict[int, int]) -> float:
        keep = {gid: np.arange(n) for gid, n in c.items()}
        return graph.macs(keep, params=metric == "params")

    lo, hi = 0.0, (max_ratio if not global_ranking else 1e3)
    if cost(counts_for(hi)) > goal:
        raise CompressionError(
            f"A {metric} target of {target:.0%} cannot be reached by cutting at most "
            f"{max_ratio:.0%} of each group's channels (best: "
            f"{cost(counts_for(hi)) / base:.0%}); ask for a larger target or fewer excluded layers."
        )
    for _ in range(40):
        mid = (lo + hi) / 2
        if cost(counts_for(mid)) > goal:
            lo = mid
        else:
            hi = mid
    return counts_for(hi)


def _check_ratio(r: Any, what: str) -> float:
    if not isinstance(r, int | float) or not 0.0 <= float(r) < 1.0:
        raise CompressionError(
            f"`{what}` is the fraction of channels removed and must be in [0, 1), got {r!r}."
        )
    return float(r)


# --------------------------------------------------------------------------- rebuilding


def _slice_layer(rec: LayerCut, graph: DependencyGraph, keep: dict) -> tuple[dict, list | None]:
    """New config entries and sliced weights for one layer."""
    in_keep = graph.keep_indices(rec.in_space, keep)
    out_keep = graph.keep_indices(rec.out_space, keep)
    layer = rec.layer
    changes: dict[str, Any] = {}
    if rec.kind == "reshape":
        target = tuple(layer.target_shape)
        return {"target_shape": (*target[:-1], len(out_keep))}, None
    if rec.kind in ("conv", "separable"):
        changes["filters"] = len(out_keep)
    elif rec.kind == "dense":
        changes["units"] = len(out_keep)
    sliced = []
    m = getattr(layer, "depth_multiplier", 1)
    for v in layer.weights:
        w, role = np.asarray(v.numpy()), _role(v)
        if rec.kind in ("conv", "dense") and role == "kernel":
            w = np.take(np.take(w, in_keep, axis=-2), out_keep, axis=-1)
        elif rec.kind == "separable" and role == "depthwise_kernel":
            w = np.take(w, in_keep, axis=-2)
        elif rec.kind == "separable" and role == "pointwise_kernel":
            expanded = (in_keep[:, None] * m + np.arange(m)[None, :]).reshape(-1)
            w = np.take(np.take(w, expanded, axis=-2), out_keep, axis=-1)
        elif rec.kind in ("conv", "dense", "separable") and role == "bias":
            w = np.take(w, out_keep, axis=0)
        elif rec.kind == "depthwise" and role in ("kernel", "depthwise_kernel"):
            w = np.take(w, in_keep, axis=-2)
        elif rec.kind in ("depthwise", "bn"):
            w = np.take(w, in_keep, axis=0)
        sliced.append(w)
    return changes, sliced


def _rebuild(model: Any, graph: DependencyGraph, keep: dict) -> Any:
    """A copy of `model` with the kept channels only (same Keras generation)."""
    plans = {id(rec.layer): _slice_layer(rec, graph, keep) for rec in graph.layers.values()}

    def build(layer: Any) -> Any:
        config = layer.get_config()
        config.update(plans[id(layer)][0])
        return type(layer).from_config(config)

    return rebuild_model(
        model,
        builders={key: build for key in plans},
        weights={key: w for key, (_, w) in plans.items() if w is not None},
    )


def rebuild_model(
    model: Any,
    *,
    builders: Mapping[int, Callable[[Any], Any]],
    weights: Mapping[int, list],
) -> Any:
    """A copy of `model` (same Keras generation, nested models walked into) with some layers replaced.

    Args:
      model: a Sequential or Functional model.
      builders: `id(layer)` -> function returning the new layer for it (any
        layer, including a small Sequential standing for two layers); other
        layers are rebuilt from their configs.
      weights: `id(layer)` -> the weights to set on its replacement; other
        layers keep their weights.

    Returns:
      The new model; `model` is not modified.
    """
    K = _module(model)

    def clone(m: Any) -> Any:
        def fn(layer: Any) -> Any:
            if id(layer) in builders:
                return builders[id(layer)](layer)
            if layer is not m and hasattr(layer, "layers"):
                inner = getattr(layer, "_functional", None) or layer
                if hasattr(inner, "_nodes_by_depth"):
                    return clone(layer)
            return type(layer).from_config(layer.get_config())

        if hasattr(m, "_functional") or not hasattr(m, "_nodes_by_depth") or _is_sequential(m):
            return K.models.clone_model(m, clone_function=fn)
        # Functional: keep the input layers' names (clone_model would rename them).
        inputs = tf.nest.map_structure(
            lambda t: K.Input(
                batch_shape=tuple(t.shape), dtype=t.dtype, name=t._keras_history[0].name
            ),
            m.input,
        )
        return K.models.clone_model(m, input_tensors=inputs, clone_function=fn)

    classes = {}
    stack = [model]
    while stack:
        m = stack.pop()
        for layer in getattr(m, "layers", []):
            classes[type(layer).__name__] = type(layer)
            stack.append(layer)
    scope = K.saving.custom_object_scope if hasattr(K, "saving") else K.utils.custom_object_scope
    with scope(classes):
        new_model = clone(model)

    def copy(old: Any, new: Any) -> None:
        old_by_name = {layer.name: layer for layer in old.layers}
        for layer in new.layers:
            src = old_by_name.get(layer.name)
            if src is None or not src.weights:
                continue
            if id(src) in weights:
                layer.set_weights(weights[id(src)])
            elif hasattr(layer, "layers") and hasattr(src, "layers"):
                copy(src, layer)
            else:
                layer.set_weights(src.get_weights())

    copy(model, new_model)
    return new_model


def _zero_removed_inputs(graph: DependencyGraph, keep: dict) -> None:
    """Zeros, in `graph.model` itself, the input weights that read channels `keep` drops.

    With those weights zero, the dropped channels cannot influence the output,
    so the model computes exactly what its cut copy computes: the check behind
    the exactness tests.
    """
    for rec in graph.layers.values():
        if rec.kind not in ("conv", "dense", "separable"):
            continue
        size = graph.size(rec.in_space)
        drop = np.setdiff1d(np.arange(size), graph.keep_indices(rec.in_space, keep))
        if not drop.size:
            continue
        m = getattr(rec.layer, "depth_multiplier", 1)
        for v in rec.layer.weights:
            role = _role(v)
            if role not in ("kernel", "pointwise_kernel"):
                continue
            w = np.asarray(v.numpy()).copy()
            idx = drop if role == "kernel" else (drop[:, None] * m + np.arange(m)).reshape(-1)
            w[..., idx, :] = 0.0
            v.assign(w)


def _is_sequential(model: Any) -> bool:
    return any(c.__name__ == "Sequential" for c in type(model).__mro__)


def _count_params(model: Any) -> int:
    return int(sum(int(np.prod(v.shape)) for v in model.weights))


# --------------------------------------------------------------------------- the verb


def prune_channels(
    model: Any,
    *,
    ratio: float | Mapping[str, float] | None = None,
    flops_target: float | None = None,
    params_target: float | None = None,
    importance: Importance | str | None = None,
    data: Any = None,
    global_ranking: bool = False,
    round_to: int = 1,
    exclude: Sequence[str] = (),
    max_ratio: float = _MAX_RATIO,
    graph: DependencyGraph | None = None,
) -> ChannelPruningResult:
    """Removes whole channels and returns a genuinely smaller copy of the model.

    Every coupled group (see `DependencyGraph`) is cut at the same indices in
    all its layers: producers' output channels, BatchNorm and depthwise
    channels, consumers' input channels, residual additions, concatenation
    slices and squeeze-and-excite gates. Groups touching the model's inputs or
    outputs, or a layer the graph cannot follow, are left whole. Everything is
    checked before the model is touched; the input model is never modified.

    Give exactly one of `ratio`, `flops_target` or `params_target`.

    Args:
      model: a Sequential or Functional model (Keras 3 or tf_keras), nested
        models allowed.
      ratio: fraction of channels removed from every prunable group, or a
        mapping from layer name to the fraction removed from that layer's group
        (other groups left whole); in [0, 1).
      flops_target: fraction of the model's convolution/Dense MACs to keep, in
        (0, 1); 0.5 removes half the FLOPs.
      params_target: likewise for the parameters of those layers.
      importance: an `Importance`, or "l1" (default), "l2", "bn", "taylor", "apoz".
      data: `(x, y)` (or `x` for "apoz") for data-driven criteria.
      global_ranking: with a target, rank channels across groups (scores
        normalised by each group's mean) instead of cutting every group by the
        same ratio.
      round_to: keep a multiple of this many channels per group (8 or 16 suit
        XNNPACK and NPUs); groups smaller than it are cut without rounding.
      exclude: layer names whose groups are left whole.
      max_ratio: with a target, cut at most this fraction of any group.
      graph: a `DependencyGraph` of `model` already built.

    Returns:
      A `ChannelPruningResult`.

    Raises:
      CompressionError: a bad ratio or target, one leaving zero channels, a
        data-driven criterion without data, or an unreachable target.
      UnsupportedLayerError: a named layer that cannot be cut, or a model with
        no layer graph.

    Example:
      >>> result = prune_channels(model, flops_target=0.5, round_to=8)
      >>> result.summary()
      >>> small = result.model
    """
    given = [a for a in (ratio, flops_target, params_target) if a is not None]
    if len(given) != 1:
        raise CompressionError(
            "Give exactly one of `ratio`, `flops_target` or `params_target` "
            f"(got {len(given)})."
        )
    if ratio is not None and not isinstance(ratio, Mapping):
        ratio = _check_ratio(ratio, "ratio")
    target, metric = (flops_target, "macs") if flops_target is not None else (params_target, "params")
    if target is not None and not (isinstance(target, int | float) and 0.0 < target < 1.0):
        raise CompressionError(
            f"A {metric} target is the fraction of the model's {metric} to keep and must be "
            f"in (0, 1), got {target!r}."
        )
    if not isinstance(round_to, int) or round_to < 1:
        raise CompressionError(f"`round_to` must be a positive integer, got {round_to!r}.")
    if not 0.0 < max_ratio < 1.0:
        raise CompressionError(f"`max_ratio` must be in (0, 1), got {max_ratio!r}.")
    if isinstance(importance, str) or importance is None:
        importance = importance_from_name(importance or "l1")
    if importance.needs_data and data is None:
        _check_xy(None, importance.name)
    _module(model)

    graph = graph or DependencyGraph(model)
    excluded = {graph.group_of_layer(name).gid for name in exclude}
    groups = [g for g in graph.prunable_groups() if g.gid not in excluded]
    if not groups:
        raise UnsupportedLayerError(
            f"Model {model.name!r} has no channels that can be cut: "
            + "; ".join(sorted({r for g in graph.groups() for r in g.blocked}))[:400]
        )
    if isinstance(ratio, Mapping):
        for name in ratio:
            if graph.group_of_layer(name).gid in excluded:
                raise CompressionError(f"Layer {name!r} is both in `ratio` and in `exclude`.")
    scores = importance.scores(graph, groups, data)
    counts = _plan_counts(
        graph,
        groups,
        scores,
        ratio=ratio,
        target=target,
        metric=metric,
        global_ranking=global_ranking,
        round_to=round_to,
        max_ratio=max_ratio,
    )
    keep = {gid: _top(scores[gid], n) for gid, n in counts.items() if n < graph.group(gid).size}
    notes = []
    if isinstance(importance, BNScaleImportance):
        bn_paths = {rec.path for rec in graph.layers.values() if rec.kind == "bn"}
        no_bn = [g.name for g in groups if not bn_paths.intersection(g.members)]
        if no_bn:
            notes.append(f"groups without BatchNormalization scored by L1 norm: {no_bn[:5]}")
    new_model = _rebuild(model, graph, keep)
    cuts = tuple(
        GroupCut(
            name=g.name,
            layers=tuple(g.members),
            before=g.size,
            after=len(keep.get(g.gid, range(g.size))),
        )
        for g in groups
    )
    return ChannelPruningResult(
        model=new_model,
        groups=cuts,
        macs_before=graph.macs(),
        macs_after=graph.macs(keep),
        params_before=_count_params(model),
        params_after=_count_params(new_model),
        criterion=repr(importance),
        kept={graph.group(gid).name: idx for gid, idx in keep.items()},
        notes=tuple(notes),
    )


def fine_tune(
    model: Any,
    x: Any,
    y: Any,
    *,
    teacher: Any = None,
    epochs: int = 5,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    temperature: float = 4.0,
    alpha: float = 0.5,
    validation_data: Any = None,
    verbose: int = 0,
) -> Any:
    """Fine-tunes a cut model in place, optionally distilling from the uncut one.

    Plain fine-tuning minimises sparse categorical cross-entropy; with a
    `teacher`, `tflight.Distiller` mixes it (weight `alpha`) with the
    soft-target loss at `temperature`.

    Args:
      model: the cut model (Keras 3 or tf_keras) with one class-score output.
      x: training inputs.
      y: integer labels.
      teacher: the uncut model, to distil from.
      epochs: epochs.
      batch_size: batch size.
      learning_rate: Adam learning rate.
      temperature: distillation temperature.
      alpha: weight of the ground-truth loss when distilling.
      validation_data: passed to `fit`.
      verbose: passed to `fit`.

    Returns:
      The Keras `History`.

    Raises:
      CompressionError: a bad number of epochs or learning rate.
      DistillationError: a teacher that does not fit the student.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise CompressionError(f"`epochs` must be a positive integer, got {epochs!r}.")
    if not learning_rate > 0:
        raise CompressionError(f"`learning_rate` must be > 0, got {learning_rate!r}.")
    K = _module(model)
    if teacher is None:
        last = model.layers[-1]
        probs = getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
        model.compile(
            optimizer=K.optimizers.Adam(learning_rate),
            loss=K.losses.SparseCategoricalCrossentropy(from_logits=not probs),
            metrics=["accuracy"],
        )
        return model.fit(
            x, y, epochs=epochs, batch_size=batch_size, validation_data=validation_data,
            verbose=verbose,
        )
    from tflight.distillation.distiller import Distiller

    distiller = Distiller(teacher, model, temperature=temperature, alpha=alpha)
    distiller.compile(optimizer=K.optimizers.Adam(learning_rate))
    return distiller.fit(x, y, epochs=epochs, batch_size=batch_size, verbose=verbose)
