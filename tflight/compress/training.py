"""Training a wrapped model: the callbacks it needs, `fit`, and `freeze`.

A pruned model needs TF-MOT's `UpdatePruningStep`; `callbacks(model)` builds
what a model needs and `fit` adds it, and a wrapped model trained without it
fails at the start of `fit` with `MissingCallbackError` instead of at run time.
`freeze` keeps only a few layers trainable (parameter-efficient fine-tuning),
looking through TF-MOT's wrappers.
"""

from __future__ import annotations

import types
from typing import Any

from tflight._keras import is_tf_keras_model, tfmot, tfmot_internal
from tflight.compress.technique import Selector, check_names_exist, check_selector, layer_matches
from tflight.errors import CompressionError, MissingCallbackError

__all__ = [
    "callbacks",
    "fit",
    "freeze",
    "install_guard",
    "prune_wrapper_class",
    "pruning_wrappers",
]

_GUARD_ATTR = "_tflight_required_callbacks"


def prune_wrapper_class() -> type:
    return tfmot_internal("sparsity.keras.pruning_wrapper").PruneLowMagnitude


def pruning_wrappers(model: Any) -> list[Any]:
    wrapper = prune_wrapper_class()
    found = []
    for layer in model.layers:
        if isinstance(layer, wrapper):
            found.append(layer)
        elif is_tf_keras_model(layer):
            found.extend(pruning_wrappers(layer))
    return found


def callbacks(model: Any) -> list[Any]:
    """The Keras callbacks that training `model` needs, built fresh.

    A pruned model needs TF-MOT's `UpdatePruningStep` to advance the pruning
    schedule; QAT and clustered models need none. Pass the list to `fit`
    (add your own callbacks to it), or use `tflight.fit`, which does it.

    Args:
      model: a model returned by `prune`, `quantize`, `cluster` or any model.

    Returns:
      A new list of callback objects (empty when nothing is needed).

    Example:
      >>> pruned = tflight.prune(model, sparsity=0.5, compile={...})
      >>> pruned.fit(x, y, epochs=2, callbacks=tflight.callbacks(pruned))
    """
    if not is_tf_keras_model(model):
        return []
    if pruning_wrappers(model):
        return [tfmot().sparsity.keras.UpdatePruningStep()]
    return []


def install_guard(model: Any, *, technique: str) -> None:
    """Makes `model.fit` fail at once if a required callback is missing."""
    required = tuple(type(cb) for cb in callbacks(model))
    if not required:
        return
    object.__setattr__(model, _GUARD_ATTR, (technique, required))
    plain_fit = type(model).fit

    def guarded_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = list(kwargs.get("callbacks") or [])
        missing = [cls for cls in required if not any(isinstance(cb, cls) for cb in given)]
        if missing:
            names = ", ".join(cls.__name__ for cls in missing)
            raise MissingCallbackError(
                f"Model {self.name!r} was wrapped by {technique} and needs the callback(s) "
                f"{names} during fit, but `callbacks` had {[type(cb).__name__ for cb in given]}. "
                "Pass `callbacks=tflight.callbacks(model)` (plus your own) to `fit`, or train "
                "with `tflight.fit(model, x, y, ...)`."
            )
        return plain_fit(self, *args, **kwargs)

    # An instance attribute, so that only this wrapped model is guarded.
    object.__setattr__(model, "fit", types.MethodType(guarded_fit, model))


def fit(model: Any, *args: Any, **kwargs: Any) -> Any:
    """`model.fit(*args, **kwargs)` with the callbacks the model needs added.

    Args:
      model: a compiled model returned by a technique.
      *args: passed to `Model.fit`.
      **kwargs: passed to `Model.fit`; `callbacks` are kept and completed.

    Returns:
      The Keras `History`.

    Raises:
      CompressionError: the model was not compiled.
    """
    if getattr(model, "optimizer", None) is None:
        raise CompressionError(
            f"Model {model.name!r} is not compiled. TF-MOT wrapping drops the optimizer: pass "
            "`compile={'optimizer': ..., 'loss': ...}` to the technique, or call "
            "`model.compile(...)` before `tflight.fit`."
        )
    given = list(kwargs.pop("callbacks", None) or [])
    needed = [cb for cb in callbacks(model) if not any(type(g) is type(cb) for g in given)]
    return model.fit(*args, callbacks=given + needed, **kwargs)


# --------------------------------------------------------------------------
# Parameter-efficient fine-tuning.


def _unwrap(layer: Any) -> Any:
    inner = getattr(layer, "layer", None)
    return inner if inner is not None and hasattr(layer, "layer") else layer


def freeze(model: Any, *, train: Selector) -> list[str]:
    """Freezes every top-level layer of a wrapped model except those `train` picks.

    Use during a compression fine-tune to update only a few layers (e.g. the
    classifier head), which is faster and keeps the rest of the network as it
    was. Selection looks through TF-MOT wrappers, so `train=["logits"]` and
    `train=tf_keras.layers.Dense` work on a pruned, clustered or QAT model.
    The model is changed in place (it is the library's copy, not the user's);
    call it before `compile`, as Keras requires.

    Args:
      model: a tf_keras model returned by `prune`, `quantize` or `cluster`.
      train: a `Selector` of the layers that stay trainable.

    Returns:
      The names of the layers left trainable.

    Raises:
      CompressionError: `train` is malformed, names unknown layers, or selects
        no layer with weights.

    References:
      Houlsby et al. "Parameter-Efficient Transfer Learning for NLP", ICML 2019.
    """
    if not is_tf_keras_model(model):
        raise CompressionError(
            f"freeze expects the tf_keras model returned by a technique, got "
            f"{type(model).__qualname__}. Apply `tflight.prune`/`quantize`/`cluster` first."
        )
    if train is None:
        raise CompressionError("`train` must select the layers to keep trainable, got None.")
    check_selector(train, arg="train")
    check_names_exist(model, train, arg="train")
    kept = []
    for layer in model.layers:
        inner = _unwrap(layer)
        chosen = layer_matches(layer, train) or layer_matches(inner, train)
        layer.trainable = chosen
        # TF-MOT wrappers report their inner layer's weights whatever their own flag.
        inner.trainable = chosen
        if not chosen and layer is not inner and getattr(layer, "_trainable_weights", None):
            # QuantizeWrapperV2 also lists the inner kernel among its own trainable
            # weights and ignores `trainable`: move them where Keras will not train them.
            # (object.__setattr__: Keras' own __setattr__ would track the variables
            # back into the trainable list.)
            moved = list(layer._trainable_weights)
            object.__setattr__(layer, "_trainable_weights", [])
            object.__setattr__(
                layer, "_non_trainable_weights", list(layer._non_trainable_weights) + moved
            )
        if chosen and layer.trainable_weights:
            kept.append(layer.name)
    if not kept:
        raise CompressionError(
            f"`train`={train!r} leaves no trainable weights in model {model.name!r}; select at "
            "least one layer with weights (e.g. the last Dense layer)."
        )
    return kept

