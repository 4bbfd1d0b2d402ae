"""The float model a precision analysis starts from, and its layers.

`_FloatModel` takes a float `.tflite` (path or bytes), a `.keras`/`.h5` path
or a Keras model (converted to float first; a QAT model gives its trained
float weights), verifies it in LiteRT, and lists its layers: the ops with a
constant float weight, as litert-quantizer addresses them (`Layer.scope`).
The `.tflite` itself is read through `converters.flatbuffer`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from tflight.errors import PrecisionError
from tflight.precision.choices import _FLOAT32, _STORED, _TYPE_NAMES, Precision
from tflight.precision.data import _check_array

__all__ = ["Layer", "list_layers"]

_WEIGHT_OPS = frozenset(
    {
        "CONV_2D",
        "DEPTHWISE_CONV_2D",
        "FULLY_CONNECTED",
        "BATCH_MATMUL",
        "EMBEDDING_LOOKUP",
        "CONV_2D_TRANSPOSE",
    }
)
# litert-quantizer names TFLite's TRANSPOSE_CONV "CONV_2D_TRANSPOSE"; layers are
# listed (and assignments keyed) by the quantizer's names.
_QUANTIZER_OP_NAMES = {"TRANSPOSE_CONV": "CONV_2D_TRANSPOSE"}
# litert-quantizer cuts an op's scope at this length (tfl_flatbuffer_utils.get_op_scope).
_MAX_SCOPE = 10000


@dataclasses.dataclass(frozen=True)
class Layer:
    """A TFLite op with constant weights, as litert-quantizer addresses it.

    Attributes:
      name: a short display name (from the op's output tensor name).
      scope: litert-quantizer's scope of the op (its output tensor names).
      op: the TFLite op name, e.g. `FULLY_CONNECTED`.
      params: elements of its largest constant float tensor.
    """

    name: str
    scope: str
    op: str
    params: int


def _short_name(scope: str) -> str:
    first = scope.split(";")[0]
    parts = first.split("/")
    return "/".join(parts[1:3]) if len(parts) > 2 else first


def _ops(model: Any, subgraph_index: int = 0) -> list[tuple[str, str, int, int, int]]:
    """Per op: (name, litert-quantizer scope, float32 weight elements, weight type, elements).

    `model` is parsed by `converters.flatbuffer.parse`. The scope is what
    litert-quantizer's recipes match: the op's output tensor names (its input
    names when it has no named output), each followed by ";".
    """
    from converters import flatbuffer

    out = []
    for w in flatbuffer.op_weights(model, subgraph_index):
        names = w.outputs or w.inputs
        scope = "".join(f"{n};" for n in names)[:_MAX_SCOPE]
        params = w.weight_elements if w.weight_type == _FLOAT32 else 0
        name = _QUANTIZER_OP_NAMES.get(w.op, w.op)
        out.append((name, scope, params, w.weight_type, w.weight_elements))
    return out


def _not_as_requested(
    content: bytes, layers: Sequence[Layer], requested: Mapping[str, Precision]
) -> dict[str, str]:
    """Layers whose weights `content` does not store as `requested`, with what it stores.

    litert-quantizer leaves a layer float when a recipe does not apply to its
    op (blockwise int4 CONV_2D), and may store another type than asked.
    """
    from converters import flatbuffer

    stored = {scope: (wtype, n) for _, scope, _, wtype, n in _ops(flatbuffer.parse(content))}
    out = {}
    for layer in layers:
        p = requested.get(layer.name, Precision.FLOAT)
        wtype, n = stored.get(layer.scope, (-1, 0))
        if n == layer.params and wtype != _STORED[p]:
            out[layer.name] = _TYPE_NAMES.get(wtype, f"type {wtype}")
    return out


def _is_qat(model: Any) -> bool:
    from tflight._keras import is_tf_keras_model, tfmot_internal

    if not is_tf_keras_model(model):
        return False
    wrapper = tfmot_internal("quantization.keras.quantize_wrapper").QuantizeWrapper
    return any(isinstance(layer, wrapper) for layer in model.layers)


def _float_twin_of_qat(model: Any) -> Any:
    """A plain tf_keras model with the QAT model's trained float weights.

    litert-quantizer reads float graphs only, and a QAT model converts to int8
    weights behind DEQUANTIZE ops; so the fake-quant wrappers are taken off
    (their learned activation ranges are replaced by calibration) and the
    weights the QAT training left (clustered centroids, zeros) are kept.
    """
    from tflight._keras import tf_keras, tfmot_internal

    k = tf_keras()
    wrapper = tfmot_internal("quantization.keras.quantize_wrapper").QuantizeWrapper
    qlayer = tfmot_internal("quantization.keras.quantize_layer").QuantizeLayer

    def clone(layer: Any) -> Any:
        if isinstance(layer, wrapper):
            inner = layer.layer
            config = inner.get_config()
            act = config.get("activation")
            if isinstance(act, dict) and act.get("class_name") == "QuantizeAwareActivation":
                config["activation"] = act["config"]["activation"]
            return inner.__class__.from_config(config)
        if isinstance(layer, qlayer):
            return k.layers.Activation("linear", name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    try:
        plain = k.models.clone_model(model, clone_function=clone)
        for src, dst in zip(model.layers, plain.layers, strict=True):
            if isinstance(src, qlayer):
                continue
            if not isinstance(src, wrapper):
                dst.set_weights(src.get_weights())
                continue
            # The wrapper holds the inner layer's kernel ("conv/kernel:0") next to
            # its own quantizer variables ("quant_conv/kernel_min:0").
            # Layers of layers (MultiHeadAttention's "mha/query/kernel:0") are
            # matched by the path below the layer's name, not the last part.
            prefix = src.layer.name + "/"
            own = {w.name[len(prefix):]: w for w in src.weights if w.name.startswith(prefix)}
            dst.set_weights([
                own[w.name[len(prefix):] if w.name.startswith(prefix) else w.name.split("/")[-1]]
                .numpy() for w in dst.weights
            ])
    except Exception as e:  # noqa: BLE001 - any failure means we cannot read this QAT model
        fix = "Pass the float model, or its float .tflite (converters.convert(model, 'fp32'))."
        raise PrecisionError(
            f"Could not take the float weights out of QAT model {model.name!r}: {e}. {fix}",
            option="model", fix=fix, kind="unreadable_qat",
        ) from e
    return plain


class _FloatModel:
    """A float `.tflite` model, verified in LiteRT, with its layers."""

    def __init__(self, model: Any, *, sample: np.ndarray | None) -> None:
        import converters
        from converters.errors import ConversionError

        self.source = "the model bytes"
        content: bytes | None = None
        path: str | None = None
        if isinstance(model, (bytes, bytearray, memoryview)):
            content = bytes(model)
        elif isinstance(model, (str, os.PathLike)):
            self.source = repr(os.fspath(model))
            if os.fspath(model).endswith(".tflite"):
                path = os.fspath(model)
            else:
                from tflight import _io

                model = _io.load_model(model, error=PrecisionError)
        if content is None and path is None:
            where = "" if self.source == "the model bytes" else f" from {self.source}"
            self.source = f"Keras model {getattr(model, 'name', '')!r}{where}"
            if _is_qat(model):
                self.source = f"QAT {self.source} (its float weights)"
                model = _float_twin_of_qat(model)
            try:
                content = converters.convert(
                    model, "fp32", sample_data=None if sample is None else sample[:32]
                ).flatbuffer
            except ConversionError as e:
                raise PrecisionError(f"Could not convert the Keras model to float: {e}",
                                     option="model", kind="conversion_failed") from e
        try:
            self.runtime = converters.TFLiteModel(path if path is not None else content)
        except ConversionError as e:
            raise PrecisionError(f"Cannot use {self.source}: {e}", option="model",
                                 kind="unusable_model") from e
        self.content = self.runtime.content
        self._read()

    def _read(self) -> None:
        from converters import flatbuffer

        try:
            model = flatbuffer.parse(self.content)
            is_float = not flatbuffer.has_quantized_tensors(model)
        except Exception as e:  # noqa: BLE001 - LiteRT ran it, but its flatbuffer does not parse
            raise PrecisionError(f"Cannot read {self.source} as a .tflite flatbuffer: {e}",
                                 option="model", kind="unusable_model") from e
        if not is_float:
            fix = ("Pass the fp32 .tflite (converters.convert(model, 'fp32')) or the Keras "
                   "model.")
            raise PrecisionError(
                f"{self.source} is already quantized; litert-quantizer needs the float model. "
                f"{fix}", option="model", fix=fix, kind="already_quantized",
            )
        sigs = list(model.signatureDefs or [])
        if not sigs:
            fix = "convert it with converters.convert, which adds one."
            raise PrecisionError(f"{self.source} has no signature; {fix}", option="model",
                                 fix=fix, kind="no_signature")
        sig = sigs[0]
        self.signature = flatbuffer.text(sig.signatureKey)
        self.input_names = list(self.runtime.input_names)
        self.output_names = list(self.runtime.output_names)
        layers, other = [], 0
        for name, scope, params, _, _ in _ops(model, sig.subgraphIndex):
            if name in _WEIGHT_OPS and params > 0:
                layers.append(Layer(_short_name(scope), scope, name, params))
            else:
                other += 1
        names = [layer.name for layer in layers]
        self.layers = [
            dataclasses.replace(layer, name=layer.name if names.count(layer.name) == 1
                                else f"{layer.name}#{i}")
            for i, layer in enumerate(layers)
        ]
        self.n_other_ops = other
        self.input_shapes = [tuple(int(s) for s in d["shape_signature"][1:])
                             for d in self.runtime.input_details]

    def output_index(self, output: int | str | None) -> int:
        """The index of the output the metrics use (None: the first)."""
        if output is None:
            return 0
        names = self.output_names
        if isinstance(output, str):
            if output in names:
                return names.index(output)
        elif isinstance(output, int) and not isinstance(output, bool) and 0 <= output < len(names):
            return output
        raise PrecisionError(
            f"`output` {output!r} is not an output of {self.source}; its outputs are "
            f"{names} (pass a name or an index 0..{len(names) - 1}).",
            option="output", kind="unknown_output",
        )

    def check(self, x: Any, what: str, option: str | None = None) -> list[np.ndarray]:
        """Returns `x` as one float32 array per input, or raises one clear error.

        Args:
          x: one array (single-input models), a list of arrays in the model's
            input order, or a dict keyed by input name.
          what: how to name `x` in errors.
          option: the argument `x` was passed as (the errors' `option`).
        """
        names = self.input_names
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise PrecisionError(
                    f"{what} is a dict with keys {sorted(map(str, x))}, but {self.source} has "
                    f"the inputs {names}; pass one array per input name.",
                    option=option, kind="bad_inputs",
                )
            parts = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            parts = list(x)
        else:
            parts = [x]
        if len(parts) != len(names):
            raise PrecisionError(
                f"{what} holds {len(parts)} array(s), but {self.source} has {len(names)} inputs "
                f"({', '.join(names)}); pass a list of arrays in that order or a dict by name.",
                option=option, kind="bad_inputs",
            )
        out = []
        for a, name, shape in zip(parts, names, self.input_shapes, strict=True):
            label = what if len(names) == 1 else f"{what} (input {name!r})"
            out.append(_check_array(a, label, shape, self.source, option))
        if len({len(a) for a in out}) != 1:
            raise PrecisionError(
                f"{what}: the input arrays hold different numbers of samples "
                f"({[len(a) for a in out]}); pass the same samples for every input.",
                option=option, kind="bad_inputs",
            )
        return out


def list_layers(model: Any) -> list[Layer]:
    """The layers (ops with weights) of a float model, as the other functions name them."""
    return list(_FloatModel(model, sample=None).layers)
