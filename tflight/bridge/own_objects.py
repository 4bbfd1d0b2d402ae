"""The bridge's own objects inside bridged models, and the graph operations they carry.

Keras 3 graphs hold operations that are not layers (`x + 3.0`, `keras.ops.*`
on symbolic tensors); tf_keras graphs hold `TFOpLambda` layers calling a
TensorFlow function. Neither has a node of that kind in the other generation,
so the bridge carries them in layers of its own: `KerasOperation` (tf_keras,
running the very same Keras 3 operation) and `TFOperation` (Keras 3, running
the same TensorFlow function), whose constant call arguments are kept in a
JSON-safe template. `Keras3Activation` carries a Keras 3 activation tf_keras
lacks. Saved bridged models name these objects; loading rebuilds only the
operations on the allowlists of `tflight.bridge.ops`.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tflight._keras import keras, tf, tf_keras
from tflight.bridge.generations import tfk_tensor_type
from tflight.bridge.ops import check_keras_operation, tf_operation, tf_operation_allowed
from tflight.errors import UnsupportedLayerError

__all__ = ["TF_KERAS_PACKAGE", "tfk_support", "k3_support", "custom_objects", "plain",
           "keras_operation", "tf_operation_layer", "unwrap_keras_operation"]

TF_KERAS_PACKAGE = "tflight_tf_keras"  # Keras 3 names of tf_keras activations


@functools.cache
def tfk_support() -> Any:
    """Defines (once) the tf_keras classes and functions the bridge needs."""
    tfk = tf_keras()
    ns = type("_TfKerasSupport", (), {})()

    class KerasOperation(tfk.layers.Layer):
        """Runs one Keras 3 operation (e.g. `x + 3.0`) inside a tf_keras model.

        Keras 3 graphs contain operations that are not layers; tf_keras has no
        such node, so this layer holds the operation and its constant
        arguments, and calls it on its tensor inputs. With the TensorFlow
        backend a Keras 3 operation runs on TensorFlow tensors directly, so
        the result is the one the Keras 3 model computes.
        """

        def __init__(self, operation: Any, template: Any, **kwargs: Any) -> None:
            kwargs.setdefault("autocast", False)
            super().__init__(**kwargs)
            if isinstance(operation, Mapping):
                # From a saved file: only Keras' own operations are rebuilt.
                check_keras_operation(operation)
                operation = keras.saving.deserialize_keras_object(dict(operation))
            self.operation = operation
            self.template = _decode(plain(template))

        @tf.autograph.experimental.do_not_convert
        def call(self, inputs: Any, **unused: Any) -> Any:
            args, kwargs = _fill_template(self.template, _as_list(inputs))
            return self.operation(*args, **kwargs)

        def get_prunable_weights(self) -> list[Any]:
            # No weights; lets TF-MOT's pruning wrapper pass over the layer.
            return []

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config["operation"] = keras.saving.serialize_keras_object(self.operation)
            config["template"] = _encode(plain(self.template))
            return config

    ns.KerasOperation = tfk.saving.register_keras_serializable(package="tflight")(KerasOperation)

    class Keras3Activation:
        """A Keras 3 activation (by name) usable as a tf_keras activation.

        A serializable object rather than a bare function: tf_keras writes
        registered functions to HDF5 in a form it cannot read back, and a
        plain name would resolve to tf_keras' own function of that name,
        which can differ (hard_sigmoid).
        """

        def __init__(self, name: str) -> None:
            self.name = name
            self.__name__ = name
            self._fn = keras.activations.get(name)

        def __call__(self, x: Any) -> Any:
            return self._fn(x)

        def get_config(self) -> dict[str, Any]:
            return {"name": self.name}

        def __repr__(self) -> str:
            # Messages (TF-MOT's among them) show the activation by its name.
            return self.name

        @classmethod
        def from_config(cls, config: dict[str, Any]) -> Keras3Activation:
            return cls(**config)

    ns.Keras3Activation = tfk.saving.register_keras_serializable(package="tflight")(
        Keras3Activation
    )
    ns.wrap_activation = functools.cache(Keras3Activation)
    # tf_keras reads HDF5 configs with its legacy loader, which looks classes
    # up by their bare name rather than the registered "package>name".
    custom = tfk.utils.get_custom_objects()
    custom.setdefault("KerasOperation", KerasOperation)
    custom.setdefault("Keras3Activation", Keras3Activation)
    # tf_keras' `.keras` loader imports the module a class was saved from and
    # looks the class up there.
    globals().update(KerasOperation=KerasOperation, Keras3Activation=Keras3Activation)
    return ns


@functools.cache
def k3_support() -> Any:
    """Defines (once) the Keras 3 classes and functions the reverse bridge needs."""
    ns = type("_Keras3Support", (), {})()

    @keras.saving.register_keras_serializable(package="tflight")
    class TFOperation(keras.layers.Layer):
        """Runs one TensorFlow function from a tf_keras `TFOpLambda` in Keras 3."""

        def __init__(self, symbol: str, template: Any, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # Checked against the bridge's allowlist: a saved file names it.
            self._fn = tf_operation(symbol)
            self.symbol = symbol
            self.template = plain(template)

        @tf.autograph.experimental.do_not_convert
        def call(self, inputs: Any, **unused: Any) -> Any:
            args, kwargs = _fill_template(self.template, _as_list(inputs))
            return self._fn(*args, **kwargs)

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config.update(symbol=self.symbol, template=plain(self.template))
            return config

    ns.TFOperation = TFOperation

    # tf_keras' hard_sigmoid is clip(0.2 x + 0.5, 0, 1); Keras 3's is relu6(x + 3) / 6.
    @keras.saving.register_keras_serializable(package=TF_KERAS_PACKAGE, name="hard_sigmoid")
    def hard_sigmoid(x: Any) -> Any:
        return keras.ops.clip(0.2 * x + 0.5, 0.0, 1.0)

    ns.tf_keras_activations = {"hard_sigmoid": hard_sigmoid}
    globals()["TFOperation"] = TFOperation  # found by Keras' loader, as above
    return ns


def custom_objects() -> dict[str, Any]:
    """The bridge's own layers and functions, for loading bridged models.

    A model made by the bridge and saved contains its graph-operation layers
    (`KerasOperation` in tf_keras, `TFOperation` in Keras 3) and Keras 3
    activations tf_keras lacks. `.keras` files find them by themselves once
    `tflight.bridge` can be imported; tf_keras' HDF5 loader needs them
    registered first, which calling this function does.

    Returns:
        `{name: class or function}`, to pass as `custom_objects` to
        `keras.saving.load_model` or `tf_keras.models.load_model`.

    Example:
        >>> model = tf_keras.models.load_model("bridged.h5",
        ...                                    custom_objects=tflight.bridge.custom_objects())
    """
    tfk_side, k3_side = tfk_support(), k3_support()
    return {
        "KerasOperation": tfk_side.KerasOperation,
        "Keras3Activation": tfk_side.Keras3Activation,
        "TFOperation": k3_side.TFOperation,
        f"{TF_KERAS_PACKAGE}>hard_sigmoid": k3_side.tf_keras_activations["hard_sigmoid"],
    }


def _make_template(args: Any, kwargs: Any, is_tensor: Callable[[Any], bool]) -> tuple[Any, list]:
    tensors: list[Any] = []

    def walk(value: Any) -> Any:
        if is_tensor(value):
            tensors.append(value)
            return {"__tensor__": len(tensors) - 1}
        if isinstance(value, (list, tuple)):
            return type(value)(walk(v) for v in value) if not hasattr(value, "_fields") else value
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return {"args": walk(list(args)), "kwargs": walk(dict(kwargs))}, tensors


def _fill_template(template: Any, tensors: list[Any]) -> tuple[list, dict]:
    # Layers wrap attributes in tracking containers (ListWrapper, _DictWrapper),
    # so test for the abstract types and rebuild plain ones.
    def walk(value: Any) -> Any:
        if isinstance(value, Mapping):
            if set(value) == {"__tensor__"}:
                return tensors[value["__tensor__"]]
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, tuple):
            return tuple(walk(v) for v in value)
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            return [walk(v) for v in value]
        return value

    return walk(template["args"]), walk(template["kwargs"])


def _encode(value: Any) -> Any:
    """Makes constant call arguments JSON-safe (tuples, slices, arrays), for saving."""
    if isinstance(value, Mapping):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return {"__tuple__": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, slice):
        return {"__slice__": [_encode(value.start), _encode(value.stop), _encode(value.step)]}
    if value is Ellipsis:
        return {"__ellipsis__": True}
    if tf.is_tensor(value) and hasattr(value, "numpy"):  # an eager constant
        value = value.numpy()
    if isinstance(value, (np.ndarray, np.generic)):
        return {"__array__": np.asarray(value).tolist(), "dtype": str(np.asarray(value).dtype)}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, Mapping):
        keys = set(value)
        if keys == {"__tuple__"}:
            return tuple(_decode(v) for v in value["__tuple__"])
        if keys == {"__slice__"}:
            return slice(*(_decode(v) for v in value["__slice__"]))
        if keys == {"__ellipsis__"}:
            return Ellipsis
        if keys == {"__array__", "dtype"}:
            return np.asarray(value["__array__"], dtype=value["dtype"])
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


def _as_list(inputs: Any) -> list[Any]:
    # A one-tensor list can come back unwrapped (tf_keras does so when cloning).
    return list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]


def plain(value: Any) -> Any:
    """`value` with tracking containers turned back into lists and dicts."""
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value


def _copy_operation(op: Any) -> Any:
    """A fresh Keras 3 operation with the same config, so the source is left alone."""
    try:
        return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(op))
    except Exception:  # noqa: BLE001 - an operation without a config is used as is
        return op


def keras_operation(op: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Calls a Keras 3 graph operation in a tf_keras graph, held by a `KerasOperation`."""
    template, flat = _make_template(args, kwargs, lambda v: isinstance(v, tfk_tensor_type()))
    return tfk_support().KerasOperation(_copy_operation(op), template, name=op.name)(flat)


def unwrap_keras_operation(layer: Any, args: list[Any]) -> Any:
    """Calls the Keras 3 operation a `KerasOperation` holds (a fresh copy) in a Keras 3 graph."""
    op_args, op_kwargs = _fill_template(layer.template, _as_list(args[0]))
    return _copy_operation(layer.operation)(*op_args, **op_kwargs)


def tf_operation_layer(layer: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    """Calls a tf_keras `TFOpLambda`'s TensorFlow function in a Keras 3 graph (`TFOperation`).

    Raises:
        UnsupportedLayerError: If the function is not on the bridge's allowlist.
    """
    if not tf_operation_allowed(layer.symbol):
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' calls tf.{layer.symbol}, which is not among "
            "the TensorFlow functions the bridge rebuilds in Keras 3 (tensor "
            "math, array, nn, image resizing; see "
            "tflight._bridge_ops.TF_OPERATIONS). Rewrite that step with a "
            "layer, or register a translation with tflight.bridge.register("
            f"lambda layer: getattr(layer, 'symbol', None) == '{layer.symbol}', "
            "translate, direction='to_keras3')."
        )
    kwargs.pop("name", None)
    template, flat = _make_template(args, kwargs, lambda v: isinstance(v, keras.KerasTensor))
    return k3_support().TFOperation(layer.symbol, template, name=layer.name)(flat)


# Saved bridged models name these layers; make them loadable as soon as the
# module is imported (Keras' loaders import it by the module name in a file).
k3_support()
if "tf_keras" in sys.modules:
    tfk_support()
