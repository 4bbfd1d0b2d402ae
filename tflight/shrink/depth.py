"""Depth pruning: drop whole residual blocks.

On small inputs a mobile network's latency is mostly the fixed cost of each
op, not its multiply-accumulates: cutting channels then barely moves it, and
only fewer ops do. A residual block computes `y = x + f(x)`; dropping `f`
leaves `y = x`, a valid network one block shallower (the shortcut carries the
signal past it), which fine-tuning — best with distillation from the full
model — recovers. `residual_blocks` finds such blocks in a Keras 3 Functional
graph (an `Add` of a tensor and a branch computed from it alone),
`rank_blocks` measures how much each one changes the predictions when dropped
on its own, and `drop_blocks` builds the shallower model (weights copied, the
original untouched).

Only blocks at the top level of the graph are found: a nested backbone's
blocks are not (its `Add` layers live inside another model).

References:
  Veit et al. "Residual Networks Behave Like Ensembles of Relatively Shallow
  Networks", NeurIPS 2016.
  Huang et al. "Deep Networks with Stochastic Depth", ECCV 2016.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

import numpy as np

from tflight.errors import CompressionError

__all__ = ["ResidualBlock", "drop_blocks", "rank_blocks", "residual_blocks"]


@dataclasses.dataclass(frozen=True)
class ResidualBlock:
    """A block `y = x + f(x)` that can be dropped (`y = x`).

    Attributes:
      name: the name of its `Add` layer.
      skip: which input of the `Add` is the shortcut `x` (0 or 1).
      layers: the layers of the branch `f`, dropped with it.
      params: their parameters.
    """

    name: str
    skip: int
    layers: tuple[str, ...]
    params: int


def _producer(tensor: Any) -> Any:
    history = getattr(tensor, "_keras_history", None)
    if history is None:
        return None
    op, node_index, _ = history
    return op._inbound_nodes[node_index]


def _branch(start: Any, end: Any) -> set[Any] | None:
    """The operations computing `end` from `start` alone, or None if `end` needs anything else."""
    ops: set[Any] = set()
    stack, seen = [end], set()
    while stack:
        t = stack.pop()
        if id(t) == id(start):
            continue
        if id(t) in seen:
            continue
        seen.add(id(t))
        node = _producer(t)
        if node is None or node.is_input or not node.input_tensors:
            return None  # reaches an input or a constant without passing `start`
        ops.add(node.operation)
        stack.extend(node.input_tensors)
    return ops


def residual_blocks(model: Any) -> list[ResidualBlock]:
    """The droppable residual blocks of a Keras 3 Functional model, in graph order.

    A block is an `Add` of two tensors where one (the branch) is computed
    from the other (the shortcut) alone, the branch's layers feed nothing
    outside it, and the shortcut has the `Add`'s shape.
    """
    import keras

    if not getattr(model, "_nodes_by_depth", None) or isinstance(model, keras.Sequential):
        return []
    blocks = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if not isinstance(op, keras.layers.Add) or len(node.input_tensors) != 2:
                continue
            a, b = node.input_tensors
            for skip, (short, long) in enumerate(((a, b), (b, a))):
                ops = _branch(short, long)
                if not ops or tuple(short.shape) != tuple(node.outputs[0].shape):
                    continue
                inner = ops | {op}
                if any(o is model or any(n.operation not in inner for n in o._outbound_nodes)
                       for o in ops):
                    continue  # a branch layer also feeds something else
                if any(len(o._inbound_nodes) != 1 for o in ops):
                    continue  # a shared layer: dropping it here would change another use
                names = tuple(sorted(o.name for o in ops))
                params = int(sum(np.prod(w.shape) for o in ops for w in o.weights))
                blocks.append(ResidualBlock(op.name, skip, names, params))
                break
    return blocks


def drop_blocks(model: Any, names: Iterable[str]) -> Any:
    """A copy of `model` without the residual blocks named (by their `Add` layer).

    Args:
      model: a Keras 3 Functional model (left unchanged).
      names: `ResidualBlock.name`s from `residual_blocks(model)`.

    Returns:
      A new Functional model with the remaining layers' weights copied.

    Raises:
      CompressionError: a name is not a droppable residual block.
    """
    import keras
    from keras import tree

    names = list(names)
    blocks = {b.name: b for b in residual_blocks(model)}
    unknown = [n for n in names if n not in blocks]
    if unknown:
        raise CompressionError(
            f"{unknown} are not droppable residual blocks of {model.name!r}; choose from "
            f"{sorted(blocks) or 'none (it has no residual block)'}.",
            option="names", kind="not_applicable",
        )
    clone = keras.models.clone_model(model)
    clone.set_weights(model.get_weights())
    skip = {n: blocks[n].skip for n in names}

    def operation_fn(op: Any) -> Any:
        if op.name in skip:
            i = skip[op.name]
            return lambda inputs, *args, **kwargs: inputs[i]
        return op

    inputs = [keras.Input(batch_shape=t.shape, dtype=t.dtype, name=_producer(t).operation.name)
              for t in clone.inputs]
    outputs = clone._run_through_graph(inputs, operation_fn=operation_fn)
    return keras.Model(tree.pack_sequence_as(clone._inputs_struct, inputs), outputs,
                       name=model.name)


def rank_blocks(model: Any, x: Any, *, batch_size: int = 64) -> list[tuple[str, float]]:
    """Each residual block with the top-1 agreement of the model without it, least harmful first.

    Measured against the full model's own predictions on `x` (no labels: use
    training or calibration data, never the data a result is judged on).
    Ties go to the block with the smaller output change.
    """
    reference = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    ranked = []
    for block in residual_blocks(model):
        out = np.asarray(drop_blocks(model, [block.name]).predict(x, batch_size=batch_size,
                                                                    verbose=0))
        agree = float(np.mean(np.argmax(out, -1) == np.argmax(reference, -1)))
        change = float(np.mean((out - reference) ** 2))
        ranked.append((block.name, agree, change))
    ranked.sort(key=lambda r: (-r[1], r[2]))
    return [(name, agree) for name, agree, _ in ranked]
