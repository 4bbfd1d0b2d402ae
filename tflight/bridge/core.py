"""Rebuild Keras 3 models in tf_keras (Keras 2) and back, with the same weights.

TF-MOT (pruning, quantization-aware training, clustering) only accepts tf_keras
models, and a Keras 3 model's saved config does not load in tf_keras as is. The
bridge walks the model's graph, translates every layer's config (dtype policies,
initializers, activations whose meaning changed between generations, options one
generation lacks), calls the translated layers in the same order with the same
wiring (shared layers stay shared, nested models stay nested), copies the weights
layer by layer, and then checks that both models give the same outputs on random
inputs.

Graph operations that are not layers (`x + 3.0`, `keras.ops.*` on symbolic
tensors, as in the MobileNetV3 and ConvNeXt graphs) become a small tf_keras layer
that runs the very same Keras operation, so the numbers do not move. The reverse
direction, `to_keras3`, undoes this exactly and also takes tf_keras' own
`TFOpLambda` layers.

Saved bridged models name these operations; loading rebuilds only those on
the bridge's explicit allowlists (`tflight._bridge_ops`), so a crafted file
cannot make a load run other TensorFlow functions or Keras objects.

keras-hub layers made of other layers (the blocks of its CNN backbones) are
rebuilt from the layers and operations their `call` uses, as a nested
Functional model of the same inner layers; `register(MyBlock, inline)` does
the same for a user's block.

Layers the bridge does not know (custom layers, subclassed models) raise
`UnsupportedLayerError`. Users can teach it their own layers with `register`,
which is keyed on a predicate, so subclasses are covered by the same rule.
For the compression code, `quantize_config` and `unsupported_advice` describe
the layers the bridge makes that TF-MOT does not know.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import importlib
import inspect
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tflight._keras import (
    is_keras3_model,
    is_tf_keras_model,
    keras,
    tf,
    tf_keras,
    tf_keras_internal,
    tfmot_internal,
)
from tflight.bridge.ops import check_keras_operation, tf_operation, tf_operation_allowed
from tflight.errors import BridgeError, UnsupportedLayerError

__all__ = [
    "Direction",
    "Translation",
    "BridgeReport",
    "register",
    "unregister",
    "inline",
    "to_tf_keras",
    "to_keras3",
    "compare",
    "report_of",
    "unsupported_advice",
    "quantize_config",
    "custom_objects",
]

_DEFAULT_ATOL = 1e-5
# Size given to unknown (None) non-batch dimensions when making random inputs.
_FREE_DIM = 32


class Direction(enum.StrEnum):
    """Which way a translation goes; the values are the words `register` accepts."""

    TO_TF_KERAS = "to_tf_keras"
    TO_KERAS3 = "to_keras3"


@dataclasses.dataclass(frozen=True)
class Translation:
    """A user translation of one kind of layer, chosen by a predicate.

    Attributes:
        matches: Called with a source layer; True if `translate` handles it.
        translate: Called with the source layer; returns a new, unbuilt layer of
            the target Keras generation. The bridge calls it on the same inputs
            and then copies the source layer's weights into it in order, so the
            new layer must create the same weights, in the same order and shapes.
        direction: Which generation the source layer belongs to.
        name: A label used in messages.
    """

    matches: Callable[[Any], bool]
    translate: Callable[[Any], Any]
    direction: Direction = Direction.TO_TF_KERAS
    name: str = ""

    def __post_init__(self) -> None:
        if not callable(self.matches):
            raise BridgeError(
                f"Translation.matches must be a callable taking a layer, got {self.matches!r}."
            )
        if not callable(self.translate):
            raise BridgeError(
                f"Translation.translate must be a callable taking a layer, got {self.translate!r}."
            )
        try:
            object.__setattr__(self, "direction", Direction(self.direction))
        except ValueError as e:
            raise BridgeError(
                f"Translation.direction must be one of {[d.value for d in Direction]}, "
                f"got {self.direction!r}."
            ) from e


_TRANSLATIONS: list[Translation] = []
# Class of a layer made by a user translation -> the class it was made from,
# so that `to_keras3` can undo a translation nobody registered the reverse of.
_TWIN_SOURCES: dict[type, type] = {}


def register(
    matches: Callable[[Any], bool] | type,
    translate: Callable[[Any], Any],
    *,
    direction: Direction | str = Direction.TO_TF_KERAS,
    name: str = "",
) -> Translation:
    """Teaches the bridge how to translate layers it does not know.

    Registered translations are tried before the built-in ones, newest first,
    so a user can also override how a built-in layer is translated.

    While `translate` runs, the source layer's `get_config()` returns its
    config in the target generation's form (for a Keras 3 layer: the dtype
    policy as a name, initializers and the like as tf_keras reads them), so
    `TwinClass(**layer.get_config())` works for a twin class whose constructor
    takes the same arguments. The class of the layer `translate` returns is
    made known to the target generation's deserialization (under its bare
    class name, unless it is registered already), so that TF-MOT, which clones
    models through their configs, can rebuild it; no
    `register_keras_serializable` on the twin class is needed. `to_keras3`
    turns such a twin back into the source class, rebuilt from the twin's
    config, unless a `"to_keras3"` translation for it is registered.

    Args:
        matches: A predicate on the source layer, or a class (then every
            instance of it or of a subclass matches).
        translate: Returns an unbuilt layer of the other Keras generation that
            computes the same function with the same weights layout. The
            bridge builds it on the same inputs and copies the source layer's
            weights into it, in order.
        direction: `"to_tf_keras"` (source is a Keras 3 layer) or `"to_keras3"`.
        name: A label for messages; defaults to the predicate's name.

    Returns:
        The `Translation`, which `unregister` takes.

    Raises:
        BridgeError: If `matches` or `translate` is not callable or `direction`
            is unknown.

    Example:
        >>> import keras, tf_keras, tflight
        >>> from tflight.bridge import register, report_of, unregister
        >>> @keras.saving.register_keras_serializable(package="my_layers")
        ... class Scale(keras.layers.Layer):
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight(shape=input_shape[-1:], initializer="ones")
        ...     def call(self, x):
        ...         return x * self.w
        >>> class TfKerasScale(tf_keras.layers.Layer):  # the same layer in tf_keras
        ...     def build(self, input_shape):
        ...         self.w = self.add_weight(shape=input_shape[-1:], initializer="ones")
        ...     def call(self, x):
        ...         return x * self.w
        >>> t = register(Scale, lambda layer: TfKerasScale(**layer.get_config()))
        >>> inputs = keras.Input((4,))
        >>> model = keras.Model(inputs, keras.layers.Dense(2)(Scale(name="scale")(inputs)))
        >>> tf_model = tflight.to_tf_keras(model)  # weights copied, outputs compared
        >>> report_of(tf_model).passed, type(tf_model.get_layer("scale")).__name__
        (True, 'TfKerasScale')
        >>> unregister(t)
    """
    if isinstance(matches, type):
        cls = matches
        name = name or cls.__name__

        def matches(layer: Any) -> bool:
            return isinstance(layer, cls)

    translation = Translation(
        matches=matches,
        translate=translate,
        direction=direction,
        name=name or getattr(matches, "__name__", repr(matches)),
    )
    _TRANSLATIONS.insert(0, translation)
    return translation


def inline(layer: Any) -> Any:
    """A `translate` for `register`: rebuild the layer from the layers it calls.

    For a custom layer that is a composition (its `call` uses only other
    layers and `keras.ops`, and it owns no weights itself): the bridge traces
    `call` on the layer's inputs into a Functional sub-model of the same
    inner layers and translates that. The round trip gives back that
    sub-model, not the custom class. Python branches on `training` inside
    `call` are fixed at their inference value. keras-hub layers of this kind
    are inlined without registration.

    Example:
        >>> tflight.bridge.register(MyResidualBlock, tflight.bridge.inline)

    Raises:
        BridgeError: Always, if called directly; pass it to `register`.
    """
    raise BridgeError(
        f"tflight.bridge.inline is passed to register(...), not called (got {layer!r})."
    )


def unregister(translation: Translation) -> None:
    """Removes a translation added with `register`.

    Raises:
        BridgeError: If it is not registered.
    """
    try:
        _TRANSLATIONS.remove(translation)
    except ValueError as e:
        raise BridgeError(f"{translation!r} is not registered.") from e


# --------------------------------------------------------------------------
# Verification
# --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BridgeReport:
    """How closely two models (one per Keras generation) agree.

    Attributes:
        source: Name of the source model.
        target: Name of the rebuilt model.
        direction: Which way the bridge went.
        max_abs_diff: Largest absolute difference over all outputs.
        output_diffs: Largest absolute difference per output, in output order.
        atol: The tolerance the check used.
        num_layers: Layers translated (nested models counted through).
        seconds: Wall time of the translation and check.
    """

    source: str
    target: str
    direction: Direction
    max_abs_diff: float
    output_diffs: tuple[float, ...]
    atol: float
    num_layers: int = 0
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True if every output agrees within `atol`."""
        return bool(self.max_abs_diff <= self.atol)

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints a few lines: the verdict, the difference, the layer count."""
        verdict = "PASS" if self.passed else "FAIL"
        print_fn(f"{self.direction.value}: {self.source} -> {self.target}: {verdict}")
        print_fn(f"  max abs diff {self.max_abs_diff:.3g} (atol {self.atol:g})")
        if len(self.output_diffs) > 1:
            print_fn("  per output: " + ", ".join(f"{d:.3g}" for d in self.output_diffs))
        print_fn(f"  layers translated: {self.num_layers}, {self.seconds:.2f} s")


def _random_inputs(model: Any, *, batch_size: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for t in model.inputs:
        shape = tuple(t.shape)
        dims = [batch_size] + [_FREE_DIM if d is None else int(d) for d in shape[1:]]
        dtype = np.dtype(tf.as_dtype(t.dtype).as_numpy_dtype)
        if np.issubdtype(dtype, np.floating):
            arrays.append(rng.standard_normal(dims).astype(dtype))
        elif np.issubdtype(dtype, np.integer):
            arrays.append(rng.integers(0, 2, size=dims).astype(dtype))
        elif dtype == np.bool_:
            arrays.append(rng.integers(0, 2, size=dims).astype(bool))
        else:
            raise BridgeError(
                f"Cannot make random test inputs of dtype {dtype} for input '{t.name}'; "
                "pass verify=False and compare the models on your own data."
            )
    return arrays


def _structured(model: Any, arrays: list[np.ndarray]) -> Any:
    """Arrays in the structure (tensor, list or dict) the model's inputs were built in."""
    if len(arrays) == 1:
        return arrays[0]
    struct = getattr(model, "_inputs_struct", None)  # Keras 3
    if struct is None:
        struct = getattr(model, "_nested_inputs", None)  # tf_keras
    if struct is None:
        return arrays
    return tf.nest.pack_sequence_as(struct, arrays)


def _flat_outputs(outputs: Any) -> list[np.ndarray]:
    return [np.asarray(o) for o in tf.nest.flatten(outputs)]


def compare(
    source: Any,
    target: Any,
    *,
    atol: float = _DEFAULT_ATOL,
    batch_size: int = 2,
    seed: int = 0,
) -> BridgeReport:
    """Runs two models on the same random inputs and measures their disagreement.

    Both models run in inference mode (`training=False`), so BatchNormalization
    uses its moving statistics and Dropout is off.

    Args:
        source: A Keras 3 or tf_keras model.
        target: A model with the same inputs and outputs, usually the other
            generation's rebuild of `source`.
        atol: Largest absolute difference that still passes.
        batch_size: Random samples per input.
        seed: Seed of the random inputs.

    Returns:
        A `BridgeReport`.

    Raises:
        BridgeError: If the models' inputs or outputs do not line up.
    """
    if atol < 0:
        raise BridgeError(f"atol must be >= 0, got {atol}.")
    if batch_size < 1:
        raise BridgeError(f"batch_size must be >= 1, got {batch_size}.")
    if len(source.inputs) != len(target.inputs):
        raise BridgeError(
            f"'{source.name}' has {len(source.inputs)} inputs but '{target.name}' has "
            f"{len(target.inputs)}; compare needs models with the same inputs."
        )
    x = _random_inputs(source, batch_size=batch_size, seed=seed)
    a = _flat_outputs(source(_structured(source, x), training=False))
    b = _flat_outputs(target(_structured(target, x), training=False))
    if len(a) != len(b) or any(p.shape != q.shape for p, q in zip(a, b, strict=False)):
        raise BridgeError(
            f"'{source.name}' and '{target.name}' give outputs of different shapes: "
            f"{[p.shape for p in a]} vs {[q.shape for q in b]}."
        )
    diffs = tuple(
        float(np.max(np.abs(p.astype(np.float64) - q.astype(np.float64)))) if p.size else 0.0
        for p, q in zip(a, b, strict=True)
    )
    direction = Direction.TO_TF_KERAS if is_keras3_model(source) else Direction.TO_KERAS3
    return BridgeReport(
        source=source.name,
        target=target.name,
        direction=direction,
        max_abs_diff=max(diffs, default=0.0),
        output_diffs=diffs,
        atol=float(atol),
    )


# --------------------------------------------------------------------------
# Config translation shared by both directions
# --------------------------------------------------------------------------

# Activations whose name means the same function in both generations.
_SHARED_ACTIVATIONS = frozenset(
    {
        "elu",
        "exponential",
        "gelu",
        "linear",
        "mish",
        "relu",
        "selu",
        "sigmoid",
        "softmax",
        "softplus",
        "softsign",
        "swish",
        "tanh",
    }
)
_ACTIVATION_ALIASES = {"silu": "swish"}
_TF_KERAS_PACKAGE = "tflight_tf_keras"  # Keras 3 names of tf_keras activations

# Keyword arguments every tf_keras layer accepts besides its own.
_TFK_BASE_KWARGS = frozenset(
    {"name", "trainable", "dtype", "dynamic", "activity_regularizer", "autocast", "input_dim"}
)
_K3_BASE_KWARGS = frozenset({"name", "trainable", "dtype", "activity_regularizer", "autocast"})

# tf_keras options with no effect on what a layer computes.
_TFK_ONLY_IGNORABLE = frozenset(
    {
        "batch_input_shape",
        "implementation",
        "input_length",
        # Input shapes recorded by MultiHeadAttention; Keras 3 builds on call.
        "query_shape",
        "key_shape",
        "value_shape",
    }
)

# Config keys renamed between generations: {class name: {Keras 3 key: tf_keras key}}.
_RENAMED = {"LeakyReLU": {"negative_slope": "alpha"}}


def _policy_name(dtype: Any) -> Any:
    if isinstance(dtype, dict):
        config = dtype.get("config") or {}
        return config.get("name", dtype.get("class_name"))
    return dtype


def _legacy_object(value: dict[str, Any]) -> dict[str, Any]:
    """Reduces a serialized object to `{class_name, config}`, dropping None options."""
    config = {k: v for k, v in (value.get("config") or {}).items() if v is not None}
    return {"class_name": value.get("registered_name") or value["class_name"], "config": config}


@functools.cache
def _init_params(cls: type) -> tuple[frozenset[str], bool, dict[str, Any]]:
    """Named parameters of `cls.__init__`, whether it takes **kwargs, and defaults."""
    names: set[str] = set()
    defaults: dict[str, Any] = {}
    var_kw = False
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        has_var_kw = False
        for p in params:
            if p.kind is p.VAR_KEYWORD:
                has_var_kw = True
            elif p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self":
                names.add(p.name)
                if p.default is not p.empty:
                    defaults.setdefault(p.name, p.default)
        if not has_var_kw:
            break
        var_kw = True
    return frozenset(names), var_kw, defaults


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, str) and "class_name" in a:
        # A serialized default object, e.g. {"class_name": "GlorotUniform"} vs
        # "glorot_uniform"; only when it carries no options of its own.
        camel = "".join(part.capitalize() for part in b.split("_"))
        return a["class_name"] == camel and not any((a.get("config") or {}).values())
    try:
        return bool(np.all(np.asarray(a == b)))
    except Exception:  # noqa: BLE001 - incomparable values are different
        return False


def _fit_config(
    layer: Any,
    config: dict[str, Any],
    target_cls: type,
    base_kwargs: frozenset[str],
    target_name: str,
    ignorable: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """Drops options the target class lacks when they hold their default value.

    `ignorable` options change speed or bookkeeping only, never the function.
    """
    names, _, _ = _init_params(target_cls)
    allowed = names | base_kwargs
    _, _, source_defaults = _init_params(type(layer))
    fitted = {}
    for key, value in config.items():
        if key in allowed:
            fitted[key] = value
        elif (
            key in ignorable
            or value is None
            or value is False
            or (key == "data_format" and value == "channels_last")
            or _same(value, source_defaults.get(key, object()))
        ):
            continue
        else:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__name__}) uses {key}={value!r}, which "
                f"{target_name} {target_cls.__name__} does not have. Use the default for "
                f"{key}, or register a translation with tflight.bridge.register(...)."
            )
    return fitted


def _translate_value(key: str, value: Any, activation: Callable[[Any], Any]) -> Any:
    if key.endswith("activation"):
        return activation(value)
    if isinstance(value, dict) and "class_name" in value:
        if value["class_name"] in {"DTypePolicy", "Policy", "FloatDTypePolicy"}:
            return _policy_name(value)
        return _legacy_object(value)
    return value


# --------------------------------------------------------------------------
# Keras 3 -> tf_keras
# --------------------------------------------------------------------------


@functools.cache
def _tfk_support() -> Any:
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
            self.template = _decode(_plain(template))

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
            config["template"] = _encode(_plain(self.template))
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
def _k3_support() -> Any:
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
            self.template = _plain(template)

        @tf.autograph.experimental.do_not_convert
        def call(self, inputs: Any, **unused: Any) -> Any:
            args, kwargs = _fill_template(self.template, _as_list(inputs))
            return self._fn(*args, **kwargs)

        def get_config(self) -> dict[str, Any]:
            config = super().get_config()
            config.update(symbol=self.symbol, template=_plain(self.template))
            return config

    ns.TFOperation = TFOperation

    # tf_keras' hard_sigmoid is clip(0.2 x + 0.5, 0, 1); Keras 3's is relu6(x + 3) / 6.
    @keras.saving.register_keras_serializable(package=_TF_KERAS_PACKAGE, name="hard_sigmoid")
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
    tfk_side, k3_side = _tfk_support(), _k3_support()
    return {
        "KerasOperation": tfk_side.KerasOperation,
        "Keras3Activation": tfk_side.Keras3Activation,
        "TFOperation": k3_side.TFOperation,
        f"{_TF_KERAS_PACKAGE}>hard_sigmoid": k3_side.tf_keras_activations["hard_sigmoid"],
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


def _plain(value: Any) -> Any:
    """`value` with tracking containers turned back into lists and dicts."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_plain(v) for v in value)
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [_plain(v) for v in value]
    return value


def _activation_name(value: Any) -> Any:
    """The name of a serialized activation (a string, a dict or a function)."""
    if isinstance(value, Mapping):
        config = value.get("config")
        if isinstance(config, str):
            return config
        if isinstance(config, Mapping) and isinstance(config.get("name"), str):
            return config["name"]
        return str(value.get("registered_name") or value.get("class_name"))
    if isinstance(value, str):
        return value
    return str(getattr(value, "__name__", repr(value)))


def _k3_activation_to_tfk(value: Any, layer: Any) -> Any:
    if value is None:
        return value
    raw = _activation_name(value)
    name = _ACTIVATION_ALIASES.get(raw, raw)
    if name in _SHARED_ACTIVATIONS:
        return name
    try:
        if not name.isidentifier() or not callable(keras.activations.get(name)):
            raise ValueError(name)
    except Exception as e:  # noqa: BLE001 - reported as a bridge error below
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses activation {raw!r}, which is "
            "not a built-in Keras activation; use a built-in one, or register a translation "
            "for the layer with tflight.bridge.register(...)."
        ) from e
    # A registered function: tf_keras serializes it under a name of its own, so
    # a clone (as TF-MOT makes) cannot fall back to tf_keras' different meaning.
    return _tfk_support().wrap_activation(name)


def _builtin_base(cls: type, package: str) -> type | None:
    """The Keras class `cls` computes like: itself if Keras ships it, else a Keras
    base class when no class in between redefines `call` or `build`."""
    for klass in cls.__mro__:
        if klass.__module__.split(".")[0] == package:
            return klass
        if "call" in klass.__dict__ or "build" in klass.__dict__:
            return None
    return None


def _find_class(source_cls: type, target_root: Any, target_pkg: str) -> type | None:
    """The class of the other generation with the same name, if Keras ships one."""
    name = source_cls.__name__
    cls = getattr(target_root.layers, name, None)
    if isinstance(cls, type):
        return cls
    module = source_cls.__module__
    if ".applications." in module:
        # e.g. keras.src.applications.convnext.LayerScale
        tail = module.split(".applications.", 1)[1]
        try:
            mod = importlib.import_module(f"{target_pkg}.src.applications.{tail}")
        except ImportError:
            return None
        cls = getattr(mod, name, None)
        return cls if isinstance(cls, type) else None
    return None


def _unsupported(layer: Any, what: str) -> UnsupportedLayerError:
    if what == "tf_keras":
        # The bridge is only needed for TF-MOT; conversion takes Keras 3 as is.
        fix = (
            "Rewrite it with built-in layers, or register a translation with "
            "tflight.bridge.register(predicate, translate); without the bridge the model "
            "still converts as it is (converters.convert takes Keras 3 models), but "
            "tf_keras-only compression (prune, cluster, QAT) cannot reach it."
        )
    else:
        fix = (
            "Rewrite it with built-in layers, or register a translation with "
            "tflight.bridge.register(predicate, translate, direction='to_keras3')."
        )
    return UnsupportedLayerError(
        f"Layer '{layer.name}' of class {type(layer).__module__}.{type(layer).__name__} "
        f"has no {what} counterpart the bridge knows. {fix}"
    )


def _matching_translation(layer: Any, direction: Direction) -> Translation | None:
    """The newest registered translation whose predicate accepts `layer`."""
    for t in _TRANSLATIONS:
        if t.direction is not direction:
            continue
        try:
            hit = t.matches(layer)
        except Exception as e:  # noqa: BLE001 - a user's predicate failing is reported
            raise BridgeError(
                f"The predicate of translation '{t.name}' raised {type(e).__name__}: {e} "
                f"on layer '{layer.name}' ({type(layer).__name__})."
            ) from e
        if hit:
            return t
    return None


def _user_translation(layer: Any, direction: Direction) -> Any:
    t = _matching_translation(layer, direction)
    if t is None:
        return None
    if t.translate is inline:
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is registered to be inlined, which "
            "the bridge does in Functional models (keras.Input -> layers -> keras.Model) and "
            "in the Keras 3 direction only; build the model that way, or register a "
            "translation that returns a layer."
        )
    try:
        with _target_config(layer, direction):
            new = t.translate(layer)
    except Exception as e:  # noqa: BLE001
        raise BridgeError(
            f"Translation '{t.name}' failed on layer '{layer.name}' "
            f"({type(layer).__name__}): {type(e).__name__}: {e}"
        ) from e
    target = tf_keras() if direction is Direction.TO_TF_KERAS else keras
    if not isinstance(new, target.layers.Layer):
        generation = "tf_keras" if direction is Direction.TO_TF_KERAS else "Keras 3"
        raise BridgeError(
            f"Translation '{t.name}' returned {type(new).__name__} for layer '{layer.name}'; "
            f"it must return a {generation} layer."
        )
    _make_loadable(type(new), direction)
    if direction is Direction.TO_TF_KERAS and type(new).__module__.split(".")[0] != "tf_keras":
        # A class of the user's own (a built-in one also stands for itself).
        _TWIN_SOURCES[type(new)] = type(layer)
    return new


def _config_for_tf_keras(layer: Any, config: dict[str, Any]) -> dict[str, Any]:
    """A Keras 3 layer config in the form tf_keras constructors read."""

    def activation(value: Any) -> Any:
        try:
            return _k3_activation_to_tfk(value, layer)
        except UnsupportedLayerError:
            return value  # the user's own activation: theirs to translate

    out = {}
    for key, value in config.items():
        if key == "dtype":
            out[key] = _policy_name(value)
        else:
            out[key] = _translate_value(key, value, activation)
    return out


@contextlib.contextmanager
def _target_config(layer: Any, direction: Direction) -> Any:
    """Within the block, `layer.get_config()` returns the target generation's form."""
    if direction is not Direction.TO_TF_KERAS:
        yield
        return
    own = layer.__dict__.get("get_config")
    source = layer.get_config

    def get_config() -> dict[str, Any]:
        return _config_for_tf_keras(layer, source())

    # Set on the instance, past Keras' attribute tracking, and removed after.
    object.__setattr__(layer, "get_config", get_config)
    try:
        yield
    finally:
        if own is None:
            object.__delattr__(layer, "get_config")
        else:
            object.__setattr__(layer, "get_config", own)


def _make_loadable(cls: type, direction: Direction) -> None:
    """Lets the target generation rebuild `cls` from a config (clone, load).

    TF-MOT clones models through `get_config`/`from_config`, looking classes up
    by their registered name; a twin class defined in a user's script is not
    registered, so it is added to the generation's custom objects under its
    bare name (the name an unregistered class is saved under).
    """
    module = tf_keras() if direction is Direction.TO_TF_KERAS else keras
    if cls.__module__.split(".")[0] == module.__name__:
        return  # the generation's own class
    saving = module.saving
    registered = saving.get_registered_name(cls)
    if saving.get_registered_object(registered) is cls:
        return
    custom = module.utils.get_custom_objects()
    other = custom.get(cls.__name__)
    redefined = other is not None and (other.__module__, other.__qualname__) == (
        cls.__module__,
        cls.__qualname__,
    )  # e.g. a notebook cell run again
    if other is not None and other is not cls and not redefined:
        raise BridgeError(
            f"Another class named {cls.__name__} ({other.__module__}) is already known to "
            f"{module.__name__}'s deserialization, so the translated layer's class "
            f"{cls.__module__}.{cls.__name__} cannot be found by name when the model is "
            f"cloned or loaded. Register it under a package of its own: "
            f"@{module.__name__}.saving.register_keras_serializable(package='my_layers')."
        )
    custom[cls.__name__] = cls


class _Builder:
    """Translates one model (and the models nested in it), recording layer pairs."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.cache: dict[int, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []

    # -- Keras 3 -> tf_keras --------------------------------------------

    def k3_model(self, model: Any) -> Any:
        tfk = tf_keras()
        if isinstance(model, keras.Sequential):
            t = self._k3_inputs(model)[0]
            new = tfk.Sequential(name=model.name)
            new.add(
                tfk.layers.InputLayer(
                    input_shape=tuple(t.shape)[1:],
                    batch_size=t.shape[0],
                    dtype=t.dtype,
                    name=t._keras_history[0].name,
                )
            )
            for layer in model.layers:
                new.add(self.k3_layer(layer))
        elif _is_functional(model):
            new = self._k3_functional(model)
        else:
            raise _subclassed(model)
        if not model.trainable:
            # Setting it to True would recurse and unfreeze layers frozen on
            # their own; their configs already carry their flags.
            new.trainable = False
        return new

    def _k3_inputs(self, model: Any) -> list[Any]:
        try:
            return list(model.inputs)
        except (AttributeError, ValueError) as e:
            raise BridgeError(
                f"Model '{model.name}' has no defined inputs yet; build it on an input shape "
                "(start it with keras.Input(...)) before bridging it."
            ) from e

    def _k3_functional(self, model: Any) -> Any:
        tfk = tf_keras()
        tensors: dict[int, Any] = {}
        new_inputs = []
        for t in self._k3_inputs(model):
            new = tfk.Input(
                shape=tuple(t.shape)[1:],
                batch_size=t.shape[0],
                dtype=t.dtype,
                sparse=bool(getattr(t, "sparse", False)),
                name=t._keras_history[0].name,
            )
            tensors[id(t)] = new
            new_inputs.append(new)

        def is_k3_tensor(v: Any) -> bool:
            return isinstance(v, keras.KerasTensor)

        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                op = node.operation

                def fill(v: Any) -> Any:
                    return tensors[id(v)] if is_k3_tensor(v) else v

                args = keras.tree.map_structure(fill, list(node.arguments.args))
                kwargs = keras.tree.map_structure(fill, dict(node.arguments.kwargs))
                if isinstance(op, keras.layers.Layer):
                    # Keras 3 records `training=False` on every layer whose call takes
                    # it and replaces it with the model's own mode at call time;
                    # tf_keras would honour it and pin Dropout, RNNs (and the pruning
                    # mask updates inside them) to inference mode during training.
                    kwargs.pop("training", None)
                if isinstance(op, keras.layers.Layer) and self._inlines(op):
                    out = self._k3_inline(op, node, args, kwargs)
                elif isinstance(op, keras.layers.Layer):
                    out = self.k3_layer(op)(*args, **kwargs)
                else:
                    template, flat = _make_template(
                        args, kwargs, lambda v: isinstance(v, _tfk_tensor_type())
                    )
                    out = _tfk_support().KerasOperation(
                        _copy_operation(op), template, name=op.name
                    )(flat)
                for old, y in zip(node.outputs, tf.nest.flatten(out), strict=True):
                    tensors[id(old)] = y
        outputs = [tensors[id(t)] for t in model.outputs]
        ins = keras.tree.pack_sequence_as(model._inputs_struct, new_inputs)
        outs = keras.tree.pack_sequence_as(model._outputs_struct, outputs)
        return tfk.Model(inputs=ins, outputs=outs, name=model.name)

    # -- layers made of layers (keras-hub blocks, user blocks) ------------

    def _inlines(self, layer: Any) -> bool:
        """True for a layer rebuilt from the layers and ops its `call` uses."""
        if id(layer) in self.cache or isinstance(layer, keras.Model):
            return False
        t = _matching_translation(layer, Direction.TO_TF_KERAS)
        if t is not None:
            return t.translate is inline
        return (
            type(layer).__module__.split(".")[0] == "keras_hub"
            and _builtin_base(type(layer), "keras") is None
        )

    def _k3_inline(self, layer: Any, node: Any, args: Any, kwargs: Any) -> Any:
        key = ("inline", id(layer))
        if key not in self.cache:
            self.cache[key] = self._trace(layer, node)
        flat = [v for v in tf.nest.flatten((args, kwargs)) if isinstance(v, _tfk_tensor_type())]
        return self.cache[key](flat if len(flat) > 1 else flat[0])

    def _trace(self, layer: Any, node: Any) -> Any:
        """The tf_keras twin of a Keras 3 Functional model traced from `layer.call`."""
        if layer._trainable_variables or layer._non_trainable_variables:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__module__}.{type(layer).__name__}) holds "
                "weights of its own, so the bridge cannot rebuild it from the layers it calls; "
                "register a translation with tflight.bridge.register(predicate, translate)."
            )
        flat_in = [
            v
            for v in keras.tree.flatten((node.arguments.args, node.arguments.kwargs))
            if isinstance(v, keras.KerasTensor)
        ]
        if not flat_in:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' ({type(layer).__name__}) is called without tensor inputs; "
                "register a translation with tflight.bridge.register(predicate, translate)."
            )
        placeholders = {
            id(v): keras.Input(batch_shape=tuple(v.shape), dtype=v.dtype, sparse=v.sparse)
            for v in flat_in
        }

        def fill(v: Any) -> Any:
            return placeholders.get(id(v), v) if isinstance(v, keras.KerasTensor) else v

        args = keras.tree.map_structure(fill, list(node.arguments.args))
        kwargs = keras.tree.map_structure(fill, dict(node.arguments.kwargs))
        # Tracing calls the inner layers on symbolic tensors, which records
        # nodes on them; the user's model gets its own node lists back after.
        inner = list(layer._flatten_layers(include_self=False, recursive=True))
        counts = [(x, len(x._inbound_nodes), len(x._outbound_nodes)) for x in inner]
        try:
            try:
                outputs = layer.call(*args, **kwargs)
                sub = keras.Model([placeholders[id(v)] for v in flat_in], outputs, name=layer.name)
            except Exception as e:  # noqa: BLE001 - reported with the layer's name
                raise UnsupportedLayerError(
                    f"Layer '{layer.name}' ({type(layer).__module__}.{type(layer).__name__}) "
                    "could not be rebuilt from the layers and keras.ops its call uses "
                    f"({type(e).__name__}: {e}). Register a translation with "
                    "tflight.bridge.register(predicate, translate)."
                ) from e
            return self.k3_model(sub)
        finally:
            for x, n_in, n_out in counts:
                del x._inbound_nodes[n_in:]
                del x._outbound_nodes[n_out:]

    def k3_layer(self, layer: Any) -> Any:
        if id(layer) in self.cache:
            return self.cache[id(layer)]
        new = _user_translation(layer, Direction.TO_TF_KERAS)
        if new is not None:
            self.pairs.append((layer, new))
        elif isinstance(layer, keras.Model):
            new = self.k3_model(layer)
        else:
            new = self._k3_builtin(layer)
            self.pairs.append((layer, new))
        self.cache[id(layer)] = new
        return new

    def _k3_builtin(self, layer: Any) -> Any:
        tfk = tf_keras()
        base = _builtin_base(type(layer), "keras")
        if base is None:
            raise _unsupported(layer, "tf_keras")
        name = base.__name__
        if name == "Lambda":
            return tfk.layers.Lambda(
                layer.function,
                output_shape=getattr(layer, "_output_shape", None),
                mask=getattr(layer, "mask", None),
                arguments=dict(layer.arguments or {}),
                name=layer.name,
            )
        if name in _WRAPPERS:
            return self._wrapper(layer, tfk, self._k3_inner)
        cls = _find_class(base, tfk, "tf_keras")
        if cls is None:
            raise _unsupported(layer, "tf_keras")
        config = {
            _RENAMED.get(name, {}).get(k, k): _translate_value(
                k, v, lambda a: _k3_activation_to_tfk(a, layer)
            )
            for k, v in layer.get_config().items()
        }
        config["dtype"] = _policy_name(config.get("dtype"))
        config = _fit_config(layer, config, cls, _TFK_BASE_KWARGS, "tf_keras")
        try:
            return _rebuild(cls, config)
        except Exception as e:  # noqa: BLE001 - reported with the layer's name
            raise BridgeError(
                f"tf_keras could not rebuild layer '{layer.name}' ({name}) from its config: "
                f"{type(e).__name__}: {e}. Register a translation with "
                "tflight.bridge.register(...) for this layer."
            ) from e

    # -- tf_keras -> Keras 3 --------------------------------------------

    def tfk_model(self, model: Any) -> Any:
        tfk = tf_keras()
        if isinstance(model, tfk.Sequential):
            if not model.inputs:
                raise BridgeError(
                    f"Model '{model.name}' has no defined inputs yet; build it on an input "
                    "shape before bridging it."
                )
            t = model.inputs[0]
            new = keras.Sequential(name=model.name)
            new.add(
                keras.Input(
                    shape=tuple(t.shape)[1:],
                    batch_size=t.shape[0],
                    dtype=t.dtype.name,
                    name=model._input_layers[0].name,
                )
            )
            for layer in model.layers:
                new.add(self.tfk_layer(layer))
        elif getattr(model, "_is_graph_network", False):
            new = self._tfk_functional(model)
        else:
            raise _subclassed(model)
        if not model.trainable:
            # Setting it to True would recurse and unfreeze layers frozen on
            # their own; their configs already carry their flags.
            new.trainable = False
        return new

    def _tfk_functional(self, model: Any) -> Any:
        tensors: dict[int, Any] = {}
        new_inputs = []
        for layer, t in zip(model._input_layers, model.inputs, strict=True):
            new = keras.Input(
                shape=tuple(t.shape)[1:],
                batch_size=t.shape[0],
                dtype=t.dtype.name,
                sparse=isinstance(t.type_spec, tf.SparseTensorSpec),
                name=layer.name,
            )
            tensors[id(t)] = new
            new_inputs.append(new)
        tfk_tensor = _tfk_tensor_type()

        def is_tfk_tensor(v: Any) -> bool:
            return isinstance(v, tfk_tensor)

        for depth in sorted(model._nodes_by_depth, reverse=True):
            for node in model._nodes_by_depth[depth]:
                if node.is_input:
                    continue
                layer = node.layer

                def fill(v: Any) -> Any:
                    return tensors[id(v)] if is_tfk_tensor(v) else v

                args = tf.nest.map_structure(fill, list(node.call_args))
                kwargs = tf.nest.map_structure(fill, dict(node.call_kwargs))
                support = _tfk_support()
                if isinstance(layer, support.KerasOperation):
                    # Our own wrapper: call a fresh copy of the Keras 3 operation.
                    op_args, op_kwargs = _fill_template(layer.template, _as_list(args[0]))
                    out = _copy_operation(layer.operation)(*op_args, **op_kwargs)
                elif type(layer).__name__ in {
                    "TFOpLambda",
                    "SlicingOpLambda",
                } and not _matching_translation(layer, Direction.TO_KERAS3):
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
                    template, flat = _make_template(
                        args, kwargs, lambda v: isinstance(v, keras.KerasTensor)
                    )
                    out = _k3_support().TFOperation(layer.symbol, template, name=layer.name)(flat)
                else:
                    out = self.tfk_layer(layer)(*args, **kwargs)
                for old, y in zip(
                    tf.nest.flatten(node.outputs), keras.tree.flatten(out), strict=True
                ):
                    tensors[id(old)] = y
        outputs = [tensors[id(t)] for t in model.outputs]
        ins = tf.nest.pack_sequence_as(model._nested_inputs, new_inputs)
        outs = tf.nest.pack_sequence_as(model._nested_outputs, outputs)
        return keras.Model(inputs=ins, outputs=outs, name=model.name)

    def tfk_layer(self, layer: Any) -> Any:
        if id(layer) in self.cache:
            return self.cache[id(layer)]
        tfk = tf_keras()
        new = _user_translation(layer, Direction.TO_KERAS3)
        if new is None and type(layer) in _TWIN_SOURCES:
            new = _from_twin(layer)
        if new is not None:
            self.pairs.append((layer, new))
        elif isinstance(layer, tfk.Model):
            new = self.tfk_model(layer)
        else:
            new = self._tfk_builtin(layer)
            self.pairs.append((layer, new))
        self.cache[id(layer)] = new
        return new

    def _tfk_builtin(self, layer: Any) -> Any:
        name = type(layer).__name__
        base = _builtin_base(type(layer), "tf_keras")
        if base is None or "tensorflow_model_optimization" in type(layer).__module__:
            if "tensorflow_model_optimization" in type(layer).__module__:
                raise UnsupportedLayerError(
                    f"Layer '{layer.name}' is a {name} wrapper from a compression technique; "
                    "strip the model first (e.g. tfmot.sparsity.keras.strip_pruning or "
                    "tflight's strip functions), then call to_keras3."
                )
            raise _unsupported(layer, "Keras 3")
        name = base.__name__
        if name == "Lambda":
            return keras.layers.Lambda(
                layer.function,
                output_shape=getattr(layer, "_output_shape", None),
                mask=getattr(layer, "mask", None),
                arguments=dict(layer.arguments or {}),
                name=layer.name,
            )
        if name in _WRAPPERS:
            return self._wrapper(layer, keras, self._tfk_inner)
        cls = _find_class(base, keras, "keras")
        if cls is None:
            raise _unsupported(layer, "Keras 3")
        reverse = {v: k for k, v in _RENAMED.get(name, {}).items()}
        config = {
            reverse.get(k, k): _translate_value(k, v, lambda a: _tfk_activation_to_k3(a, layer))
            for k, v in _plain(layer.get_config()).items()
        }
        if name == "BatchNormalization" and isinstance(config.get("axis"), list):
            # tf_keras stores a list of axes; Keras 3 takes one.
            if len(config["axis"]) != 1:
                raise UnsupportedLayerError(
                    f"Layer '{layer.name}' (BatchNormalization) normalizes over axes "
                    f"{config['axis']}; Keras 3 BatchNormalization takes a single axis."
                )
            config["axis"] = config["axis"][0]
        config["dtype"] = _policy_name(config.get("dtype"))
        config = _fit_config(layer, config, cls, _K3_BASE_KWARGS, "Keras 3", _TFK_ONLY_IGNORABLE)
        try:
            return _rebuild(cls, config)
        except Exception as e:  # noqa: BLE001
            raise BridgeError(
                f"Keras 3 could not rebuild layer '{layer.name}' ({name}) from its config: "
                f"{type(e).__name__}: {e}. Register a translation with "
                "tflight.bridge.register(..., direction='to_keras3') for this layer."
            ) from e

    # -- wrappers (TimeDistributed, Bidirectional) -----------------------

    def _k3_inner(self, layer: Any) -> Any:
        new = _user_translation(layer, Direction.TO_TF_KERAS)
        return new if new is not None else self._k3_builtin(layer)

    def _tfk_inner(self, layer: Any) -> Any:
        new = _user_translation(layer, Direction.TO_KERAS3)
        return new if new is not None else self._tfk_builtin(layer)

    def _wrapper(self, layer: Any, target: Any, inner: Callable[[Any], Any]) -> Any:
        # The wrapper is copied as a whole (its weights are those of the inner
        # layers, forward then backward), since tf_keras re-creates the inner
        # layers it is given.
        if type(layer).__name__ == "TimeDistributed":
            return target.layers.TimeDistributed(inner(layer.layer), name=layer.name)
        return target.layers.Bidirectional(
            inner(layer.forward_layer),
            merge_mode=layer.merge_mode,
            backward_layer=inner(layer.backward_layer),
            name=layer.name,
        )

    # -- weights ----------------------------------------------------------

    def copy_weights(self) -> None:
        for src, dst in self.pairs:
            values = src.get_weights()
            if len(values) != len(dst.weights):
                raise BridgeError(
                    f"Layer '{src.name}' ({type(src).__name__}) has {len(values)} weights but "
                    f"its translation '{dst.name}' ({type(dst).__name__}) has "
                    f"{len(dst.weights)}; a translation must create the same weights in the "
                    "same order."
                )
            for v, w in zip(values, dst.weights, strict=True):
                if tuple(v.shape) != tuple(w.shape):
                    raise BridgeError(
                        f"Weight shapes differ in layer '{src.name}' ({type(src).__name__}): "
                        f"{tuple(v.shape)} in the source, {tuple(w.shape)} in the translation "
                        f"'{dst.name}'."
                    )
            dst.set_weights(values)
            if getattr(dst, "built", False) and hasattr(dst, "finalize_state"):
                # Preprocessing layers (Normalization) cache tensors derived
                # from their state; refresh them from the copied weights.
                dst.finalize_state()


_WRAPPERS = frozenset({"TimeDistributed", "Bidirectional"})


def _from_twin(layer: Any) -> Any:
    """The Keras 3 layer a registered translation made `layer` from, rebuilt from its config."""
    cls = _TWIN_SOURCES[type(layer)]
    try:
        return cls.from_config(_plain(layer.get_config()))
    except Exception as e:  # noqa: BLE001 - reported with the layer's name
        raise BridgeError(
            f"Layer '{layer.name}' ({type(layer).__name__}) was translated from Keras 3 "
            f"{cls.__name__}, which cannot be rebuilt from its config ({type(e).__name__}: "
            f"{e}); register the reverse with tflight.bridge.register(..., "
            "direction='to_keras3')."
        ) from e


def _rebuild(cls: type, config: dict[str, Any]) -> Any:
    try:
        return cls.from_config(config)
    except KeyError:
        # Some from_config methods also expect a build config (tf_keras
        # MultiHeadAttention's query_shape); the constructor does not.
        return cls(**config)


def _tfk_activation_to_k3(value: Any, layer: Any) -> Any:
    if value is None:
        return value
    if isinstance(value, Mapping) and value.get("class_name") == "Keras3Activation":
        return value["config"]["name"]  # made by to_tf_keras: the Keras 3 name
    name = _activation_name(value)
    support = _k3_support()
    if name in support.tf_keras_activations:
        return support.tf_keras_activations[name]
    try:
        keras.activations.get(name)
    except Exception as e:  # noqa: BLE001 - reported as a bridge error below
        raise UnsupportedLayerError(
            f"Layer '{layer.name}' ({type(layer).__name__}) uses activation {name!r}, which "
            "has no Keras 3 counterpart; use a built-in one, or register a translation for "
            "the layer with tflight.bridge.register(..., direction='to_keras3')."
        ) from e
    # Same name, same function (relu6, silu, ...); the output check confirms it.
    return name


def _copy_operation(op: Any) -> Any:
    """A fresh Keras 3 operation with the same config, so the source is left alone."""
    try:
        return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(op))
    except Exception:  # noqa: BLE001 - an operation without a config is used as is
        return op


def _tfk_tensor_type() -> type:
    return tf_keras_internal("engine.keras_tensor").KerasTensor


def _is_functional(model: Any) -> bool:
    return hasattr(model, "_nodes_by_depth") and bool(getattr(model, "_nodes_by_depth", None))


def _subclassed(model: Any) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"Model '{model.name}' is a subclassed model ({type(model).__module__}."
        f"{type(model).__name__}); the bridge rebuilds Sequential and Functional models "
        "only. Rewrite it as a Functional model (keras.Model(inputs, outputs)), or register "
        "a translation with tflight.bridge.register(predicate, translate)."
    )


def _count_layers(pairs: Sequence[tuple[Any, Any]]) -> int:
    return len(pairs)


def _bridge(model: Any, direction: Direction, *, verify: bool, atol: float) -> Any:
    if atol < 0:
        raise BridgeError(f"atol must be >= 0, got {atol}.")
    start = time.perf_counter()
    builder = _Builder(direction)
    if direction is Direction.TO_TF_KERAS:
        _tfk_support()
        new = builder.k3_model(model)
    else:
        new = builder.tfk_model(model)
    builder.copy_weights()
    if verify:
        report = compare(model, new, atol=atol)
        report = dataclasses.replace(
            report,
            num_layers=_count_layers(builder.pairs),
            seconds=time.perf_counter() - start,
        )
        if not report.passed:
            raise BridgeError(
                f"The rebuilt model '{new.name}' disagrees with '{model.name}' by up to "
                f"{report.max_abs_diff:.3g} (atol {atol:g}) on random inputs. A layer's "
                "translation does not compute the same function; register a translation "
                "for custom layers, or pass a larger atol if the difference is rounding."
            )
        new._tflight_bridge_report = report
    return new


def to_tf_keras(model: Any, *, verify: bool = True, atol: float = _DEFAULT_ATOL) -> Any:
    """Rebuilds a Keras 3 model in tf_keras (Keras 2) with the same weights.

    This is how Keras 3 models reach TF-MOT's pruning, quantization-aware
    training and clustering, which accept tf_keras models only. Sequential and
    Functional models are rebuilt layer by layer, including models nested in
    them (such as a `keras.applications` backbone), shared layers and
    multi-input / multi-output graphs. The user's model is not modified. A
    tf_keras model is returned as is.

    Args:
        model: A Keras 3 Sequential or Functional model, or a tf_keras model.
        verify: Run both models on random inputs (inference mode) and check
            that the outputs agree.
        atol: Largest absolute output difference that passes the check.

    Returns:
        An uncompiled tf_keras model. After a verified run its
        `BridgeReport` is available as `tflight.bridge.report_of(new_model)`.

    Raises:
        UnsupportedLayerError: If a layer or the model itself (subclassed) has
            no tf_keras translation; the message names the layer and its class.
        BridgeError: If the input is not a Keras model, a layer's config cannot
            be rebuilt, weights do not line up, or the outputs disagree by more
            than `atol`.

    Example:
        >>> base = keras.applications.MobileNetV3Small(weights=None, input_shape=(96, 96, 3))
        >>> tf_model = tflight.to_tf_keras(base)
        >>> pruned = tfmot.sparsity.keras.prune_low_magnitude(tf_model)

    References:
        TF-MOT issues #1119 and #1270 (Keras 3 support).
    """
    if is_tf_keras_model(model):
        return model
    if not is_keras3_model(model):
        raise BridgeError(
            f"to_tf_keras expects a Keras 3 keras.Model, got {type(model).__name__}; "
            "load or build the model with Keras 3 first."
        )
    return _bridge(model, Direction.TO_TF_KERAS, verify=verify, atol=atol)


def to_keras3(model: Any, *, verify: bool = True, atol: float = _DEFAULT_ATOL) -> Any:
    """Rebuilds a plain tf_keras model in Keras 3 with the same weights.

    Used to hand a compressed, stripped model back to a Keras 3 user. A model
    made by `to_tf_keras` comes back layer for layer, with the same Keras 3
    operations, so `to_keras3(to_tf_keras(m))` computes exactly what `m` does.
    tf_keras' own `TFOpLambda` layers become a Keras 3 layer calling the same
    TensorFlow function. A Keras 3 model is returned as is.

    Args:
        model: A tf_keras Sequential or Functional model without compression
            wrappers (strip them first).
        verify: Check the outputs of both models on random inputs.
        atol: Largest absolute output difference that passes the check.

    Returns:
        An uncompiled Keras 3 model.

    Raises:
        UnsupportedLayerError: If a layer (including a pruning / quantization
            wrapper) has no Keras 3 translation.
        BridgeError: As for `to_tf_keras`.

    Example:
        >>> stripped = tfmot.sparsity.keras.strip_pruning(pruned)
        >>> k3_model = tflight.to_keras3(stripped)
    """
    if is_keras3_model(model):
        return model
    if not is_tf_keras_model(model):
        raise BridgeError(f"to_keras3 expects a tf_keras Model, got {type(model).__name__}.")
    return _bridge(model, Direction.TO_KERAS3, verify=verify, atol=atol)


def report_of(model: Any) -> BridgeReport | None:
    """The verification report of a model made by the bridge, or None."""
    return getattr(model, "_tflight_bridge_report", None)


_TECHNIQUES = {
    "prune": (
        "TF-MOT prunes only the layers it knows",
        "give its tf_keras class a `get_prunable_weights()` method returning the weights to "
        "prune (tfmot.sparsity.keras.PrunableLayer), or leave it dense (unsupported='skip')",
    ),
    "qat": (
        "TF-MOT's 8-bit QAT needs a QuantizeConfig for it",
        "keep it float (unsupported='keep_float'; int8 conversion then quantizes it "
        "post-training), or replace it with built-in layers",
    ),
    "cluster": (
        "TF-MOT clusters only the layers it knows",
        "give its tf_keras class a `get_clusterable_weights()` method returning "
        "(name, weight) pairs (tfmot.clustering.keras.ClusterableLayer), or leave it as it is "
        "(unsupported='skip')",
    ),
}


def unsupported_advice(layer: Any, technique: str) -> str:
    """One sentence naming a layer a compression technique cannot handle, and the fix.

    For the compression code's messages: it covers the layers the bridge makes
    (graph operations, Keras 3 activations) and custom layers, whose tf_keras
    class comes from a translation registered with `register`.

    Args:
        layer: A tf_keras layer of a (bridged) model.
        technique: `"prune"`, `"qat"` or `"cluster"`.

    Returns:
        E.g. "Layer 'scale' (custom layer TwinScale, translated from Keras 3
        Scale) cannot be pruned: TF-MOT prunes only the layers it knows; give
        its tf_keras class a `get_prunable_weights()` method ...".

    Raises:
        BridgeError: If `technique` is unknown.
    """
    if technique not in _TECHNIQUES:
        raise BridgeError(f"technique must be one of {sorted(_TECHNIQUES)}, got {technique!r}.")
    verb = {"prune": "pruned", "qat": "quantization-aware trained", "cluster": "clustered"}
    cls = type(layer).__name__
    support = _tfk_support()
    if isinstance(layer, support.KerasOperation):
        return (
            f"Layer '{layer.name}' is a graph operation ({_operation_label(layer.operation)}) "
            f"with no weights; it cannot be {verb[technique]} and needs nothing: "
            + (
                "keep it float (unsupported='keep_float')."
                if technique == "qat"
                else "leave it as it is (unsupported='skip')."
            )
        )
    activation = getattr(layer, "activation", None)
    if technique == "qat" and quantize_config(layer) is not None:
        return (
            f"Layer '{layer.name}' ({cls}) uses the Keras 3 activation {activation.name}, which "
            "TF-MOT's default 8-bit registry has no rule for; annotate it with "
            "tflight.bridge.quantize_config(layer) to quantize its output, or keep it float "
            "(unsupported='keep_float')."
        )
    if technique == "qat" and isinstance(activation, support.Keras3Activation):
        return (
            f"Layer '{layer.name}' ({cls}) uses the Keras 3 activation {activation.name}, which "
            "TF-MOT's 8-bit QAT has no rule for; keep it float (unsupported='keep_float'; "
            "int8 conversion then quantizes it post-training)."
        )
    source = _TWIN_SOURCES.get(type(layer))
    source = None if source is None else source.__name__
    what = (
        f"custom layer {cls}"
        if source is None
        else (f"custom layer {cls}, translated from Keras 3 {source}")
    )
    if source is None and type(layer).__module__.split(".")[0] == "tf_keras":
        what = cls  # a built-in layer the technique does not cover
    reason, fix = _TECHNIQUES[technique]
    return f"Layer '{layer.name}' ({what}) cannot be {verb[technique]}: {reason}; {fix}."


def _operation_label(operation: Any) -> str:
    return type(operation).__name__


# Keras 3 activations TF-MOT's 8-bit scheme has no rule for, but which LiteRT
# runs in int8 as one element-wise step (HARD_SWISH; ADD, RELU6, MUL): QAT
# quantizes their output, as TF-MOT does for relu and swish.
_OUTPUT_QUANTIZED_ACTIVATIONS = frozenset({"hard_silu", "hard_swish", "hard_sigmoid"})


def quantize_config(layer: Any) -> Any:
    """A TF-MOT QuantizeConfig for a layer the bridge made, where one is known.

    TF-MOT's default 8-bit registry matches exact classes and activation
    names. A bridged `Activation` layer running a Keras 3 activation that
    tf_keras lacks (MobileNetV3's `hard_swish`, `hard_sigmoid`) is an
    `Activation` to TF-MOT, which then fails ("Activation hard_silu not
    supported"), even when the layer is meant to be kept float, because
    TF-MOT also quantizes the output of a float layer that feeds a quantized
    one. Annotating such layers with the config returned here quantizes their
    output only, which is what an int8 LiteRT kernel does with them.

    Args:
        layer: A tf_keras layer.

    Returns:
        A `QuantizeConfig` to pass to `tfmot.quantization.keras.
        quantize_annotate_layer(layer, quantize_config=...)` (and to apply
        under `quantize_scope()`), or None when TF-MOT's own registry decides
        (or the layer cannot be quantized).

    Example:
        >>> config = tflight.bridge.quantize_config(layer)
        >>> if config is not None:
        ...     layer = mot.quantize_annotate_layer(layer, quantize_config=config)
    """
    support = _tfk_support()
    if type(layer) is not tf_keras().layers.Activation:
        return None
    activation = layer.activation
    if not isinstance(activation, support.Keras3Activation):
        return None
    if activation.name not in _OUTPUT_QUANTIZED_ACTIVATIONS:
        return None
    configs = tfmot_internal("quantization.keras.default_8bit.default_8bit_quantize_configs")
    return configs.Default8BitOutputQuantizeConfig()


# Saved bridged models name these layers; make them loadable as soon as the
# module is imported (Keras' loaders import it by the module name in a file).
_k3_support()
if "tf_keras" in sys.modules:
    _tfk_support()
