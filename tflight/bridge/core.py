"""Rebuild Keras 3 models in tf_keras (Keras 2) and back, with the same weights.

TF-MOT (pruning, quantization-aware training, clustering) only accepts tf_keras
models, and a Keras 3 model's saved config does not load in tf_keras as is.
`to_tf_keras` and `to_keras3` walk the model's graph, translate every layer's
config, call the translated layers in the same order with the same wiring
(shared layers stay shared, nested models stay nested), copy the weights layer
by layer, and then check that both models give the same outputs on random
inputs. A verified model's `BridgeReport` is `report_of(model)`.

Where the parts live, all in `tflight.bridge`:

- `rebuild`: the one graph walk both directions share; `generations`: what
  differs between Keras 3 and tf_keras graphs (and `Direction`).
- `configs`: layer-config translation tables (dtype policies, initializers,
  activations whose meaning changed, options one generation lacks).
- `own_objects`: the bridge's own layers, carrying graph operations that are
  not layers (`x + 3.0`, `keras.ops.*`, tf_keras' `TFOpLambda`) and Keras 3
  activations tf_keras lacks; saved files name them, and loading rebuilds only
  what `ops` allowlists.
- `tracing`: keras-hub blocks and user blocks registered with `inline`,
  rebuilt from the layers their `call` uses.
- `registry`: user translations (`register`, `unregister`, `inline`).
- `verify`: `compare` and `BridgeReport`; `advice`: what the compression code
  tells users about layers TF-MOT does not know (`unsupported_advice`,
  `quantize_config`).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tflight._keras import is_keras3_model, is_tf_keras_model

# Imported for its side effect as well: saved bridged models may name this
# module, and loading one must find the bridge's own layers registered.
from tflight.bridge import own_objects  # noqa: F401
from tflight.bridge.generations import Direction
from tflight.bridge.rebuild import rebuild
from tflight.bridge.verify import DEFAULT_ATOL, DEFAULT_RTOL, BridgeReport, compare
from tflight.errors import BridgeError

__all__ = ["to_tf_keras", "to_keras3", "report_of"]


def _bridge(model: Any, direction: Direction, *, verify: bool, atol: float) -> Any:
    if atol < 0:
        raise BridgeError(f"atol must be >= 0, got {atol}.")
    start = time.perf_counter()
    new, pairs = rebuild(model, direction)
    if verify:
        report = compare(model, new, atol=atol, rtol=DEFAULT_RTOL)
        report = dataclasses.replace(
            report,
            num_layers=len(pairs),
            seconds=time.perf_counter() - start,
        )
        if not report.passed:
            raise BridgeError(
                f"The rebuilt model '{new.name}' disagrees with '{model.name}' by up to "
                f"{report.max_abs_diff:.3g} (tolerance {report.tolerance:.3g}) on random inputs. "
                "A layer's "
                "translation does not compute the same function; register a translation "
                "for custom layers, or pass a larger atol if the difference is rounding."
            )
        new._tflight_bridge_report = report
    return new


def to_tf_keras(model: Any, *, verify: bool = True, atol: float = DEFAULT_ATOL) -> Any:
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
        atol: Largest absolute output difference that passes the check, plus
            `DEFAULT_RTOL` (1e-4) of the largest output magnitude: float32 rounding
            grows with the outputs and the depth of the model.

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


def to_keras3(model: Any, *, verify: bool = True, atol: float = DEFAULT_ATOL) -> Any:
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
