"""One dependency graph of coupled channel groups over a Keras model.

Removing an output channel of a convolution is only correct if every layer
that reads or shares that channel is cut at the same index: the BatchNorm and
depthwise convolution after it, the next layer's input channels, every other
convolution whose output is summed with it in a residual `Add`, the gate of a
squeeze-and-excite `Multiply`, and the slice of a `Concatenate` it lands in.
`DependencyGraph` walks a Sequential or Functional model (nested models
included, in Keras 3 or tf_keras) once and partitions its channel dimensions
into **groups**: sets of channels that must be cut together. Every structural
technique (channel pruning, sensitivity analysis, low-rank factorization)
asks this graph rather than re-deriving the coupling.

A tensor's channel (last) axis is described by a *space*: a group
(`_Leaf`), the concatenation of spaces (`_Concat`), or a space repeated by a
`Flatten` of a feature map (`_Repeat`). Layers the graph does not understand
block the groups they touch, as do the model's inputs and outputs, so a cut
never changes the model's interface or crosses a layer it cannot follow.

References:
  Fang et al., "DepGraph: Towards Any Structural Pruning", CVPR 2023,
  https://arxiv.org/abs/2301.12900
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight.errors import UnsupportedLayerError

__all__ = ["DependencyGraph", "ChannelGroup", "LayerCut", "layer_kind"]

# Layers that apply the same operation to every channel independently.
_ELEMENTWISE = frozenset(
    {
        "ReLU",
        "LeakyReLU",
        "ELU",
        "ThresholdedReLU",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
        "Identity",
        "ActivityRegularization",
    }
)
_MERGE = frozenset({"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"})
# Activations that mix channels (normalise over the last axis).
_CHANNEL_MIXING_ACTIVATIONS = frozenset({"softmax", "log_softmax"})


def layer_kind(layer: Any) -> str:
    """The role of a layer in the graph, from its class hierarchy (subclasses count).

    One of "model", "input", "separable", "depthwise", "transpose", "conv",
    "dense", "bn", "merge", "concat", "flatten", "reshape", "activation",
    "elementwise", "rescaling" or "other".
    """
    names = [c.__name__ for c in type(layer).__mro__]
    if "InputLayer" in names:
        return "input"
    if hasattr(layer, "layers") and ("Functional" in names or "Sequential" in names):
        return "model"
    for name, kind in (
        ("SeparableConv2D", "separable"),
        ("SeparableConv1D", "separable"),
        ("DepthwiseConv2D", "depthwise"),
        ("DepthwiseConv1D", "depthwise"),
        ("Conv2DTranspose", "transpose"),
        ("Conv1DTranspose", "transpose"),
        ("Conv3DTranspose", "transpose"),
        ("Conv1D", "conv"),
        ("Conv2D", "conv"),
        ("Conv3D", "conv"),
        ("Dense", "dense"),
        ("BatchNormalization", "bn"),
        ("Concatenate", "concat"),
        ("Flatten", "flatten"),
        ("Reshape", "reshape"),
        ("Activation", "activation"),
        ("Rescaling", "rescaling"),
    ):
        if name in names:
            return kind
    if any(n in _MERGE for n in names):
        return "merge"
    if any(n in _ELEMENTWISE for n in names):
        return "elementwise"
    return "other"


@dataclasses.dataclass(frozen=True)
class _Leaf:
    gid: int


@dataclasses.dataclass(frozen=True)
class _Concat:
    parts: tuple


@dataclasses.dataclass(frozen=True)
class _Repeat:
    base: Any
    times: int


@dataclasses.dataclass
class ChannelGroup:
    """Channels that must be cut together.

    Attributes:
      gid: the group's id in its graph.
      size: number of channels.
      producers: names (paths) of the layers whose output channels form the group.
      members: names of every layer that is sliced when the group is cut.
      blocked: why the group cannot be cut (empty when it can).
    """

    gid: int
    size: int
    producers: list[str] = dataclasses.field(default_factory=list)
    members: list[str] = dataclasses.field(default_factory=list)
    blocked: list[str] = dataclasses.field(default_factory=list)

    @property
    def name(self) -> str:
        """The first producer's name (or "group N")."""
        return self.producers[0] if self.producers else f"group {self.gid}"

    @property
    def prunable(self) -> bool:
        """True when the group can be cut."""
        return not self.blocked and bool(self.producers)


@dataclasses.dataclass
class LayerCut:
    """How one layer is sliced: the spaces of its input and output channel axes."""

    layer: Any
    path: str
    kind: str
    in_space: Any = None
    out_space: Any = None
    # Per call: (product of the output's spatial dims, input rank) for MAC counting.
    spatial: list[int] = dataclasses.field(default_factory=list)


def _key(t: Any) -> tuple[int, int, int]:
    op, node_index, tensor_index = tuple(t._keras_history)[:3]
    return id(op), node_index, tensor_index


def _shape(t: Any) -> tuple:
    s = t.shape
    return tuple(s.as_list()) if hasattr(s, "as_list") else tuple(s)


def _flat(x: Any) -> list:
    if isinstance(x, list | tuple):
        out = []
        for v in x:
            out.extend(_flat(v))
        return out
    if isinstance(x, dict):
        return _flat(list(x.values()))
    return [x]


def _graph_of(model: Any) -> Any:
    """The object holding `_nodes_by_depth`, `inputs` and `outputs` of a model."""
    inner = getattr(model, "_functional", None)  # Keras 3 Sequential
    if inner is not None:
        return inner
    if not hasattr(model, "_nodes_by_depth") or not getattr(model, "inputs", None):
        raise UnsupportedLayerError(
            f"Model {model.name!r} ({type(model).__name__}) has no layer graph: structural "
            "techniques need a Sequential model built with an input shape or a Functional model, "
            "not a subclassed one."
        )
    return model


def _node_io(node: Any) -> tuple[Any, list, list]:
    layer = getattr(node, "operation", None) or node.layer
    if hasattr(node, "operation"):  # Keras 3
        return layer, list(node.input_tensors), _flat(node.output_tensors)
    return layer, _flat(node.keras_inputs), _flat(node.outputs)


class DependencyGraph:
    """Coupled channel groups of a Sequential or Functional model (Keras 3 or tf_keras).

    Args:
      model: the model; nested Sequential/Functional models are walked into.

    Raises:
      UnsupportedLayerError: for a model without a layer graph (subclassed).

    Example:
      >>> graph = DependencyGraph(model)
      >>> [g.name for g in graph.prunable_groups()]
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        self._parent: dict[int, int] = {}
        self._groups: dict[int, ChannelGroup] = {}
        self._space: dict[tuple, Any] = {}
        self.layers: dict[int, LayerCut] = {}  # id(layer) -> cut record
        self._producer_gid: dict[int, int] = {}
        self._build()

    # ---- union-find over group ids -------------------------------------------------
    def _new(self, size: int, *, blocked: str | None = None) -> _Leaf:
        gid = len(self._parent)
        self._parent[gid] = gid
        self._groups[gid] = ChannelGroup(gid=gid, size=int(size))
        if blocked:
            self._groups[gid].blocked.append(blocked)
        return _Leaf(gid)

    def find(self, gid: int) -> int:
        """The representative id of a group."""
        while self._parent[gid] != gid:
            self._parent[gid] = self._parent[self._parent[gid]]
            gid = self._parent[gid]
        return gid

    def _union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return
        ga, gb = self._groups[ra], self._groups[rb]
        self._parent[rb] = ra
        if ga.size != gb.size:
            ga.blocked.append(f"coupled channels of different sizes ({ga.size} vs {gb.size})")
        ga.producers += gb.producers
        ga.members += [m for m in gb.members if m not in ga.members]
        ga.blocked += gb.blocked

    def group(self, gid: int) -> ChannelGroup:
        """The group with this id (after merging)."""
        return self._groups[self.find(gid)]

    def leaves(self, space: Any) -> set[int]:
        """Representative ids of every group inside a space."""
        if space is None:
            return set()
        if isinstance(space, _Leaf):
            return {self.find(space.gid)}
        if isinstance(space, _Concat):
            return set().union(*(self.leaves(p) for p in space.parts))
        return self.leaves(space.base)

    def _block(self, space: Any, reason: str) -> None:
        for gid in self.leaves(space):
            if reason not in self._groups[gid].blocked:
                self._groups[gid].blocked.append(reason)

    def size(self, space: Any) -> int:
        """Number of channels of a space."""
        if isinstance(space, _Leaf):
            return self.group(space.gid).size
        if isinstance(space, _Concat):
            return sum(self.size(p) for p in space.parts)
        return self.size(space.base) * space.times

    def keep_indices(self, space: Any, keep: dict[int, np.ndarray]) -> np.ndarray:
        """Indices kept along a space's axis, given kept indices per group id."""
        if isinstance(space, _Leaf):
            gid = self.find(space.gid)
            return keep.get(gid, np.arange(self._groups[gid].size))
        if isinstance(space, _Concat):
            out, offset = [], 0
            for p in space.parts:
                out.append(self.keep_indices(p, keep) + offset)
                offset += self.size(p)
            return np.concatenate(out)
        base, c = self.keep_indices(space.base, keep), self.size(space.base)
        return np.concatenate([base + s * c for s in range(space.times)])

    # ---- walking the model ------------------------------------------------------------
    def _record(self, layer: Any, path: str, kind: str, in_space: Any, out_space: Any, spatial):
        rec = self.layers.get(id(layer))
        if rec is None:
            rec = self.layers[id(layer)] = LayerCut(layer, path, kind, in_space, out_space)
            for gid in self.leaves(in_space) | self.leaves(out_space):
                if path not in self._groups[gid].members:
                    self._groups[gid].members.append(path)
        elif in_space is not None:
            # A shared layer: every call must see the same input channels.
            if isinstance(in_space, _Leaf) and isinstance(rec.in_space, _Leaf):
                self._union(rec.in_space.gid, in_space.gid)
            elif in_space != rec.in_space:
                self._block(in_space, f"{path} is shared between differently shaped inputs")
                self._block(rec.in_space, f"{path} is shared between differently shaped inputs")
        rec.spatial.append(spatial)
        return rec

    def _producer(self, layer: Any, path: str, channels: int) -> _Leaf:
        gid = self._producer_gid.get(id(layer))
        if gid is None:
            leaf = self._new(channels)
            self._groups[leaf.gid].producers.append(path)
            self._producer_gid[id(layer)] = leaf.gid
            return leaf
        return _Leaf(gid)

    def _build(self) -> None:
        graph = _graph_of(self.model)
        in_spaces = [self._new(_shape(t)[-1] or 0, blocked="model input") for t in graph.inputs]
        outs = self._walk(self.model, in_spaces, prefix="")
        for s in outs:
            self._block(s, "model output")

    def _walk(self, model: Any, in_spaces: Sequence[Any], prefix: str) -> list[Any]:
        graph = _graph_of(model)
        for t, s in zip(_flat(graph.inputs), in_spaces, strict=True):
            self._space[_key(t)] = s
        for depth in sorted(graph._nodes_by_depth, reverse=True):
            for node in graph._nodes_by_depth[depth]:
                layer, ins, outs = _node_io(node)
                if layer_kind(layer) == "input":
                    continue
                spaces = [self._space[_key(t)] for t in ins]
                new = self._visit(layer, prefix + layer.name, spaces, ins, outs)
                for t, s in zip(outs, new, strict=True):
                    self._space[_key(t)] = s
        return [self._space[_key(t)] for t in _flat(graph.outputs)]

    def _visit(self, layer: Any, path: str, spaces: list, ins: list, outs: list) -> list:
        kind = layer_kind(layer)
        out_shape = _shape(outs[0]) if outs else ()
        spatial = int(np.prod([d or 1 for d in out_shape[1:-1]])) if len(out_shape) > 2 else 1
        channels_last = getattr(layer, "data_format", "channels_last") == "channels_last"

        def other(reason: str) -> list:
            for s in spaces:
                self._block(s, reason)
            return [self._new(_shape(t)[-1] or 0, blocked=reason) for t in outs]

        if kind == "model":
            return self._walk(layer, spaces, prefix=path + "/")
        if len(spaces) != 1 and kind not in ("merge", "concat"):
            return other(f"{path} ({type(layer).__name__}) has several inputs")
        if not channels_last:
            return other(f"{path} is channels_first")
        if kind in ("conv", "dense"):
            if kind == "conv" and getattr(layer, "groups", 1) != 1:
                return other(f"{path} is a grouped convolution")
            out = self._producer(layer, path, out_shape[-1])
            self._record(layer, path, kind, spaces[0], out, spatial)
            return [out]
        if kind == "separable":
            out = self._producer(layer, path, out_shape[-1])
            self._record(layer, path, kind, spaces[0], out, spatial)
            return [out]
        if kind == "depthwise":
            if getattr(layer, "depth_multiplier", 1) != 1:
                return other(f"{path} has depth_multiplier > 1")
            self._record(layer, path, kind, spaces[0], spaces[0], spatial)
            return [spaces[0]]
        if kind == "bn":
            axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)
            rank = len(_shape(ins[0]))
            if axis not in (-1, rank - 1, [-1], [rank - 1]):
                return other(f"{path} normalises an axis other than the channels")
            self._record(layer, path, kind, spaces[0], spaces[0], spatial)
            return [spaces[0]]
        if kind == "activation":
            name = getattr(layer.activation, "__name__", str(layer.activation))
            if name in _CHANNEL_MIXING_ACTIVATIONS:
                return other(f"{path} applies {name} across channels")
            return [spaces[0]]
        if kind == "elementwise":
            if any(w is not None for w in layer.weights):
                return other(f"{path} has per-channel weights tflight does not slice")
            if type(layer).__name__ == "Softmax":
                return other(f"{path} applies softmax across channels")
            return [spaces[0]]
        if kind == "rescaling":
            if np.size(layer.scale) == 1 and np.size(layer.offset) == 1:
                return [spaces[0]]
            return other(f"{path} rescales per channel")
        if kind == "merge":
            shapes = [_shape(t) for t in ins]
            if not all(isinstance(s, _Leaf) for s in spaces) or len({s[-1] for s in shapes}) != 1:
                return other(f"{path} merges tensors whose channels tflight cannot align")
            for s in spaces[1:]:
                self._union(spaces[0].gid, s.gid)
            return [spaces[0]]
        if kind == "concat":
            rank = len(_shape(ins[0]))
            if layer.axis in (-1, rank - 1):
                return [_Concat(tuple(spaces))]
            if all(isinstance(s, _Leaf) for s in spaces):
                for s in spaces[1:]:
                    self._union(spaces[0].gid, s.gid)
                return [spaces[0]]
            return other(f"{path} concatenates along another axis")
        if kind == "flatten":
            in_shape = _shape(ins[0])
            times = int(np.prod([d or 0 for d in in_shape[1:-1]])) if len(in_shape) > 2 else 1
            if times == 0:
                return other(f"{path} flattens a feature map of unknown size")
            return [spaces[0] if times == 1 else _Repeat(spaces[0], times)]
        if kind == "reshape":
            in_shape, target = _shape(ins[0]), tuple(layer.target_shape)
            same_channels = target and target[-1] == in_shape[-1]
            if same_channels and np.prod(in_shape[1:-1]) == np.prod(target[:-1]):
                self._record(layer, path, kind, spaces[0], spaces[0], spatial)
                return [spaces[0]]
            return other(f"{path} reshapes the channel axis")
        return other(f"{path} ({type(layer).__name__}) is a layer structural pruning cannot follow")

    # ---- queries -----------------------------------------------------------------------
    def groups(self) -> list[ChannelGroup]:
        """Every group (after merging), in creation order."""
        return [g for gid, g in self._groups.items() if self.find(gid) == gid]

    def prunable_groups(self) -> list[ChannelGroup]:
        """Groups that can be cut."""
        return [g for g in self.groups() if g.prunable]

    def group_of_layer(self, name: str) -> ChannelGroup:
        """The group of a layer's output channels, by layer name or path.

        Raises:
          UnsupportedLayerError: no such layer, or its output channels form no group.
        """
        for rec in self.layers.values():
            if name in (rec.path, rec.layer.name):
                if rec.kind in ("conv", "dense", "separable"):
                    return self.group(self._producer_gid[id(rec.layer)])
                raise UnsupportedLayerError(
                    f"Layer {name!r} ({type(rec.layer).__name__}) has no output channels of its own "
                    "to cut; name a Conv, SeparableConv2D or Dense layer instead."
                )
        raise UnsupportedLayerError(
            f"No layer named {name!r} that structural pruning can cut in model "
            f"{self.model.name!r}; cuttable layers: "
            f"{sorted(r.path for r in self.layers.values() if r.kind in ('conv', 'dense', 'separable'))}."
        )

    def macs(self, keep: dict[int, np.ndarray] | None = None, *, params: bool = False) -> int:
        """Multiply-accumulates (or parameters) of the convolutions and Dense layers.

        Args:
          keep: kept channel indices per group id (missing groups are whole).
          params: count parameters instead of MACs.
        """
        keep = keep or {}
        total = 0
        for rec in self.layers.values():
            if rec.kind not in ("conv", "dense", "separable", "depthwise"):
                continue
            cin = len(self.keep_indices(rec.in_space, keep))
            cout = len(self.keep_indices(rec.out_space, keep))
            k = int(np.prod(getattr(rec.layer, "kernel_size", (1,))))
            if rec.kind == "depthwise":
                per = k * cin
            elif rec.kind == "separable":
                m = rec.layer.depth_multiplier
                per = k * cin * m + cin * m * cout
            else:
                per = k * cin * cout
            if params:
                total += per + (cout if getattr(rec.layer, "use_bias", False) else 0)
            else:
                total += per * sum(rec.spatial)
        return int(total)
