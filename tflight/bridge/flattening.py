"""Nested models inlined into one graph, so that compression reaches every layer.

TF-MOT wraps the *top-level* layers of a model: a `keras.applications`
backbone used as one layer of a transfer-learning model, or the nested
Functional blocks of a keras-hub backbone, are one opaque layer to it. `flatten`
rebuilds a tf_keras Functional/Sequential model as a single Functional graph in
which every nested Functional or Sequential sub-model is replaced by its own
layers, called on the same tensors:

* the layers (and so their weights) are the model's own objects, reused, not
  re-initialised: flatten the library's copy, never the user's model;
* a layer inside a frozen sub-model (`trainable=False` on any enclosing model)
  is frozen itself, so "the backbone is frozen" keeps meaning its weights are
  not trained (and its BatchNormalization layers run in inference mode);
* the nested models' `InputLayer`s disappear (their tensors are the outer
  ones); a layer name used twice is prefixed with its sub-model's name.

Layers that hold other layers but are not Functional/Sequential models (e.g. a
subclassed block) stay as they are; the technique that meets them reports them.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

from tflight._keras import is_tf_keras_model, tf, tf_keras

__all__ = ["FlattenResult", "flatten"]


@dataclasses.dataclass(frozen=True)
class FlattenResult:
    """What `flatten` did.

    Attributes:
      model: the flat tf_keras model (the input itself if nothing was nested).
      inlined: names of the nested models replaced by their layers.
      frozen: names of layers frozen because an enclosing model was frozen.
      renamed: `{new name: old name}` for layers renamed to stay unique.
    """

    model: Any
    inlined: tuple[str, ...]
    frozen: tuple[str, ...]
    renamed: dict[str, str]


def _graph(model: Any) -> bool:
    return bool(getattr(model, "_is_graph_network", False))


def _nested(model: Any) -> bool:
    return any(is_tf_keras_model(layer) for layer in model.layers)


def flatten(model: Any) -> FlattenResult:
    """Inlines the nested Functional/Sequential sub-models of a tf_keras model.

    Args:
      model: a tf_keras Functional or Sequential model (changed in place: its
        layers are reused by the flat model; pass a copy).

    Returns:
      A `FlattenResult`; `result.model is model` when nothing is nested.

    Raises:
      ValueError: a nested model is subclassed (its graph is not known).
    """
    if not _nested(model):
        return FlattenResult(model=model, inlined=(), frozen=(), renamed={})
    inlined: list[str] = []
    frozen: list[str] = []
    renamed: dict[str, str] = {}
    seen: dict[str, Any] = {}

    def claim(layer: Any, scope: str) -> None:
        """Keeps layer names unique across the flat graph."""
        if seen.get(layer.name) is layer:
            return
        if layer.name in seen:
            old = layer.name
            new = f"{scope}_{old}" if scope else old
            i = 1
            while new in seen:
                new, i = f"{scope}_{old}_{i}", i + 1
            layer._name = new
            renamed[new] = old
        seen[layer.name] = layer

    def call_layer(layer: Any, args: tuple, kwargs: dict, scope: str, frozen_above: bool) -> Any:
        if is_tf_keras_model(layer):
            inlined.append(layer.name)
            inner_frozen = frozen_above or not layer.trainable
            inputs = args[0] if args else kwargs.pop("inputs")
            kwargs = {k: v for k, v in kwargs.items() if k not in ("training", "mask")}
            if kwargs or len(args) > 1:
                raise ValueError(
                    f"nested model {layer.name!r} is called with extra arguments "
                    f"{sorted(kwargs)}; only its inputs can be inlined"
                )
            return run(layer, inputs, layer.name, inner_frozen)
        if frozen_above and layer.trainable:
            layer.trainable = False
            if layer.weights:
                frozen.append(layer.name)
        claim(layer, scope)
        return layer(*args, **kwargs)

    def run(sub: Any, inputs: Any, scope: str, frozen_above: bool) -> Any:
        if not _graph(sub):
            if isinstance(sub, tf_keras().Sequential):
                x = inputs
                for layer in sub.layers:
                    x = call_layer(layer, (x,), {}, scope, frozen_above)
                return x
            raise ValueError(
                f"nested model {sub.name!r} is a subclassed {type(sub).__qualname__}; "
                "only Functional and Sequential sub-models can be inlined"
            )
        flat_in = sub._flatten_to_reference_inputs(inputs)
        values: dict[str, Any] = {}
        for ref, value in zip(sub.inputs, flat_in, strict=True):
            values[str(id(ref))] = value
        for depth in sorted(sub._nodes_by_depth, reverse=True):
            for node in sub._nodes_by_depth[depth]:
                if node.is_input or any(i not in values for i in node.flat_input_ids):
                    continue
                flat_args = copy.copy(node._flat_arguments)
                for kt_id, index in node._keras_inputs_ids_and_indices:
                    flat_args[index] = values[kt_id]
                args, kwargs = tf.nest.pack_sequence_as(
                    (node.call_args, node.call_kwargs.values()), flat_args
                )
                kwargs = dict(zip(node.call_kwargs.keys(), kwargs, strict=True))
                outputs = call_layer(node.layer, tuple(args), kwargs, scope, frozen_above)
                for out_id, value in zip(
                    node.flat_output_ids, tf.nest.flatten(outputs), strict=True
                ):
                    values[out_id] = value
        outs = [values[str(id(ref))] for ref in sub.outputs]
        return tf.nest.pack_sequence_as(sub._nested_outputs, outs)

    k = tf_keras()
    if _graph(model):
        for inp in model.inputs:
            seen[inp.node.layer.name] = inp.node.layer
        inputs = model._nested_inputs
        outputs = run(model, inputs, "", not model.trainable)
    else:  # a Sequential without a known input shape cannot be rebuilt
        raise ValueError(
            f"model {model.name!r} is a Sequential without an input shape; build it with "
            "`keras.Input(...)` first"
        )
    flat = k.Model(inputs, outputs, name=model.name)
    return FlattenResult(model=flat, inlined=tuple(inlined), frozen=tuple(frozen), renamed=renamed)
