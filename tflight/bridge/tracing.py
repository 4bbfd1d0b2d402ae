"""Layers made of layers (keras-hub blocks, user blocks registered with `inline`).

Such a layer has no counterpart in the other generation, but its `call` uses
only other layers and `keras.ops`. It is traced on its inputs into a Keras 3
Functional model of the same inner layers, which the rebuild then translates
as a nested model. Tracing exists in the Keras 3 -> tf_keras direction only;
the way back gives the nested model, not the custom class.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tflight._keras import keras
from tflight.bridge.configs import builtin_base
from tflight.bridge.generations import Direction
from tflight.bridge.registry import inline, matching_translation
from tflight.errors import UnsupportedLayerError

__all__ = ["inlines", "trace"]


def inlines(layer: Any, direction: Direction) -> bool:
    """True for a layer rebuilt from the layers and ops its `call` uses."""
    if direction is not Direction.TO_TF_KERAS or isinstance(layer, keras.Model):
        return False
    t = matching_translation(layer, Direction.TO_TF_KERAS)
    if t is not None:
        return t.translate is inline
    return (
        type(layer).__module__.split(".")[0] == "keras_hub"
        and builtin_base(type(layer), "keras") is None
    )


def trace(layer: Any, node: Any, rebuild: Callable[[Any], Any]) -> Any:
    """The tf_keras twin of a Keras 3 Functional model traced from `layer.call`.

    Args:
        layer: The Keras 3 layer to inline.
        node: The node of the source graph that calls it.
        rebuild: Rebuilds the traced Keras 3 Functional model in tf_keras.

    Raises:
        UnsupportedLayerError: If the layer owns weights, is called without
            tensors, or its `call` cannot be traced.
    """
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
        return rebuild(sub)
    finally:
        for x, n_in, n_out in counts:
            del x._inbound_nodes[n_in:]
            del x._outbound_nodes[n_out:]
