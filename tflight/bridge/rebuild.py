"""The one graph rebuild, used by both directions (Keras 3 -> tf_keras and back).

`rebuild(model, direction)` walks a Sequential or Functional model of the
source generation and builds the same graph in the target generation: each
layer is translated once (shared layers stay shared, nested models stay
nested) and called on the translated tensors in the same order, then the
weights are copied layer by layer. What differs between the generations'
graphs is in `tflight.bridge.generations`; how a layer's config is
translated, in `tflight.bridge.configs`; user translations, in
`tflight.bridge.registry`. Three kinds of graph node need more than a layer
call: graph operations that are not layers (carried by the bridge's own
layers, `tflight.bridge.own_objects`), layers made of layers (traced,
`tflight.bridge.tracing`) and the bridge's own layers coming back.
"""

from __future__ import annotations

from typing import Any

from tflight._keras import keras
from tflight.bridge import own_objects
from tflight.bridge.configs import builtin_base, find_class, layer_config, rebuild_layer
from tflight.bridge.generations import Direction, source_of, target_of
from tflight.bridge.registry import from_twin, matching_translation, user_translation
from tflight.bridge.tracing import inlines, trace
from tflight.errors import BridgeError, BridgeInternalError, UnsupportedLayerError

__all__ = ["rebuild"]

_WRAPPERS = frozenset({"TimeDistributed", "Bidirectional"})
# tf_keras' layers for a TensorFlow function called on symbolic tensors.
_TF_OP_LAMBDAS = frozenset({"TFOpLambda", "SlicingOpLambda"})


def rebuild(model: Any, direction: Direction) -> tuple[Any, list[tuple[Any, Any]]]:
    """Rebuilds `model` in the direction's target generation, weights copied.

    Returns:
        The new model and the `(source layer, new layer)` pairs whose weights
        were copied.

    Raises:
        UnsupportedLayerError: If a layer (or the model) has no translation.
        BridgeError: If a config cannot be rebuilt or weights do not line up.
    """
    own_objects.tfk_support()
    builder = _Builder(direction)
    new = builder.model(model)
    builder.copy_weights()
    return new, builder.pairs


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


def _subclassed(model: Any) -> UnsupportedLayerError:
    return UnsupportedLayerError(
        f"Model '{model.name}' is a subclassed model ({type(model).__module__}."
        f"{type(model).__name__}); the bridge rebuilds Sequential and Functional models "
        "only. Rewrite it as a Functional model (keras.Model(inputs, outputs)), or register "
        "a translation with tflight.bridge.register(predicate, translate)."
    )


class _Builder:
    """Translates one model (and the models nested in it), recording layer pairs."""

    def __init__(self, direction: Direction) -> None:
        self.direction = direction
        self.source = source_of(direction)
        self.target = target_of(direction)
        self.cache: dict[Any, Any] = {}
        self.pairs: list[tuple[Any, Any]] = []

    # -- models -----------------------------------------------------------

    def model(self, model: Any) -> Any:
        if self.source.is_sequential(model):
            _, spec = self.source.inputs(model)[0]
            new = self.target.sequential(model.name, spec)
            for layer in model.layers:
                new.add(self.layer(layer))
        elif self.source.is_functional(model):
            new = self._functional(model)
        else:
            raise _subclassed(model)
        if not model.trainable:
            # Setting it to True would recurse and unfreeze layers frozen on
            # their own; their configs already carry their flags.
            new.trainable = False
        return new

    def _functional(self, model: Any) -> Any:
        source, target = self.source, self.target
        tensors: dict[int, Any] = {}
        new_inputs = []
        for t, spec in source.inputs(model):
            new = target.input(spec)
            tensors[id(t)] = new
            new_inputs.append(new)

        def fill(v: Any) -> Any:
            return tensors[id(v)] if source.is_tensor(v) else v

        for node, op, args, kwargs, outputs in source.nodes(model):
            args = source.map_structure(fill, args)
            kwargs = source.map_structure(fill, kwargs)
            out = self._call(node, op, args, kwargs)
            for old, y in zip(outputs, target.flatten(out), strict=True):
                tensors[id(old)] = y
        outputs = [tensors[id(t)] for t in model.outputs]
        inputs_struct, outputs_struct = source.structures(model)
        return target.model(
            source.pack(inputs_struct, new_inputs),
            source.pack(outputs_struct, outputs),
            model.name,
        )

    def _call(self, node: Any, op: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Calls the translation of one graph node on the translated tensors.

        Most nodes call a layer, translated once. The node kinds one
        generation has and the other lacks are carried by the bridge's own
        layers, and undone on the way back.
        """
        if self.direction is Direction.TO_TF_KERAS:
            if not isinstance(op, keras.layers.Layer):  # `x + 3.0`, keras.ops.*
                return own_objects.keras_operation(op, args, kwargs)
            if id(op) not in self.cache and inlines(op, self.direction):
                return self._inline(node, op, args, kwargs)
        else:
            if isinstance(op, own_objects.tfk_support().KerasOperation):
                return own_objects.unwrap_keras_operation(op, args)
            if type(op).__name__ in _TF_OP_LAMBDAS and not matching_translation(
                op, self.direction
            ):
                return own_objects.tf_operation_layer(op, args, kwargs)
        return self.layer(op)(*args, **kwargs)

    def _inline(self, node: Any, layer: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
        """Calls the traced rebuild of a layer made of layers (traced once per layer)."""
        key = ("inline", id(layer))
        if key not in self.cache:
            self.cache[key] = trace(layer, node, self.model)
        flat = [v for v in self.target.flatten((args, kwargs)) if self.target.is_tensor(v)]
        return self.cache[key](flat if len(flat) > 1 else flat[0])

    # -- layers -----------------------------------------------------------

    def layer(self, layer: Any) -> Any:
        if id(layer) in self.cache:
            return self.cache[id(layer)]
        new = user_translation(layer, self.direction)
        if new is None:
            new = from_twin(layer)  # made by a user translation the other way
        if new is not None:
            self.pairs.append((layer, new))
        elif isinstance(layer, self.source.module().Model):
            new = self.model(layer)
        else:
            new = self._builtin(layer)
            self.pairs.append((layer, new))
        self.cache[id(layer)] = new
        return new

    def _builtin(self, layer: Any) -> Any:
        target = self.target
        if "tensorflow_model_optimization" in type(layer).__module__:
            raise UnsupportedLayerError(
                f"Layer '{layer.name}' is a {type(layer).__name__} wrapper from a compression "
                "technique; strip the model first (e.g. tfmot.sparsity.keras.strip_pruning or "
                "tflight's strip functions), then call to_keras3."
            )
        base = builtin_base(type(layer), self.source.package)
        if base is None:
            raise _unsupported(layer, target.label)
        name = base.__name__
        if name == "Lambda":
            return target.module().layers.Lambda(
                layer.function,
                output_shape=getattr(layer, "_output_shape", None),
                mask=getattr(layer, "mask", None),
                arguments=dict(layer.arguments or {}),
                name=layer.name,
            )
        if name in _WRAPPERS:
            return self._wrapper(layer)
        cls = find_class(base, target.module(), target.package)
        if cls is None:
            raise _unsupported(layer, target.label)
        config = layer_config(layer, name, cls, self.direction)
        try:
            return rebuild_layer(cls, config)
        except Exception as e:  # noqa: BLE001 - reported with the layer's name
            # `cls` is a built-in layer of the target Keras and `config` our own
            # translation of it: a failure here is a gap of the bridge's, not a
            # mistake of the user's (their own layers go through `register`).
            raise BridgeInternalError(
                f"{target.label} could not rebuild layer '{layer.name}' ({name}) from its "
                f"config: {type(e).__name__}: {e}. Register a translation with "
                f"{target.register_hint} for this layer to work around it.",
                layer=layer.name, kind="rebuild_failed",
                fix=f"register a translation with {target.register_hint}",
            ) from e

    # -- wrappers (TimeDistributed, Bidirectional) -----------------------

    def _inner(self, layer: Any) -> Any:
        new = user_translation(layer, self.direction)
        return new if new is not None else self._builtin(layer)

    def _wrapper(self, layer: Any) -> Any:
        # The wrapper is copied as a whole (its weights are those of the inner
        # layers, forward then backward), since tf_keras re-creates the inner
        # layers it is given.
        layers = self.target.module().layers
        if type(layer).__name__ == "TimeDistributed":
            return layers.TimeDistributed(self._inner(layer.layer), name=layer.name)
        return layers.Bidirectional(
            self._inner(layer.forward_layer),
            merge_mode=layer.merge_mode,
            backward_layer=self._inner(layer.backward_layer),
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
