"""Post-training quantization of `.tflite` files per layer: recipes, sensitivity, the search.

`quantize_layers` applies a per-layer precision plan (float, fp16, int16x8, int8,
int4) with litert-quantizer; `precision_sensitivity` measures each layer;
`search_precision` finds the smallest or fastest plan within an accuracy budget
that holds on new data.

Modules, in the order they build on each other: `choices` (the `Precision`
words), `data` (checking and splitting the samples), `model` (the float model
and its layers), `stats` (binomial bounds on a drop), `scoring` (a variant
against the float model, in LiteRT), `recipes` (litert-quantizer recipes per
layer), `int4`, `layer_sensitivity` and `search`.
"""

from tflight._lazy import attach

_EXPORTS = {
    "Precision": "tflight.precision.choices",
    "QuantizedModel": "tflight.precision.recipes",
    "PrecisionSensitivity": "tflight.precision.layer_sensitivity",
    "precision_sensitivity": "tflight.precision.layer_sensitivity",
    "quantize_int4": "tflight.precision.int4",
    "quantize_layers": "tflight.precision.recipes",
    "SearchResult": "tflight.precision.search",
    "search_precision": "tflight.precision.search:search",
}
_DEPRECATED = {
    "SensitivityReport": "PrecisionSensitivity",
    "quantization_sensitivity": "precision_sensitivity",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, deprecated=_DEPRECATED)
