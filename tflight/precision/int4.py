"""Int4 weights where LiteRT has int4 kernels, so that the raw `.tflite` shrinks, not only its gzip.

Which ops run int4 weights is a fact of the LiteRT version, checked by running
them (tests/test_precision.py::test_int4_*): in ai-edge-litert 2.3.0,
FULLY_CONNECTED and CONV_2D. `quantize_int4` gives those int4 per-channel
weights (packed two per byte in the file) and every other layer int8.
"""

from __future__ import annotations

from typing import Any

from tflight.precision.choices import Precision
from tflight.precision.model import _FloatModel
from tflight.precision.recipes import QuantizedModel, quantize_layers

__all__ = ["quantize_int4"]

# Ops with int4-weight kernels in ai-edge-litert 2.3.0.
_INT4_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D"})


def quantize_int4(
    model: Any,
    *,
    calibration_data: Any,
    test_data: tuple[Any, Any] | Any = None,
    output: int | str | None = None,
) -> QuantizedModel:
    """Int4 weights wherever LiteRT 2.3.0 has int4 kernels, int8 elsewhere.

    FULLY_CONNECTED and CONV_2D get int4 per-channel weights with int8
    activations (packed two per byte in the file, so the raw `.tflite`
    shrinks); every other layer is int8. Made for clustered (≤ 16 clusters)
    and QAT models, whose weights already sit on few levels: pass the QAT
    Keras model (its float weights are used) or its float `.tflite`.

    Args:
      model: as for `precision_sensitivity`.
      calibration_data: inputs for the activation ranges.
      test_data: optional `(x, y)` to verify the result on.
      output: the output (name or index) the verification measures.

    Returns:
      A `QuantizedModel`.
    """
    fm = _FloatModel(model, sample=None)
    layers = {layer.name: Precision.INT4 if layer.op in _INT4_OPS else Precision.INT8
              for layer in fm.layers}
    return quantize_layers(fm.content, layers, calibration_data=calibration_data,
                           other=Precision.INT8, test_data=test_data, output=output)
