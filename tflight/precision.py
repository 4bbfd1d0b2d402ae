"""Mixed precision for converted models: per-layer sensitivity, a search under an accuracy budget, int4.

A float `.tflite` model is quantized layer by layer with LiteRT's own quantizer
(`litert-quantizer`: its per-op recipes do the work; this module decides which
recipe each layer gets). Three things are built on it:

- `sensitivity`: quantize **one layer at a time** (every other layer stays
  float), run the result in LiteRT on the user's data and measure how far its
  output moves from the float model's (SNR, cosine similarity, KL divergence)
  and, with labels, the accuracy drop. Layers are ranked by that error.
- `tflight.precision_search.search`: the smallest (or, by a device profile's
  estimate, fastest) model whose accuracy drop on the user's validation data stays within a budget,
  choosing per layer among float, fp16, int16x8, int8 and int4 weights (per
  channel or blockwise). The result is verified in LiteRT against the float
  model on held-out samples the search never saw.
- `quantize_layers` / `quantize_int4`: one given assignment, e.g. int4 weights
  wherever LiteRT has int4 kernels (FULLY_CONNECTED and CONV_2D in
  ai-edge-litert 2.3.0), so that the raw `.tflite` shrinks, not only its gzip.

A "layer" is a TFLite op with a constant weight tensor (CONV_2D,
DEPTHWISE_CONV_2D, FULLY_CONNECTED, BATCH_MATMUL, EMBEDDING_LOOKUP,
CONV_2D_TRANSPOSE). All other ops (pooling, reshapes, softmax, adds, the pieces
of a LayerNormalization, ...) form one more group, "other ops", which follows
its own precision (float, int16x8 or int8). A layer litert-quantizer refuses at
a precision, leaves float or stores in another type is reported as such
(`LayerSensitivity.supported`, `QuantizedModel.not_as_assigned`), never counted
as quantized.

Calibration (activation ranges) uses its own samples, never the validation
samples; the search also keeps verification samples apart from the ones it
searches on.

References:
  Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks with
  Mixed-Precision", ICCV 2019 (per-layer sensitivity drives bit allocation).
  Wang et al., "HAQ: Hardware-Aware Automated Quantization with Mixed
  Precision", CVPR 2019 (a hardware cost model in the search).
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import gzip
import hashlib
import io
import logging
import math
import os
import re
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from tflight.errors import PrecisionError

__all__ = [
    "Precision",
    "Layer",
    "LayerSensitivity",
    "SensitivityReport",
    "Verification",
    "QuantizedModel",
    "OTHER_OPS",
    "list_layers",
    "sensitivity",
    "quantize_layers",
    "quantize_int4",
]

OTHER_OPS = "other ops"

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
# Ops with int4-weight kernels in ai-edge-litert 2.3.0 (checked by running them:
# tests/test_precision.py::test_int4_*).
_INT4_OPS = frozenset({"FULLY_CONNECTED", "CONV_2D"})
_MAX_CALIBRATION = 500


class Precision(enum.StrEnum):
    """Per-layer precisions; the values are the CLI words.

    - `float`: left as it is (float32).
    - `fp16`: float16 weights, float compute (litert-quantizer's float casting).
    - `int16x8`: int16 activations, int8 per-channel weights (static).
    - `int8`: int8 activations, int8 per-channel weights (static).
    - `int4`: int8 activations, int4 per-channel weights (static, packed 2 per byte).
    - `int4-block`: float activations quantized at run time, int4 weights with a
      scale per block of 32 (dynamic).
    """

    FLOAT = "float"
    FP16 = "fp16"
    INT16X8 = "int16x8"
    INT8 = "int8"
    INT4 = "int4"
    INT4_BLOCK = "int4-block"


_OTHER_CHOICES = (Precision.FLOAT, Precision.INT16X8, Precision.INT8)


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


# ----------------------------------------------------------------------------
# Reading the float model and the data.


@contextlib.contextmanager
def _quiet() -> Any:
    """Silences litert-quantizer's progress bars and log lines (it prints to stdout/stderr)."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(
            io.StringIO()
        ), warnings.catch_warnings():
            # Calibration keeps every tensor on purpose; LiteRT warns that this is for debugging.
            warnings.filterwarnings(
                "ignore", message=r".*experimental_preserve_all_tensors", category=UserWarning
            )
            yield
    finally:
        logger.setLevel(level)


def _short_name(scope: str) -> str:
    first = scope.split(";")[0]
    parts = first.split("/")
    return "/".join(parts[1:3]) if len(parts) > 2 else first


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
            prefix = src.layer.name + "/"
            own = {w.name[len(prefix):]: w for w in src.weights if w.name.startswith(prefix)}
            dst.set_weights([own[w.name.split("/")[-1]].numpy() for w in dst.weights])
    except Exception as e:  # noqa: BLE001 - any failure means we cannot read this QAT model
        raise PrecisionError(
            f"Could not take the float weights out of QAT model {model.name!r}: {e}. Pass the "
            "float model, or its float .tflite (converters.convert(model, 'fp32'))."
        ) from e
    return plain


class _FloatModel:
    """A float `.tflite` model read by litert-quantizer, with its layers."""

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
                raise PrecisionError(f"Could not convert the Keras model to float: {e}") from e
        try:
            self.runtime = converters.TFLiteModel(path if path is not None else content)
        except ConversionError as e:
            raise PrecisionError(f"Cannot use {self.source}: {e}") from e
        self.content = self.runtime.content
        self._read()

    def _read(self) -> None:
        from litert_quantizer.utils import tfl_flatbuffer_utils as fb

        try:
            with _quiet():
                model = fb.read_model(memoryview(self.content))
                is_float = fb.is_float_model(model)
        except Exception as e:  # noqa: BLE001 - the quantizer's own reader decides
            raise PrecisionError(f"litert-quantizer cannot read {self.source}: {e}") from e
        if not is_float:
            raise PrecisionError(
                f"{self.source} is already quantized; litert-quantizer needs the float model. "
                "Pass the fp32 .tflite (converters.convert(model, 'fp32')) or the Keras model."
            )
        if len(self.runtime.input_details) != 1:
            raise PrecisionError(
                f"{self.source} has {len(self.runtime.input_details)} inputs; mixed-precision "
                "analysis supports single-input models."
            )
        sigs = list(model.signatureDefs or [])
        if not sigs:
            raise PrecisionError(
                f"{self.source} has no signature; convert it with converters.convert, which adds one."
            )
        sig = sigs[0]
        self.signature = _decode(sig.signatureKey)
        self.input_name = _decode(sig.inputs[0].name)
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
        shape = self.runtime.input_details[0]["shape_signature"]
        self.input_shape = tuple(int(s) for s in shape[1:])

    def check(self, x: Any, what: str) -> np.ndarray:
        """Returns `x` as float32 or raises one clear error about its shape or dtype."""
        try:
            a = np.asarray(x)
        except Exception as e:  # noqa: BLE001
            raise PrecisionError(f"{what} is not an array: {e}") from e
        if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
            raise PrecisionError(
                f"{what} must be a numeric array of shape (n, *{self.input_shape}), got dtype "
                f"{a.dtype}; pass float inputs like the float model's."
            )
        got = tuple(a.shape[1:])
        if a.ndim < 1 or len(got) != len(self.input_shape) or any(
            e != -1 and e != g for e, g in zip(self.input_shape, got, strict=True)
        ):
            raise PrecisionError(
                f"{what} has samples of shape {got}, but {self.source} takes "
                f"{self.input_shape} (-1 = any); pass an array of shape (n, *{self.input_shape})."
            )
        if len(a) == 0:
            raise PrecisionError(f"{what} is empty; pass at least one sample.")
        return a.astype(np.float32)


# TFLite TensorType codes of stored weights, and what each precision stores.
_FLOAT32, _FLOAT16, _INT8, _INT4 = 0, 1, 9, 17
_STORED = {
    Precision.FLOAT: _FLOAT32,
    Precision.FP16: _FLOAT16,
    Precision.INT16X8: _INT8,
    Precision.INT8: _INT8,
    Precision.INT4: _INT4,
    Precision.INT4_BLOCK: _INT4,
}
_TYPE_NAMES = {_FLOAT32: "float32", _FLOAT16: "float16", _INT8: "int8", _INT4: "int4"}


def _ops(model: Any, subgraph_index: int = 0) -> list[tuple[str, str, int, int, int]]:
    """Per op: (name, litert-quantizer scope, float32 weight elements, weight type, elements).

    The weight is the op's largest constant input, found through a DEQUANTIZE
    op when the recipe stores it apart (fp16 and weight-only recipes).
    """
    from litert_quantizer.utils import tfl_flatbuffer_utils as fb

    subgraph = model.subgraphs[subgraph_index]
    producer = {}
    for op in subgraph.operators:
        for o in op.outputs:
            producer[int(o)] = op

    def constant(i: int) -> tuple[int, int] | None:
        t = subgraph.tensors[i]
        buf = model.buffers[t.buffer]
        if buf.data is not None and len(buf.data):
            return t.type, int(np.prod(t.shape)) if len(t.shape) else 1
        src = producer.get(i)
        if src is not None and fb.TFL_OP_CODE_TO_NAME.get(
            model.operatorCodes[src.opcodeIndex].builtinCode, ""
        ) == "DEQUANTIZE" and len(src.inputs) and src.inputs[0] >= 0:
            return constant(int(src.inputs[0]))
        return None

    out = []
    for op in subgraph.operators:
        name = fb.TFL_OP_CODE_TO_NAME.get(model.operatorCodes[op.opcodeIndex].builtinCode, "")
        weight = (-1, 0)
        for i in op.inputs:
            if i >= 0 and (c := constant(int(i))) is not None and c[1] > weight[1]:
                weight = c
        params = weight[1] if weight[0] == _FLOAT32 else 0
        out.append((name, fb.get_op_scope(op, subgraph.tensors), params, weight[0], weight[1]))
    return out


def _not_as_requested(
    content: bytes, layers: Sequence[Layer], requested: Mapping[str, Precision]
) -> dict[str, str]:
    """Layers whose weights `content` does not store as `requested`, with what it stores.

    litert-quantizer leaves a layer float when a recipe does not apply to its
    op (blockwise int4 CONV_2D), and may store another type than asked.
    """
    from litert_quantizer.utils import tfl_flatbuffer_utils as fb

    with _quiet():
        model = fb.read_model(memoryview(content))
    stored = {scope: (wtype, n) for _, scope, _, wtype, n in _ops(model)}
    out = {}
    for layer in layers:
        p = requested.get(layer.name, Precision.FLOAT)
        wtype, n = stored.get(layer.scope, (-1, 0))
        if n == layer.params and wtype != _STORED[p]:
            out[layer.name] = _TYPE_NAMES.get(wtype, f"type {wtype}")
    return out


def _decode(s: Any) -> str:
    return s.decode() if isinstance(s, bytes) else str(s)


def _labels(y: Any, n: int, what: str) -> np.ndarray | None:
    if y is None:
        return None
    a = np.asarray(y)
    if a.ndim == 2:
        a = a.argmax(-1)
    if a.ndim != 1 or len(a) != n or not np.issubdtype(a.dtype, np.number):
        raise PrecisionError(
            f"{what} must be integer labels (n,) or one-hot (n, classes) for the {n} samples, "
            f"got dtype {a.dtype} and shape {np.shape(y)}."
        )
    return a.astype(np.int64)


def _row_hashes(x: np.ndarray) -> set[bytes]:
    return {hashlib.blake2b(r.tobytes(), digest_size=12).digest() for r in x}


def _check_disjoint(calibration: np.ndarray, x: np.ndarray, what: str) -> None:
    shared = len(_row_hashes(calibration) & _row_hashes(x))
    if shared:
        raise PrecisionError(
            f"{shared} sample(s) of the calibration data are also in {what}; the accuracy drop "
            "must be measured on samples the calibration did not see. Pass separate data, or "
            "leave calibration_data=None to hold part of the validation data out for it."
        )


# ----------------------------------------------------------------------------
# Quantizing with litert-quantizer.


def _add(q: Any, regex: str, p: Precision) -> None:
    from litert_quantizer import qtyping
    from litert_quantizer.algorithm_manager import AlgorithmName

    if p is Precision.FLOAT:
        q.update_quantization_recipe(regex, "*", None, algorithm_key=AlgorithmName.NO_QUANTIZE)
    elif p is Precision.FP16:
        q.add_weight_only_config(regex, "*", 16, algorithm_key=AlgorithmName.FLOAT_CASTING)
    elif p is Precision.INT16X8:
        q.add_static_config(regex, "*", 16, 8)
    elif p is Precision.INT8:
        q.add_static_config(regex, "*", 8, 8)
    elif p is Precision.INT4:
        q.add_static_config(regex, "*", 8, 4)
    elif p is Precision.INT4_BLOCK:
        q.add_dynamic_config(regex, "*", 4, qtyping.QuantGranularity.BLOCKWISE_32)
    else:  # pragma: no cover - the enum is closed
        raise AssertionError(p)


class _Builder:
    """Builds quantized variants of one float model; calibrates once."""

    def __init__(self, fm: _FloatModel, calibration: np.ndarray) -> None:
        from litert_quantizer import Quantizer

        self.fm = fm
        self.calibration = calibration
        self.cache: dict[tuple, bytes] = {}
        data = {fm.signature: [{fm.input_name: calibration[i : i + 1]}
                               for i in range(len(calibration))]}
        try:
            with _quiet():
                q = Quantizer(bytearray(fm.content))
                q.add_static_config(".*", "*", 8, 8)
                self.qsv = q.calibrate(data)
        except Exception as e:  # noqa: BLE001 - report the quantizer's reason
            raise PrecisionError(
                f"litert-quantizer could not calibrate {fm.source} on "
                f"{len(calibration)} samples: {e}"
            ) from e

    def build(self, layers: Mapping[str, Precision], other: Precision) -> bytes:
        key = (tuple(sorted(layers.items())), other)
        if key in self.cache:
            return self.cache[key]
        from litert_quantizer import Quantizer

        scopes = {layer.name: layer.scope for layer in self.fm.layers}
        if all(p is Precision.FLOAT for p in layers.values()) and other is Precision.FLOAT:
            out = self.fm.content
        else:
            try:
                with _quiet():
                    q = Quantizer(bytearray(self.fm.content))
                    _add(q, ".*", other)
                    # Keep the model's float inputs and outputs (a QUANTIZE /
                    # DEQUANTIZE op is added next to them instead).
                    for end in ("INPUT", "OUTPUT"):
                        q.update_quantization_recipe(
                            ".*", end, None, algorithm_key=_no_quantize())
                    # Later entries win: every layer gets its own, float if not named.
                    for name, scope in scopes.items():
                        _add(q, "^" + re.escape(scope) + "$", layers.get(name, Precision.FLOAT))
                    result = q.quantize(
                        self.qsv if q.need_calibration else None, enable_progress_report=False
                    )
                out = bytes(result.quantized_model)
            except Exception as e:  # noqa: BLE001
                raise PrecisionError(
                    f"litert-quantizer failed on {self.fm.source} with "
                    f"{_describe(layers, other)}: {e}"
                ) from e
        self.cache[key] = out
        return out


def _no_quantize() -> Any:
    from litert_quantizer.algorithm_manager import AlgorithmName

    return AlgorithmName.NO_QUANTIZE


def _describe(layers: Mapping[str, Precision], other: Precision) -> str:
    parts = [f"{n}={p.value}" for n, p in layers.items()]
    return ", ".join(parts + [f"{OTHER_OPS}={other.value}"])


# ----------------------------------------------------------------------------
# Measuring.


def _probs(z: np.ndarray) -> np.ndarray:
    z = z.reshape(len(z), -1).astype(np.float64)
    if np.all(z >= 0) and np.allclose(z.sum(-1), 1.0, atol=1e-3):
        return np.clip(z, 1e-12, 1.0)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return np.clip(e / e.sum(-1, keepdims=True), 1e-12, 1.0)


@dataclasses.dataclass(frozen=True)
class _Score:
    snr_db: float
    cosine: float
    kl: float
    agreement: float
    accuracy: float | None


class _Evaluator:
    def __init__(self, fm: _FloatModel, x: np.ndarray, y: np.ndarray | None) -> None:
        self.x, self.y = x, y
        self.ref = self._run_trusted(fm.content)
        self.float_score = self._score(self.ref)

    def _run_trusted(self, content: bytes) -> np.ndarray:
        from converters.runtime import TFLiteModel

        # Bytes from the float model we verified, or made from it by litert-quantizer.
        out = TFLiteModel(content, _trusted=True).predict(self.x, batch_size=64)
        return np.asarray(out[0] if isinstance(out, list) else out, np.float32)

    def _score(self, got: np.ndarray) -> _Score:
        ref = self.ref.reshape(len(self.ref), -1).astype(np.float64)
        g = got.reshape(len(got), -1).astype(np.float64)
        noise = float(np.sum((ref - g) ** 2))
        signal = float(np.sum(ref**2))
        snr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
        num = np.sum(ref * g, -1)
        den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(g, axis=-1)
        cos = float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))
        p, q = _probs(ref), _probs(g)
        kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))
        top = g.argmax(-1)
        agreement = float(np.mean(top == ref.argmax(-1)))
        acc = None if self.y is None else float(np.mean(top == self.y))
        return _Score(snr, cos, max(kl, 0.0), agreement, acc)

    def __call__(self, content: bytes) -> _Score | None:
        """Scores a variant; None if LiteRT's default CPU path cannot run it."""
        try:
            return self._score(self._run_trusted(content))
        except (RuntimeError, ValueError):
            # e.g. "failed to create XNNPACK runtime" for some mixes of int4 and float ops.
            return None

    def drop_pt(self, s: _Score | None) -> float:
        """Accuracy drop in points (with labels), else top-1 disagreement with the float model."""
        if s is None:
            return math.inf
        if s.accuracy is not None and self.float_score.accuracy is not None:
            return 100.0 * (self.float_score.accuracy - s.accuracy)
        return 100.0 * (1.0 - s.agreement)


def _gzip_size(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def _latency_ms(content: bytes, profile: str) -> float:
    from tflight.profiles import estimate_latency

    return float(estimate_latency(content, profile).ms)


# ----------------------------------------------------------------------------
# Sensitivity.


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """How far the model's output moves when only this layer is quantized.

    Attributes:
      layer: the layer's name (`OTHER_OPS` for the group of ops without weights).
      op: its TFLite op (`"-"` for the group).
      params: weight elements.
      precision: the precision measured.
      snr_db: output signal-to-noise ratio against the float model (higher is better).
      cosine: mean cosine similarity of the outputs.
      kl: mean KL divergence of the softmax of the outputs from the float model's.
      accuracy_drop_pt: accuracy drop in points with labels, else top-1
        disagreement with the float model in points.
      size: bytes of the model with only this layer quantized.
      supported: False if litert-quantizer left the layer unchanged at this precision.
    """

    layer: str
    op: str
    params: int
    precision: Precision
    snr_db: float
    cosine: float
    kl: float
    accuracy_drop_pt: float
    size: int
    supported: bool

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        for k in ("snr_db", "cosine", "kl", "accuracy_drop_pt"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """Per-layer sensitivity of a float model, most sensitive layer first.

    Measured: each layer quantized alone (all others float), run in LiteRT on
    `samples` samples of `data`; ranked by the output SNR at `reference`
    precision (lowest first), ties broken by the accuracy drop.

    Attributes:
      entries: every (layer, precision) measured.
      ranking: layer names, most sensitive first.
      reference: the precision the ranking uses.
      float_accuracy: the float model's accuracy on the data (None without labels).
      samples: number of samples measured on.
      data: a description of those samples.
      seconds: wall time.
    """

    entries: tuple[LayerSensitivity, ...]
    ranking: tuple[str, ...]
    reference: Precision
    float_accuracy: float | None
    samples: int
    data: str
    seconds: float
    method: str = "one layer quantized at a time, all others float (measured in LiteRT)"

    def get(self, layer: str, precision: Precision | str) -> LayerSensitivity:
        p = Precision(precision)
        for e in self.entries:
            if e.layer == layer and e.precision is p:
                return e
        raise KeyError((layer, p.value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "reference": self.reference.value,
            "ranking": list(self.ranking),
            "float_accuracy": self.float_accuracy,
            "samples": self.samples,
            "data": self.data,
            "seconds": self.seconds,
            "entries": [e.to_dict() for e in self.entries],
        }

    def table(self) -> list[str]:
        precisions = list(dict.fromkeys(e.precision for e in self.entries))
        head = f"{'rank':>4}  {'layer':<28} {'op':<18} {'params':>8}"
        for p in precisions:
            head += f"  {p.value + ' SNR/drop':>20}"
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.ranking, 1):
            first = next(e for e in self.entries if e.layer == name)
            row = f"{i:>4}  {name[:28]:<28} {first.op[:18]:<18} {first.params:>8,}"
            for p in precisions:
                try:
                    e = self.get(name, p)
                except KeyError:
                    row += f"  {'-':>20}"
                    continue
                if not e.supported:
                    row += f"  {'n/a':>20}"
                else:
                    snr = "inf" if math.isinf(e.snr_db) else f"{e.snr_db:.1f}"
                    row += f"  {snr + ' dB/' + format(e.accuracy_drop_pt, '+.2f') + 'pt':>20}"
            lines.append(row)
        return lines

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        acc = "" if self.float_accuracy is None else f", float accuracy {self.float_accuracy:.2%}"
        print_fn(f"Sensitivity ({self.method}); {self.samples} samples of {self.data}{acc}")
        print_fn("drop: accuracy points lost" if self.float_accuracy is not None
                 else "drop: top-1 disagreement with the float model, in points")
        for line in self.table():
            print_fn(line)


def _sensitivity(
    fm: _FloatModel,
    builder: _Builder,
    ev: _Evaluator,
    precisions: Sequence[Precision],
    reference: Precision,
    data: str,
) -> SensitivityReport:
    start = time.perf_counter()
    entries = []
    groups = [(layer.name, layer.op, layer.params) for layer in fm.layers]
    if fm.n_other_ops:
        groups.append((OTHER_OPS, "-", 0))
    for name, op, params in groups:
        for p in precisions:
            if name == OTHER_OPS and p not in _OTHER_CHOICES:
                continue
            try:
                content = (builder.build({}, p) if name == OTHER_OPS
                           else builder.build({name: p}, Precision.FLOAT))
            except PrecisionError:
                # litert-quantizer refuses this layer at this precision (e.g. a
                # dimension not divisible by the block size): not a choice for it.
                content = fm.content
                s = None
            else:
                s = ev(content)
            if p is Precision.FLOAT:
                changed = True
            elif name == OTHER_OPS:
                changed = content != fm.content
            else:
                changed = content != fm.content and name not in _not_as_requested(
                    content, fm.layers, {name: p})
            nan = math.nan
            entries.append(
                LayerSensitivity(
                    layer=name,
                    op=op,
                    params=params,
                    precision=p,
                    snr_db=nan if s is None else s.snr_db,
                    cosine=nan if s is None else s.cosine,
                    kl=nan if s is None else s.kl,
                    accuracy_drop_pt=nan if s is None else ev.drop_pt(s),
                    size=len(content),
                    supported=s is not None and changed,
                )
            )

    def key(name: str) -> tuple[float, float]:
        ref = [e for e in entries if e.layer == name and e.precision is reference and e.supported]
        if not ref:  # fall back to the worst measured precision of this layer
            ref = [e for e in entries if e.layer == name and e.supported]
        if not ref:
            return (math.inf, 0.0)
        worst = min(ref, key=lambda e: e.snr_db)
        return (worst.snr_db, -worst.accuracy_drop_pt)

    ranking = tuple(sorted(dict.fromkeys(e.layer for e in entries), key=key))
    return SensitivityReport(
        entries=tuple(entries),
        ranking=ranking,
        reference=reference,
        float_accuracy=ev.float_score.accuracy,
        samples=len(ev.x),
        data=data,
        seconds=time.perf_counter() - start,
    )


def _split(
    fm: _FloatModel,
    x: Any,
    y: Any,
    calibration_data: Any,
    *,
    parts: int,
    seed: int,
) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray | None]], str]:
    """Checks the data and splits it into calibration and `parts` evaluation parts."""
    x = fm.check(x, "the validation data `x`")
    y = _labels(y, len(x), "the validation labels `y`")
    order = np.random.default_rng(seed).permutation(len(x))
    x = x[order]
    y = None if y is None else y[order]
    if calibration_data is None:
        n_cal = min(_MAX_CALIBRATION, max(1, len(x) // 4))
        if len(x) - n_cal < 2 * parts:
            raise PrecisionError(
                f"{len(x)} validation samples are too few to hold {n_cal} out for calibration "
                "and still evaluate; pass more samples or separate calibration_data."
            )
        calibration = x[:n_cal]
        x = x[n_cal:]
        y = None if y is None else y[n_cal:]
        how = f"held out {n_cal} of the validation samples for calibration"
    else:
        calibration = fm.check(calibration_data, "`calibration_data`")[:_MAX_CALIBRATION]
        _check_disjoint(calibration, x, "the validation data")
        how = f"{len(calibration)} separate calibration samples"
    bounds = np.linspace(0, len(x), parts + 1).astype(int)
    if np.any(np.diff(bounds) == 0):
        raise PrecisionError(f"{len(x)} validation samples are too few to split in {parts}.")
    pieces = [(x[a:b], None if y is None else y[a:b]) for a, b in
              zip(bounds[:-1], bounds[1:], strict=True)]
    return calibration, pieces, how


def sensitivity(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    calibration_data: Any = None,
    precisions: Sequence[Precision | str] = ("int8", "int4"),
    reference: Precision | str | None = None,
    seed: int = 0,
) -> SensitivityReport:
    """Measures each layer's sensitivity to quantization, most sensitive first.

    Every layer (op with weights, plus the group of other ops) is quantized
    alone, the rest of the model stays float, and the result is run in LiteRT
    on `x`; the output is compared with the float model's (SNR, cosine, KL) and,
    with labels, the accuracy drop is measured.

    Args:
      model: a float `.tflite` path or bytes, a `.keras`/`.h5` path, or a Keras
        model (a QAT model contributes its trained float weights).
      x: validation inputs, shape `(n, ...)` like the model's input.
      y: optional integer or one-hot labels for `x`.
      calibration_data: inputs for the activation ranges of static precisions;
        must not share samples with `x`. None: a quarter of `x` (≤ 500) is held
        out for it.
      precisions: the precisions to measure per layer.
      reference: the precision the ranking uses (default: the lowest-bit one
        of `precisions`).
      seed: shuffles `x` before the hold-out.

    Returns:
      A `SensitivityReport`.

    Raises:
      PrecisionError: the model cannot be read by litert-quantizer, or the
        data has the wrong shape or dtype, or overlaps the calibration data.

    Example:
      >>> report = sensitivity("model_fp32.tflite", x_val, y_val, calibration_data=x_train[:200])
      >>> report.summary()
    """
    ps = _precisions(precisions, "precisions")
    ref = Precision(reference) if reference is not None else ps[-1]
    fm = _FloatModel(model, sample=None)
    calibration, [(xv, yv)], how = _split(fm, x, y, calibration_data, parts=1, seed=seed)
    builder = _Builder(fm, calibration)
    ev = _Evaluator(fm, xv, yv)
    return _sensitivity(fm, builder, ev, ps, ref, f"the validation data ({how})")


def _precisions(values: Any, what: str) -> list[Precision]:
    if isinstance(values, (str, Precision)):
        values = [values]
    try:
        out = [Precision(v) for v in values]
    except ValueError as e:
        raise PrecisionError(
            f"`{what}` must be among {[p.value for p in Precision]}, got {list(values)!r}."
        ) from e
    if not out:
        raise PrecisionError(f"`{what}` must name at least one precision.")
    order = list(Precision)
    return sorted(dict.fromkeys(out), key=order.index)


# ----------------------------------------------------------------------------
# Verified results.


@dataclasses.dataclass(frozen=True)
class Verification:
    """A quantized model run in LiteRT against the float model on held-out samples.

    Attributes:
      data: what the samples are.
      samples: how many.
      float_accuracy: the float model's accuracy (None without labels).
      accuracy: the quantized model's accuracy (None without labels).
      accuracy_drop_pt: float minus quantized accuracy in points (without
        labels: top-1 disagreement in points).
      agreement: top-1 agreement with the float model.
      snr_db: output SNR against the float model.
    """

    data: str
    samples: int
    float_accuracy: float | None
    accuracy: float | None
    accuracy_drop_pt: float
    agreement: float
    snr_db: float

    def short(self) -> str:
        acc = "" if self.accuracy is None else (
            f"accuracy {self.accuracy:.2%} vs float {self.float_accuracy:.2%} "
            f"(drop {self.accuracy_drop_pt:+.2f} pt), "
        )
        snr = "inf" if math.isinf(self.snr_db) else f"{self.snr_db:.1f}"
        return (f"{acc}top-1 agreement {self.agreement:.1%}, SNR {snr} dB; "
                f"measured in LiteRT on {self.samples} samples of {self.data}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if math.isinf(self.snr_db):
            d["snr_db"] = None
        return d


def _verify(fm: _FloatModel, content: bytes, x: np.ndarray, y: np.ndarray | None,
            data: str) -> Verification:
    import converters
    from converters.errors import ConversionError

    try:  # the full check of converters, in a child process first
        converters.TFLiteModel(content)
    except ConversionError as e:
        raise PrecisionError(f"the quantized model does not run in LiteRT: {e}") from e
    ev = _Evaluator(fm, x, y)
    s = ev(content)
    if s is None:
        raise PrecisionError("the quantized model does not run on LiteRT's default CPU path.")
    return Verification(
        data=data,
        samples=len(x),
        float_accuracy=ev.float_score.accuracy,
        accuracy=s.accuracy,
        accuracy_drop_pt=ev.drop_pt(s),
        agreement=s.agreement,
        snr_db=s.snr_db,
    )


@dataclasses.dataclass(frozen=True)
class QuantizedModel:
    """A quantized `.tflite` model with its per-layer precisions.

    Attributes:
      flatbuffer: the `.tflite` bytes.
      assignment: precision per layer name (plus `OTHER_OPS`).
      float_size: bytes of the float model it came from.
      verification: the check against the float model, or None.
      not_as_assigned: layers whose weights litert-quantizer did not store as
        assigned, with the type it stored (e.g. blockwise int4 CONV_2D stays
        "float32", int4 DEPTHWISE_CONV_2D is stored "int8").
    """

    flatbuffer: bytes = dataclasses.field(repr=False)
    assignment: Mapping[str, Precision]
    float_size: int
    verification: Verification | None
    not_as_assigned: Mapping[str, str] = dataclasses.field(default_factory=dict)

    @property
    def size(self) -> int:
        """Raw bytes of the `.tflite` file."""
        return len(self.flatbuffer)

    @property
    def gzip_size(self) -> int:
        """Bytes after gzip -9."""
        return _gzip_size(self.flatbuffer)

    @property
    def size_ratio(self) -> float:
        """Float model size over this model's size."""
        return self.float_size / self.size

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the `.tflite` file atomically."""
        from converters.convert import write_atomic
        from converters.errors import ConversionError

        try:
            write_atomic(path, self.flatbuffer)
        except ConversionError as e:
            raise PrecisionError(str(e)) from e

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": {k: v.value for k, v in self.assignment.items()},
            "size": self.size,
            "gzip_size": self.gzip_size,
            "float_size": self.float_size,
            "size_ratio": self.size_ratio,
            "not_stored_as_assigned": dict(self.not_as_assigned),
            "verification": None if self.verification is None else self.verification.to_dict(),
        }


def quantize_layers(
    model: Any,
    assignment: Mapping[str, Precision | str] | Precision | str,
    *,
    calibration_data: Any,
    other: Precision | str | None = None,
    test_data: tuple[Any, Any] | Any = None,
) -> QuantizedModel:
    """Quantizes a float model with a given precision per layer.

    Args:
      model: as for `sensitivity`.
      assignment: a precision for every layer, or a dict from layer name (see
        `list_layers`) or TFLite op name (e.g. `"FULLY_CONNECTED"`) to precision;
        layers not named stay float.
      calibration_data: inputs for the activation ranges.
      other: precision of the ops without weights (default: int8 if any layer
        is int8/int4, int16x8 if any is int16x8, else float).
      test_data: optional `(x, y)` (or `x`) to verify the result on; must not
        share samples with the calibration data.

    Returns:
      A `QuantizedModel`.

    Raises:
      PrecisionError: unknown layer names or precisions, bad data, or a model
        litert-quantizer cannot read.
    """
    fm = _FloatModel(model, sample=None)
    calibration = fm.check(calibration_data, "`calibration_data`")[:_MAX_CALIBRATION]
    names = {layer.name: layer for layer in fm.layers}
    if isinstance(assignment, (str, Precision)):
        p = _precisions(assignment, "assignment")[0]
        layers = {n: p for n in names}
    else:
        layers = {}
        for key, value in assignment.items():
            p = _precisions(value, f"assignment[{key!r}]")[0]
            if key in names:
                layers[key] = p
            elif any(layer.op == key for layer in fm.layers):
                layers.update({layer.name: p for layer in fm.layers if layer.op == key})
            else:
                raise PrecisionError(
                    f"{key!r} is neither a layer nor an op of {fm.source}; layers: {list(names)}."
                )
    if other is None:
        used = set(layers.values())
        other = (Precision.INT8 if used & {Precision.INT8, Precision.INT4}
                 else Precision.INT16X8 if Precision.INT16X8 in used else Precision.FLOAT)
    other = _precisions(other, "other")[0]
    builder = _Builder(fm, calibration)
    content = builder.build(layers, other)
    verification = None
    if test_data is not None:
        tx, ty = test_data if isinstance(test_data, tuple) else (test_data, None)
        tx = fm.check(tx, "`test_data`")
        _check_disjoint(calibration, tx, "`test_data`")
        verification = _verify(fm, content, tx, _labels(ty, len(tx), "`test_data` labels"),
                               "the test data")
    full = {n: layers.get(n, Precision.FLOAT) for n in names}
    not_as_assigned = _not_as_requested(content, fm.layers, full)
    full[OTHER_OPS] = other
    return QuantizedModel(content, full, len(fm.content), verification, not_as_assigned)


def quantize_int4(
    model: Any,
    *,
    calibration_data: Any,
    test_data: tuple[Any, Any] | Any = None,
) -> QuantizedModel:
    """Int4 weights wherever LiteRT 2.3.0 has int4 kernels, int8 elsewhere.

    FULLY_CONNECTED and CONV_2D get int4 per-channel weights with int8
    activations (packed two per byte in the file, so the raw `.tflite`
    shrinks); every other layer is int8. Made for clustered (≤ 16 clusters)
    and QAT models, whose weights already sit on few levels: pass the QAT
    Keras model (its float weights are used) or its float `.tflite`.

    Args:
      model: as for `sensitivity`.
      calibration_data: inputs for the activation ranges.
      test_data: optional `(x, y)` to verify the result on.

    Returns:
      A `QuantizedModel`.
    """
    fm = _FloatModel(model, sample=None)
    layers = {layer.name: Precision.INT4 if layer.op in _INT4_OPS else Precision.INT8
              for layer in fm.layers}
    return quantize_layers(fm.content, layers, calibration_data=calibration_data,
                           other=Precision.INT8, test_data=test_data)


def list_layers(model: Any) -> list[Layer]:
    """The layers (ops with weights) of a float model, as the other functions name them."""
    return list(_FloatModel(model, sample=None).layers)
