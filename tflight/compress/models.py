"""Models in, models out: the tf_keras copy every technique wraps.

A technique never wraps the user's model: it works on a fresh tf_keras copy
(Keras 3 models through `tflight.bridge`, tf_keras ones cloned with their
weights), with nested sub-models inlined so every layer is reachable. A model
the library made itself (an intermediate of a pipeline) is marked as owned and
is wrapped as it is.
"""

from __future__ import annotations

from typing import Any

from tflight._keras import is_keras3_model, is_tf_keras_model, tf_keras, tfmot
from tflight.errors import CompressionError

__all__ = [
    "is_frozen",
    "is_input_layer",
    "own",
    "prepare",
    "short_name",
]

_OWNED_ATTR = "_tflight_owned"


def own(model: Any) -> Any:
    """Marks a model the library made (not the user's): techniques may wrap it in place."""
    object.__setattr__(model, _OWNED_ATTR, True)
    return model


def _as_tf_keras(model: Any, *, what: str) -> Any:
    """A fresh tf_keras copy of `model` (Keras 3 through the bridge)."""
    if is_keras3_model(model):
        from tflight.bridge.core import to_tf_keras

        return to_tf_keras(model)
    if is_tf_keras_model(model):
        if getattr(model, _OWNED_ATTR, False):
            return model  # an intermediate model of a pipeline: ours to wrap
        return _clone(model, what=what)
    raise CompressionError(
        f"{what} expects a Keras 3 or tf_keras model, got {type(model).__module__}."
        f"{type(model).__qualname__}. Build the model with `keras` or `tf_keras`, or load it "
        "first with `keras.models.load_model(path)`."
    )


def prepare(model: Any, *, what: str) -> tuple[Any, Any]:
    """A fresh, flat tf_keras copy of `model` and the `FlattenResult` that made it.

    Nested Functional/Sequential sub-models (a backbone inside a new head,
    keras-hub blocks) are inlined so that every technique reaches their layers.
    """
    from tflight.bridge.flattening import flatten

    base = _as_tf_keras(model, what=what)
    try:
        result = flatten(base)
    except ValueError as e:
        raise CompressionError(f"{what} cannot reach inside model {base.name!r}: {e}.") from e
    return result.model, result


def is_input_layer(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def is_frozen(layer: Any) -> bool:
    return bool(layer.weights) and not layer.trainable


def _clone(model: Any, *, what: str) -> Any:
    """Clones a tf_keras Sequential/Functional model with its weights."""
    k = tf_keras()
    if not (isinstance(model, k.Sequential) or getattr(model, "_is_graph_network", False)):
        raise CompressionError(
            f"{what} supports Sequential and Functional models only; "
            f"{model.name!r} is a subclassed {type(model).__qualname__}. Rebuild it with the "
            "functional API (`keras.Model(inputs, outputs)`) or as a `keras.Sequential`."
        )
    mot = tfmot()
    with (
        mot.quantization.keras.quantize_scope(),
        mot.clustering.keras.cluster_scope(),
        mot.sparsity.keras.prune_scope(),
    ):
        clone = k.models.clone_model(model)
    try:
        clone.set_weights(model.get_weights())
    except ValueError:
        # Some layers (MultiHeadAttention after TF-MOT's strip) list their
        # weights in another order than a fresh build: copy them by name.
        for source, target in zip(model.layers, clone.layers, strict=True):
            by_name = {short_name(w): w for w in source.weights}
            for w in target.weights:
                w.assign(by_name[short_name(w)])
    return clone


def short_name(variable: Any) -> str:
    """A variable's name inside its layer: `mha/query/kernel:0` -> `query/kernel`."""
    return variable.name.split(":")[0].split("/", 1)[-1]

