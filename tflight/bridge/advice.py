"""Advice for the compression code about the layers the bridge makes.

TF-MOT knows tf_keras' built-in layers only. A bridged model can also hold the
bridge's own graph-operation layers, Keras 3 activations tf_keras lacks and
users' translated layers. `unsupported_advice` says, in one sentence, why a
technique cannot handle such a layer and what to do; `quantize_config` gives
TF-MOT the QuantizeConfig for the bridged activations LiteRT runs in int8.
"""

from __future__ import annotations

from typing import Any

from tflight._keras import tf_keras, tfmot_internal
from tflight.bridge.own_objects import tfk_support
from tflight.bridge.registry import twin_source
from tflight.errors import BridgeError

__all__ = ["unsupported_advice", "quantize_config"]


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
    support = tfk_support()
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
    source = twin_source(type(layer))
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
    support = tfk_support()
    if type(layer) is not tf_keras().layers.Activation:
        return None
    activation = layer.activation
    if not isinstance(activation, support.Keras3Activation):
        return None
    if activation.name not in _OUTPUT_QUANTIZED_ACTIVATIONS:
        return None
    configs = tfmot_internal("quantization.keras.default_8bit.default_8bit_quantize_configs")
    return configs.Default8BitOutputQuantizeConfig()
