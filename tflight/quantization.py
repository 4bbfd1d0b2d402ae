"""Quantization-aware training (QAT) and the Keras-vs-TFLite agreement check.

`quantize` wraps a copy of the model with TF-MOT's default 8-bit fake-quant
scheme, so that fine-tuning learns weights and activation ranges that survive
int8 rounding. The QAT model *is* what the converter needs:
`strip_quantization` checks that and hands it back; convert it with
`converters.convert(model, "int8", representative_data=...)`.

A QAT model that scores well in Keras can still disagree with its int8
`.tflite` (TF-MOT issue #368: "QAT good, TFLite bad"). `check_agreement` runs
both on the same inputs and raises when their top-1 predictions differ on more
than a set share of them, so the gap never passes silently.

References:
  Jacob et al. "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", CVPR 2018.
  Krishnamoorthi. "Quantizing deep convolutional networks for efficient
  inference: A whitepaper", 2018.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight._keras import is_tf_keras_model, tf_keras, tfmot, tfmot_internal
from tflight.compose import (
    Selector,
    _as_tf_keras,
    _check_names_exist,
    _check_selector,
    _compile,
    _layer_matches,
)
from tflight.errors import CompressionError, UnsupportedLayerError

__all__ = [
    "QAT",
    "quantize",
    "strip_quantization",
    "check_agreement",
    "AgreementReport",
]


def _registry() -> Any:
    registry = tfmot_internal("quantization.keras.default_8bit.default_8bit_quantize_registry")
    return registry.Default8BitQuantizeRegistry()


def _is_quantized(model: Any) -> bool:
    kinds = (
        tfmot_internal("quantization.keras.quantize_wrapper").QuantizeWrapper,
        tfmot_internal("quantization.keras.quantize_layer").QuantizeLayer,
    )
    return any(isinstance(layer, kinds) for layer in model.layers)


@dataclasses.dataclass(frozen=True)
class QAT:
    """Quantization-aware training with the default 8-bit scheme, as a technique.

    Args:
      keep_float: layers left in float (see `tflight.compose.Selector`), e.g.
        a sensitive first or last layer; default: quantize every layer.
      unsupported: `"raise"` (default) names every layer TF-MOT cannot
        quantize (LayerNormalization, Conv1D, ...); `"keep_float"` leaves
        them in float, explicitly.

    After `Prune`, the sparsity-preserving scheme (PQAT) is used; after
    `Cluster`, the cluster-preserving one (CQAT, PCQAT after both).
    """

    keep_float: Selector = None
    unsupported: str = "raise"

    provides = frozenset({"int8"})

    def __post_init__(self) -> None:
        _check_selector(self.keep_float, arg="keep_float")
        if self.unsupported not in ("raise", "keep_float"):
            raise CompressionError(
                f"`unsupported` must be 'raise' or 'keep_float', got {self.unsupported!r}."
            )

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
    ) -> Any:
        """Returns a QAT-wrapped tf_keras copy of `model` (see `quantize`)."""
        base = _as_tf_keras(model, what="quantize")
        if _is_quantized(base):
            raise CompressionError(
                f"Model {base.name!r} is already quantization-aware; apply QAT to the float model."
            )
        if self.keep_float is not None:
            _check_names_exist(base, self.keep_float, arg="keep_float")
        registry = _registry()
        keep = {
            layer.name
            for layer in base.layers
            if self.keep_float is not None and _layer_matches(layer, self.keep_float)
        }
        bad = [
            layer
            for layer in base.layers
            if layer.name not in keep and not registry.supports(layer)
        ]
        if bad and self.unsupported == "raise":
            listed = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer in bad)
            raise UnsupportedLayerError(
                f"TF-MOT's 8-bit QAT does not support: {listed}. Leave them in float with "
                "`unsupported='keep_float'` (or list them in `keep_float`), or replace them "
                "with supported layers (Conv2D, DepthwiseConv2D, Dense, BatchNormalization, ...)."
            )
        keep |= {layer.name for layer in bad}
        if all(layer.name in keep for layer in base.layers if layer.weights):
            raise CompressionError(
                f"No layer with weights is left to quantize in model {base.name!r} "
                f"(kept float: {sorted(keep)})."
            )
        mot = tfmot().quantization.keras

        def annotate(layer: Any) -> Any:
            if layer.name in keep:
                return layer
            return mot.quantize_annotate_layer(layer)

        scheme = _scheme(preserve)
        try:
            annotated = tf_keras().models.clone_model(base, clone_function=annotate)
            with mot.quantize_scope():
                qat = mot.quantize_apply(annotated, scheme)
        except (ValueError, RuntimeError) as e:
            raise CompressionError(f"TF-MOT could not quantize model {base.name!r}: {e}") from e
        _compile(qat, compile)
        return qat

    def callbacks(self, model: Any) -> list[Any]:
        return []

    def strip(self, model: Any) -> Any:
        return strip_quantization(model)


def _scheme(preserve: frozenset[str]) -> Any:
    mot = tfmot()
    if "clusters" in preserve:
        return mot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity="sparsity" in preserve
        )
    if "sparsity" in preserve:
        return mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return mot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


def quantize(
    model: Any,
    *,
    keep_float: Selector = None,
    unsupported: str = "raise",
    compile: dict[str, Any] | None = None,
) -> Any:
    """Wraps a copy of `model` for 8-bit quantization-aware training.

    TF-MOT drops the optimizer when wrapping, so the result is compiled only
    if `compile` is given. QAT needs no callback.

    Convert a whole-model QAT model in `"int8"` mode. With `keep_float`,
    convert in `"dynamic"` mode: the QAT layers become int8 from their learned
    ranges and the kept layers stay float; `"int8"` would quantize the kept
    layers post-training, which the QAT model never saw (`check_agreement`
    reports the gap).

    Args:
      model: a Keras 3 (bridged to tf_keras) or tf_keras Sequential/Functional
        model; it is not modified.
      keep_float: layers to leave in float (class, names or predicate).
      unsupported: `"raise"` or `"keep_float"` for layers TF-MOT cannot quantize.
      compile: `Model.compile` kwargs applied to the wrapped model.

    Returns:
      The QAT tf_keras model.

    Raises:
      UnsupportedLayerError: layers the scheme cannot quantize (names each).
      CompressionError: bad arguments or an unsupported model.

    Example:
      >>> qat = tflight.quantize(model, compile={"optimizer": "adam", "loss": loss})
      >>> tflight.fit(qat, x, y, epochs=1)
      >>> result = converters.convert(tflight.strip_quantization(qat), "int8",
      ...                             representative_data=x[:200])
      >>> tflight.check_agreement(qat, result, x_test)

    References:
      Jacob et al. "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference", CVPR 2018.
    """
    return QAT(keep_float=keep_float, unsupported=unsupported).apply(model, compile=compile)


def strip_quantization(model: Any) -> Any:
    """Returns the QAT model in the form the converter expects.

    The fake-quant wrappers carry the learned ranges the converter turns into
    int8 scales, so nothing is removed: this checks that `model` really is a
    QAT model and returns it, so that every technique ends with a strip.

    Args:
      model: a model returned by `quantize` (or a pipeline ending in QAT).

    Returns:
      `model` itself.

    Raises:
      CompressionError: `model` is not quantization-aware.
    """
    if not is_tf_keras_model(model) or not _is_quantized(model):
        raise CompressionError(
            f"strip_quantization expects a model returned by tflight.quantize, got "
            f"{type(model).__qualname__} {getattr(model, 'name', '')!r} without QAT wrappers."
        )
    return model


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    """How often a Keras model and its `.tflite` pick the same class.

    Attributes:
      agreement: share of samples with the same top-1 class.
      samples: number of samples compared.
      keras_accuracy: Keras top-1 accuracy (if labels were given).
      tflite_accuracy: TFLite top-1 accuracy (if labels were given).
      max_abs_diff: largest absolute difference of the outputs.
    """

    agreement: float
    samples: int
    keras_accuracy: float | None
    tflite_accuracy: float | None
    max_abs_diff: float

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints the agreement and, if known, both accuracies."""
        line = f"top-1 agreement Keras vs TFLite: {self.agreement:.2%} on {self.samples} samples"
        if self.keras_accuracy is not None and self.tflite_accuracy is not None:
            line += f"; accuracy Keras {self.keras_accuracy:.2%}, TFLite {self.tflite_accuracy:.2%}"
        print_fn(line)


def check_agreement(
    model: Any,
    tflite: Any,
    x: np.ndarray,
    *,
    y: np.ndarray | None = None,
    min_agreement: float = 0.99,
    batch_size: int = 256,
) -> AgreementReport:
    """Compares a (QAT) Keras model with its `.tflite` on the same inputs.

    Args:
      model: the Keras model the flatbuffer was converted from.
      tflite: a `converters.ConversionResult`, `.tflite` bytes, a path or a
        `converters.TFLiteModel`.
      x: inputs, float32, batched.
      y: optional integer labels, to report both accuracies.
      min_agreement: the lowest acceptable share of equal top-1 predictions.
      batch_size: Keras prediction batch size.

    Returns:
      An `AgreementReport`.

    Raises:
      CompressionError: agreement below `min_agreement`, bad arguments or
        inputs the two models disagree on in shape.

    References:
      tensorflow/model-optimization issue #368 (QAT accuracy lost in TFLite).
    """
    import converters

    if not 0.0 <= min_agreement <= 1.0:
        raise CompressionError(f"`min_agreement` must be in [0, 1], got {min_agreement!r}.")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim < 2 or len(x) == 0:
        raise CompressionError(
            f"`x` must be a non-empty batch of inputs, got an array of shape {x.shape}."
        )
    if isinstance(tflite, converters.TFLiteModel):
        runner = tflite
    else:
        source = getattr(tflite, "flatbuffer", tflite)
        runner = converters.TFLiteModel(source)
    keras_out = np.asarray(model.predict(x, batch_size=batch_size, verbose=0))
    lite_out = np.asarray(runner.predict(x))
    if keras_out.shape != lite_out.shape:
        raise CompressionError(
            f"The Keras model outputs shape {keras_out.shape} but the .tflite outputs "
            f"{lite_out.shape}; compare a model with the flatbuffer converted from it."
        )
    keras_top = keras_out.reshape(len(x), -1).argmax(axis=1)
    lite_top = lite_out.reshape(len(x), -1).argmax(axis=1)
    if y is not None:
        from tflight._io import class_ids

        y = class_ids(y, len(x), error=CompressionError)
    report = AgreementReport(
        agreement=float(np.mean(keras_top == lite_top)),
        samples=len(x),
        keras_accuracy=None if y is None else float(np.mean(keras_top == y)),
        tflite_accuracy=None if y is None else float(np.mean(lite_top == y)),
        max_abs_diff=float(np.max(np.abs(keras_out - lite_out))),
    )
    if report.agreement < min_agreement:
        raise CompressionError(
            f"The .tflite disagrees with the Keras model: top-1 agreement "
            f"{report.agreement:.2%} on {report.samples} samples, below min_agreement "
            f"{min_agreement:.2%} (max |diff| {report.max_abs_diff:.4g}). Convert the QAT model "
            "itself (tflight.strip_quantization) in 'int8' mode with representative data drawn "
            "from the training inputs, and fine-tune QAT for more steps so that its ranges settle."
        )
    return report
