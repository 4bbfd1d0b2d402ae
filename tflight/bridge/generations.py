"""The two Keras generations the bridge moves between, and what differs in their graphs.

A bridge direction goes from a source generation to a target one. The rebuild
(`tflight.bridge.rebuild`) is written once; everything it needs to know about
a generation lives here: how a model's inputs and graph nodes are read, which
nested-structure helpers apply to its tensors, and how an input, a Sequential
or a Functional model of it is built.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator
from typing import Any

from tflight._keras import keras, tf, tf_keras, tf_keras_internal
from tflight.errors import BridgeError

__all__ = ["Direction", "Generation", "KERAS3", "TF_KERAS", "source_of", "target_of",
           "tfk_tensor_type"]


class Direction(enum.StrEnum):
    """Which way a translation goes; the values are the words `register` accepts."""

    TO_TF_KERAS = "to_tf_keras"
    TO_KERAS3 = "to_keras3"


def tfk_tensor_type() -> type:
    """tf_keras' symbolic tensor class."""
    return tf_keras_internal("engine.keras_tensor").KerasTensor


class Generation:
    """How one Keras generation's models are read (as a source) and built (as a target).

    Attributes:
        label: The generation's name in messages ("Keras 3", "tf_keras").
        package: The top-level package its built-in classes come from.
        register_hint: How a message tells the user to register a translation
            into this generation.
    """

    label: str
    package: str
    register_hint: str
    # A Sequential model without inputs cannot be rebuilt; how to fix that.
    _no_inputs_fix: str

    def module(self) -> Any:
        """The generation's Keras module (`keras` or `tf_keras`)."""
        raise NotImplementedError

    # -- reading a source model ------------------------------------------

    def is_sequential(self, model: Any) -> bool:
        return isinstance(model, self.module().Sequential)

    def is_functional(self, model: Any) -> bool:
        raise NotImplementedError

    def is_tensor(self, value: Any) -> bool:
        raise NotImplementedError

    map_structure: Callable[..., Any]
    flatten: Callable[[Any], list[Any]]
    pack: Callable[[Any, list[Any]], Any]

    def inputs(self, model: Any) -> list[tuple[Any, dict[str, Any]]]:
        """The model's input tensors, each with the arguments that remake it."""
        raise NotImplementedError

    def _no_inputs(self, model: Any) -> BridgeError:
        return BridgeError(
            f"Model '{model.name}' has no defined inputs yet; build it on an input shape"
            f"{self._no_inputs_fix} before bridging it."
        )

    def nodes(self, model: Any) -> Iterator[tuple[Any, Any, list[Any], dict[str, Any], list[Any]]]:
        """`(node, operation, args, kwargs, outputs)` of each call in the graph, inputs first."""
        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if not node.is_input:
                    yield (node, *self._node(node))

    def _node(self, node: Any) -> tuple[Any, list[Any], dict[str, Any], list[Any]]:
        raise NotImplementedError

    def structures(self, model: Any) -> tuple[Any, Any]:
        """The nesting (tensor, list, dict) of the model's inputs and of its outputs."""
        raise NotImplementedError

    # -- building a target model -----------------------------------------

    def input(self, spec: dict[str, Any]) -> Any:
        """A symbolic input remade from `spec` (shape, batch_size, dtype, sparse, name)."""
        return self.module().Input(**spec)

    def sequential(self, name: str, spec: dict[str, Any]) -> Any:
        raise NotImplementedError

    def model(self, inputs: Any, outputs: Any, name: str) -> Any:
        return self.module().Model(inputs=inputs, outputs=outputs, name=name)


class _Keras3(Generation):
    label = "Keras 3"
    package = "keras"
    register_hint = "tflight.bridge.register(..., direction='to_keras3')"
    _no_inputs_fix = " (start it with keras.Input(...))"

    def module(self) -> Any:
        return keras

    def is_functional(self, model: Any) -> bool:
        return hasattr(model, "_nodes_by_depth") and bool(getattr(model, "_nodes_by_depth", None))

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, keras.KerasTensor)

    def map_structure(self, fn: Callable[[Any], Any], value: Any) -> Any:
        return keras.tree.map_structure(fn, value)

    def flatten(self, value: Any) -> list[Any]:
        return keras.tree.flatten(value)

    def pack(self, structure: Any, flat: list[Any]) -> Any:
        return keras.tree.pack_sequence_as(structure, flat)

    def inputs(self, model: Any) -> list[tuple[Any, dict[str, Any]]]:
        try:
            tensors = list(model.inputs)
        except (AttributeError, ValueError) as e:
            raise self._no_inputs(model) from e
        return [
            (
                t,
                {
                    "shape": tuple(t.shape)[1:],
                    "batch_size": t.shape[0],
                    "dtype": t.dtype,
                    "sparse": bool(getattr(t, "sparse", False)),
                    "name": t._keras_history[0].name,
                },
            )
            for t in tensors
        ]

    def _node(self, node: Any) -> tuple[Any, list[Any], dict[str, Any], list[Any]]:
        op = node.operation
        kwargs = dict(node.arguments.kwargs)
        if isinstance(op, keras.layers.Layer):
            # Keras 3 records `training=False` on every layer whose call takes
            # it and replaces it with the model's own mode at call time;
            # tf_keras would honour it and pin Dropout, RNNs (and the pruning
            # mask updates inside them) to inference mode during training.
            kwargs.pop("training", None)
        return op, list(node.arguments.args), kwargs, list(node.outputs)

    def structures(self, model: Any) -> tuple[Any, Any]:
        return model._inputs_struct, model._outputs_struct

    def sequential(self, name: str, spec: dict[str, Any]) -> Any:
        new = keras.Sequential(name=name)
        new.add(keras.Input(**{k: v for k, v in spec.items() if k != "sparse"}))
        return new


class _TfKeras(Generation):
    label = "tf_keras"
    package = "tf_keras"
    register_hint = "tflight.bridge.register(...)"
    _no_inputs_fix = ""

    def module(self) -> Any:
        return tf_keras()

    def is_functional(self, model: Any) -> bool:
        return bool(getattr(model, "_is_graph_network", False))

    def is_tensor(self, value: Any) -> bool:
        return isinstance(value, tfk_tensor_type())

    def map_structure(self, fn: Callable[[Any], Any], value: Any) -> Any:
        return tf.nest.map_structure(fn, value)

    def flatten(self, value: Any) -> list[Any]:
        return tf.nest.flatten(value)

    def pack(self, structure: Any, flat: list[Any]) -> Any:
        return tf.nest.pack_sequence_as(structure, flat)

    def inputs(self, model: Any) -> list[tuple[Any, dict[str, Any]]]:
        if not model.inputs:
            raise self._no_inputs(model)
        return [
            (
                t,
                {
                    "shape": tuple(t.shape)[1:],
                    "batch_size": t.shape[0],
                    "dtype": t.dtype.name,
                    "sparse": isinstance(t.type_spec, tf.SparseTensorSpec),
                    "name": layer.name,
                },
            )
            for layer, t in zip(model._input_layers, model.inputs, strict=True)
        ]

    def _node(self, node: Any) -> tuple[Any, list[Any], dict[str, Any], list[Any]]:
        return (
            node.layer,
            list(node.call_args),
            dict(node.call_kwargs),
            tf.nest.flatten(node.outputs),
        )

    def structures(self, model: Any) -> tuple[Any, Any]:
        return model._nested_inputs, model._nested_outputs

    def sequential(self, name: str, spec: dict[str, Any]) -> Any:
        tfk = tf_keras()
        new = tfk.Sequential(name=name)
        new.add(
            tfk.layers.InputLayer(
                input_shape=spec["shape"],
                batch_size=spec["batch_size"],
                dtype=spec["dtype"],
                name=spec["name"],
            )
        )
        return new


KERAS3: Generation = _Keras3()
TF_KERAS: Generation = _TfKeras()


def source_of(direction: Direction) -> Generation:
    """The generation a direction starts from."""
    return KERAS3 if direction is Direction.TO_TF_KERAS else TF_KERAS


def target_of(direction: Direction) -> Generation:
    """The generation a direction builds."""
    return TF_KERAS if direction is Direction.TO_TF_KERAS else KERAS3
