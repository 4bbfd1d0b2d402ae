"""Mixed precision for converted models: per-layer sensitivity, a search under an accuracy budget, int4.

A float `.tflite` model is quantized layer by layer with LiteRT's own quantizer
(`litert-quantizer`: its per-op recipes do the work; this module decides which
recipe each layer gets). Three things are built on it:

- `sensitivity`: two views of every layer, each run in LiteRT on the user's
  data and compared with the float model's output (SNR, cosine similarity, KL
  divergence and, with labels, the accuracy drop): the layer quantized alone
  (every other layer float: what quantizing it costs), and the layer kept
  float in an otherwise quantized model (what keeping it float gains).
- `tflight.precision_search.search`: the smallest (or, by a device profile's
  estimate, fastest) model whose accuracy drop on new data stays within a
  budget at a stated confidence (an exact one-sided binomial bound on the
  paired losses, `drop_bound_pt`), choosing per layer among float, fp16,
  int16x8, int8 and int4 weights (per channel or blockwise). A budget the
  samples cannot resolve is refused with the number of samples needed. The
  result is re-checked in LiteRT on held-out samples the search never saw.

Models may have several inputs (data as a list of arrays in input order or a
dict by input name) and several outputs (every metric is measured on one
named output, the first by default).
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
    "drop_bound_pt",
    "samples_needed",
    "DEFAULT_CONFIDENCE",
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
        sigs = list(model.signatureDefs or [])
        if not sigs:
            raise PrecisionError(
                f"{self.source} has no signature; convert it with converters.convert, which adds one."
            )
        sig = sigs[0]
        self.signature = _decode(sig.signatureKey)
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
            f"{names} (pass a name or an index 0..{len(names) - 1})."
        )

    def check(self, x: Any, what: str) -> list[np.ndarray]:
        """Returns `x` as one float32 array per input, or raises one clear error.

        Args:
          x: one array (single-input models), a list of arrays in the model's
            input order, or a dict keyed by input name.
          what: how to name `x` in errors.
        """
        names = self.input_names
        if isinstance(x, Mapping):
            missing = [n for n in names if n not in x]
            extra = [k for k in x if k not in names]
            if missing or extra:
                raise PrecisionError(
                    f"{what} is a dict with keys {sorted(map(str, x))}, but {self.source} has "
                    f"the inputs {names}; pass one array per input name."
                )
            parts = [x[n] for n in names]
        elif isinstance(x, (list, tuple)) and len(names) > 1:
            parts = list(x)
        else:
            parts = [x]
        if len(parts) != len(names):
            raise PrecisionError(
                f"{what} holds {len(parts)} array(s), but {self.source} has {len(names)} inputs "
                f"({', '.join(names)}); pass a list of arrays in that order or a dict by name."
            )
        out = []
        for a, name, shape in zip(parts, names, self.input_shapes, strict=True):
            label = what if len(names) == 1 else f"{what} (input {name!r})"
            out.append(_check_array(a, label, shape, self.source))
        if len({len(a) for a in out}) != 1:
            raise PrecisionError(
                f"{what}: the input arrays hold different numbers of samples "
                f"({[len(a) for a in out]}); pass the same samples for every input."
            )
        return out


def _check_array(x: Any, what: str, shape: tuple[int, ...], source: str) -> np.ndarray:
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise PrecisionError(f"{what} is not an array: {e}") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise PrecisionError(
            f"{what} must be a numeric array of shape (n, *{shape}), got dtype "
            f"{a.dtype}; pass float inputs like the float model's."
        )
    got = tuple(a.shape[1:])
    if a.ndim < 1 or len(got) != len(shape) or any(
        e != -1 and e != g for e, g in zip(shape, got, strict=True)
    ):
        raise PrecisionError(
            f"{what} has samples of shape {got}, but {source} takes "
            f"{shape} (-1 = any); pass an array of shape (n, *{shape})."
        )
    if len(a) == 0:
        raise PrecisionError(f"{what} is empty; pass at least one sample.")
    return a.astype(np.float32)


Data = list  # one float32 array per model input, samples along the first axis


def _n(xs: Data) -> int:
    return len(xs[0])


def _take(xs: Data, idx: Any) -> Data:
    return [a[idx] for a in xs]


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


def _row_hashes(xs: Data) -> set[bytes]:
    out = set()
    for i in range(_n(xs)):
        h = hashlib.blake2b(digest_size=12)
        for a in xs:
            h.update(a[i].tobytes())
        out.add(h.digest())
    return out


def _check_disjoint(calibration: Data, x: Data, what: str) -> None:
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

    def __init__(self, fm: _FloatModel, calibration: Data) -> None:
        from litert_quantizer import Quantizer

        self.fm = fm
        self.calibration = calibration
        self.cache: dict[tuple, bytes] = {}
        data = {fm.signature: [
            {name: a[i : i + 1] for name, a in zip(fm.input_names, calibration, strict=True)}
            for i in range(_n(calibration))
        ]}
        try:
            with _quiet():
                q = Quantizer(bytearray(fm.content))
                q.add_static_config(".*", "*", 8, 8)
                self.qsv = q.calibrate(data)
        except Exception as e:  # noqa: BLE001 - report the quantizer's reason
            raise PrecisionError(
                f"litert-quantizer could not calibrate {fm.source} on "
                f"{_n(calibration)} samples: {e}"
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
            except Exception as e:  # noqa: BLE001 - classified by type and origin below
                from tflight.errors import InternalError
                from tflight.precision.refusals import quantizer_refused

                if not quantizer_refused(e):
                    # Not a documented refusal: a bug of ours or of the quantizer,
                    # never "this precision is unsupported".
                    raise InternalError(
                        f"building {_describe(layers, other)} for {self.fm.source} failed "
                        f"unexpectedly: {type(e).__name__}: {e}",
                        kind="quantizer_bug",
                    ) from e
                raise PrecisionError(
                    f"litert-quantizer refused {_describe(layers, other)} on {self.fm.source}: "
                    f"{e}",
                    kind="unsupported",
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
    losses: int  # samples the float model gets right and this one wrong (no labels: top-1 changed)
    gains: int  # samples the float model gets wrong and this one right (no labels: 0)


DEFAULT_CONFIDENCE = 0.95


def drop_bound_pt(losses: int, n: int, confidence: float) -> float:
    """One-sided upper confidence bound on an accuracy drop, in points.

    The drop of a quantized model against its float model on the same samples
    is (losses - gains) / n, where losses are the samples the float model gets
    right and the quantized one wrong (paired, as in McNemar's test). It is at
    most the loss rate, and the loss count is binomial; so the exact one-sided
    Clopper-Pearson bound on the loss rate bounds the drop on new data from
    the same distribution with probability >= `confidence`. Gains are not
    credited, which keeps the bound conservative.
    """
    from scipy.stats import beta

    if losses >= n:
        return 100.0
    return 100.0 * float(beta.ppf(confidence, losses + 1, n - losses))


def samples_needed(max_drop_pt: float, confidence: float) -> int | None:
    """Fewest samples on which `drop_bound_pt` can reach `max_drop_pt` (with no loss at all).

    None if no number of samples can (a budget of 0 points).
    """
    if max_drop_pt <= 0:
        return None
    if max_drop_pt >= 100:
        return 1
    # With 0 losses the bound is 1 - (1 - confidence)^(1/n).
    return max(1, math.ceil(math.log(1 - confidence) / math.log(1 - max_drop_pt / 100)))


class _Evaluator:
    def __init__(self, fm: _FloatModel, x: Data, y: np.ndarray | None, *, output: int = 0,
                 confidence: float = DEFAULT_CONFIDENCE) -> None:
        self.x, self.y = x, y
        self.output = output
        self.confidence = confidence
        self.ref = self._run_trusted(fm.content)
        self.ref_top = self.ref.reshape(len(self.ref), -1).argmax(-1)
        self.float_right = None if y is None else self.ref_top == y
        self.float_score = self._score(self.ref)

    @property
    def n(self) -> int:
        return _n(self.x)

    def _run_trusted(self, content: bytes) -> np.ndarray:
        from converters.runtime import TFLiteModel

        # Bytes from the float model we verified, or made from it by litert-quantizer.
        x = self.x if len(self.x) > 1 else self.x[0]
        out = TFLiteModel(content, _trusted=True).predict(x, batch_size=64)
        return np.asarray(out[self.output] if isinstance(out, list) else out, np.float32)

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
        same = top == self.ref_top
        agreement = float(np.mean(same))
        if self.y is None:
            acc, losses, gains = None, int(np.sum(~same)), 0
        else:
            right = top == self.y
            acc = float(np.mean(right))
            losses = int(np.sum(self.float_right & ~right))
            gains = int(np.sum(~self.float_right & right))
        return _Score(snr, cos, max(kl, 0.0), agreement, acc, losses, gains)

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

    def bound_pt(self, s: _Score | None) -> float:
        """`drop_bound_pt` of a variant on these samples at this confidence."""
        if s is None:
            return math.inf
        return drop_bound_pt(s.losses, self.n, self.confidence)


def _gzip_size(content: bytes) -> int:
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def _latency_ms(content: bytes, profile: str) -> float:
    from tflight.devices.profiles import estimate_latency

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
      kept_float_snr_db: the other view, on the entry at the report's
        reference precision only (for `OTHER_OPS`: at the precision of the
        other ops that goes with it; NaN elsewhere): output SNR of the model
        with every layer at the reference precision except this one, kept float.
      kept_float_drop_pt: the accuracy drop (or disagreement) of that model.
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
    kept_float_snr_db: float = math.nan
    kept_float_drop_pt: float = math.nan

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        for k in ("snr_db", "cosine", "kl", "accuracy_drop_pt", "kept_float_snr_db",
                  "kept_float_drop_pt"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """Per-layer sensitivity of a float model, most sensitive layer first.

    Two views, both measured in LiteRT on `samples` samples of `data`:

    - "alone" (`snr_db`, `accuracy_drop_pt` of every entry): this layer
      quantized, every other layer float -- what quantizing it costs;
    - "kept float" (`kept_float_snr_db`, `kept_float_drop_pt` of the
      `reference` entries): every layer at `reference` precision except this
      one, kept float -- what keeping it float gains over `quantized_snr_db`,
      the model with every layer at `reference`.

    `ranking` orders by the "alone" SNR at `reference` (lowest first, ties by
    the drop); `ranking_kept_float` by the SNR gained by keeping the layer
    float (largest first).

    Attributes:
      entries: every (layer, precision) measured.
      ranking: layer names, most sensitive first.
      reference: the precision the ranking uses.
      float_accuracy: the float model's accuracy on the data (None without labels).
      samples: number of samples measured on.
      data: a description of those samples.
      seconds: wall time.
      ranking_kept_float: layer names by SNR gained when kept float, largest first.
      quantized_snr_db: output SNR with every layer at `reference` (the base
        of the "kept float" view).
      quantized_drop_pt: the accuracy drop (or disagreement) of that model.
      output: the model output the metrics use.
    """

    entries: tuple[LayerSensitivity, ...]
    ranking: tuple[str, ...]
    reference: Precision
    float_accuracy: float | None
    samples: int
    data: str
    seconds: float
    method: str = "one layer quantized at a time, all others float (measured in LiteRT)"
    ranking_kept_float: tuple[str, ...] = ()
    quantized_snr_db: float = math.nan
    quantized_drop_pt: float = math.nan
    output: str = ""
    kept_float_method: str = (
        "one layer kept float, all others at the reference precision (measured in LiteRT)")

    def get(self, layer: str, precision: Precision | str) -> LayerSensitivity:
        p = Precision(precision)
        for e in self.entries:
            if e.layer == layer and e.precision is p:
                return e
        raise KeyError((layer, p.value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "kept_float_method": self.kept_float_method,
            "reference": self.reference.value,
            "output": self.output,
            "ranking": list(self.ranking),
            "ranking_kept_float": list(self.ranking_kept_float),
            "quantized_snr_db": _finite(self.quantized_snr_db),
            "quantized_drop_pt": _finite(self.quantized_drop_pt),
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
            head += f"  {p.value + ' alone':>20}"
        head += f"  {'kept float':>20}"
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
                    row += f"  {_cell(e.snr_db, e.accuracy_drop_pt):>20}"
            kept = "-"
            for e in self.entries:
                if e.layer == name and not math.isnan(e.kept_float_snr_db):
                    kept = _cell(e.kept_float_snr_db, e.kept_float_drop_pt)
            row += f"  {kept:>20}"
            lines.append(row)
        return lines

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        acc = "" if self.float_accuracy is None else f", float accuracy {self.float_accuracy:.2%}"
        out = f", output {self.output!r}" if self.output else ""
        print_fn(f"Sensitivity, {self.samples} samples of {self.data}{acc}{out}")
        print_fn(f"'<precision> alone': {self.method}; 'kept float': {self.kept_float_method} "
                 f"({self.reference.value}; all at {self.reference.value}: "
                 f"{_cell(self.quantized_snr_db, self.quantized_drop_pt)})")
        print_fn("cells: output SNR vs float / " + (
            "accuracy points lost" if self.float_accuracy is not None
            else "top-1 disagreement with the float model, in points"))
        for line in self.table():
            print_fn(line)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _cell(snr_db: float, drop_pt: float) -> str:
    if math.isnan(snr_db):
        return "n/a"
    snr = "inf" if math.isinf(snr_db) else f"{snr_db:.1f}"
    drop = "n/a" if not math.isfinite(drop_pt) else format(drop_pt, "+.2f")
    return f"{snr} dB/{drop}pt"


def _other_for(p: Precision) -> Precision:
    """The precision of the ops without weights that goes with layers at `p`."""
    if p in (Precision.INT8, Precision.INT4):
        return Precision.INT8
    return Precision.INT16X8 if p is Precision.INT16X8 else Precision.FLOAT


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

    # The other view: every layer at `reference` (where it applies), one kept float.
    nan = math.nan
    base_snr = base_drop = nan
    gained: dict[str, float] = {}
    if reference is not Precision.FLOAT:
        quantized = {e.layer: reference for e in entries
                     if e.precision is reference and e.supported and e.layer != OTHER_OPS}
        other = _other_for(reference)

        def score(layers: Mapping[str, Precision], o: Precision) -> _Score | None:
            try:
                return ev(builder.build(layers, o))
            except PrecisionError:
                return None

        base = score(quantized, other)
        if base is not None:
            base_snr, base_drop = base.snr_db, ev.drop_pt(base)
        for i, e in enumerate(entries):
            # The ops without weights are measured at the precision that goes with `reference`.
            at = other if e.layer == OTHER_OPS else reference
            if e.precision is not at or not e.supported:
                continue
            if e.layer == OTHER_OPS:
                s = score(quantized, Precision.FLOAT)
            else:
                s = score({k: v for k, v in quantized.items() if k != e.layer}, other)
            if s is None:
                continue
            entries[i] = dataclasses.replace(
                e, kept_float_snr_db=s.snr_db, kept_float_drop_pt=ev.drop_pt(s))
            gained[e.layer] = _noise(base_snr) - _noise(s.snr_db)

    def key(name: str) -> tuple[float, float]:
        ref = [e for e in entries if e.layer == name and e.precision is reference and e.supported]
        if not ref:  # fall back to the worst measured precision of this layer
            ref = [e for e in entries if e.layer == name and e.supported]
        if not ref:
            return (math.inf, 0.0)
        worst = min(ref, key=lambda e: e.snr_db)
        return (worst.snr_db, -worst.accuracy_drop_pt)

    ranking = tuple(sorted(dict.fromkeys(e.layer for e in entries), key=key))
    kept = tuple(sorted(gained, key=lambda n: -gained[n]))
    return SensitivityReport(
        entries=tuple(entries),
        ranking=ranking,
        reference=reference,
        float_accuracy=ev.float_score.accuracy,
        samples=ev.n,
        data=data,
        seconds=time.perf_counter() - start,
        ranking_kept_float=kept + tuple(n for n in ranking if n not in gained),
        quantized_snr_db=base_snr,
        quantized_drop_pt=base_drop,
        output=fm.output_names[ev.output],
    )


def _noise(snr_db: float) -> float:
    """Relative output noise power of an SNR in dB (0 for identical outputs)."""
    if math.isnan(snr_db):
        return math.nan
    return 0.0 if math.isinf(snr_db) else 10 ** (-snr_db / 10)


def _n_calibration(n: int) -> int:
    """Validation samples held out for calibration when no calibration data is given."""
    return min(_MAX_CALIBRATION, max(1, n // 4))


def _split(
    fm: _FloatModel,
    x: Any,
    y: Any,
    calibration_data: Any,
    *,
    parts: int,
    seed: int,
) -> tuple[Data, list[tuple[Data, np.ndarray | None]], str]:
    """Checks the data and splits it into calibration and `parts` evaluation parts."""
    x = fm.check(x, "the validation data `x`")
    n = _n(x)
    y = _labels(y, n, "the validation labels `y`")
    order = np.random.default_rng(seed).permutation(n)
    x = _take(x, order)
    y = None if y is None else y[order]
    if calibration_data is None:
        n_cal = _n_calibration(n)
        if n - n_cal < 2 * parts:
            raise PrecisionError(
                f"{n} validation samples are too few to hold {n_cal} out for calibration "
                "and still evaluate; pass more samples or separate calibration_data."
            )
        calibration = _take(x, slice(0, n_cal))
        x = _take(x, slice(n_cal, None))
        y = None if y is None else y[n_cal:]
        how = f"held out {n_cal} of the validation samples for calibration"
    else:
        calibration = _take(fm.check(calibration_data, "`calibration_data`"),
                            slice(0, _MAX_CALIBRATION))
        _check_disjoint(calibration, x, "the validation data")
        how = f"{_n(calibration)} separate calibration samples"
    bounds = np.linspace(0, _n(x), parts + 1).astype(int)
    if np.any(np.diff(bounds) == 0):
        raise PrecisionError(f"{_n(x)} validation samples are too few to split in {parts}.")
    pieces = [(_take(x, slice(a, b)), None if y is None else y[a:b]) for a, b in
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
    output: int | str | None = None,
    seed: int = 0,
) -> SensitivityReport:
    """Measures each layer's sensitivity to quantization, most sensitive first.

    Two views of every layer (op with weights, plus the group of other ops),
    each run in LiteRT on `x` and compared with the float model's output (SNR,
    cosine, KL and, with labels, the accuracy drop): the layer quantized alone
    with the rest of the model float, at each of `precisions`; and the layer
    kept float with every other layer at `reference` precision.

    Multi-input models take `x` as a list of arrays in input order or a dict
    by input name (as `converters.TFLiteModel.predict`). For multi-output
    models every metric is measured on one output, `output` (the first by
    default), and `y` labels that output; the report names it.

    Args:
      model: a float `.tflite` path or bytes, a `.keras`/`.h5` path, or a Keras
        model (a QAT model contributes its trained float weights).
      x: validation inputs, shape `(n, ...)` like the model's input (a list or
        dict of arrays for multi-input models).
      y: optional integer or one-hot labels for `x`.
      calibration_data: inputs for the activation ranges of static precisions,
        like `x`; must not share samples with `x`. None: a quarter of `x`
        (≤ 500) is held out for it.
      precisions: the precisions to measure per layer.
      reference: the precision the ranking and the "kept float" view use
        (default: the lowest-bit one of `precisions`).
      output: the output (name or index) the metrics use; None: the first.
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
    out = fm.output_index(output)
    calibration, [(xv, yv)], how = _split(fm, x, y, calibration_data, parts=1, seed=seed)
    builder = _Builder(fm, calibration)
    ev = _Evaluator(fm, xv, yv, output=out)
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
      losses: samples the float model gets right and the quantized one wrong
        (without labels: samples whose top-1 changed).
      gains: samples the float model gets wrong and the quantized one right.
      drop_bound_pt: one-sided upper bound on the drop on new data at
        `confidence` (see `drop_bound_pt`), from these samples.
      confidence: the bound's confidence level.
      output: the model output measured.
    """

    data: str
    samples: int
    float_accuracy: float | None
    accuracy: float | None
    accuracy_drop_pt: float
    agreement: float
    snr_db: float
    losses: int = 0
    gains: int = 0
    drop_bound_pt: float = math.nan
    confidence: float = DEFAULT_CONFIDENCE
    output: str = ""

    def short(self) -> str:
        acc = "" if self.accuracy is None else (
            f"accuracy {self.accuracy:.2%} vs float {self.float_accuracy:.2%} "
            f"(drop {self.accuracy_drop_pt:+.2f} pt), "
        )
        snr = "inf" if math.isinf(self.snr_db) else f"{self.snr_db:.1f}"
        out = f" (output {self.output!r})" if self.output else ""
        return (f"{acc}top-1 agreement {self.agreement:.1%}, SNR {snr} dB; "
                f"{self.losses} lost / {self.gains} gained samples, drop <= "
                f"{self.drop_bound_pt:.2f} pt at {self.confidence:.0%} confidence; "
                f"measured in LiteRT on {self.samples} samples of {self.data}{out}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if math.isinf(self.snr_db):
            d["snr_db"] = None
        return d


def _verify(fm: _FloatModel, content: bytes, x: Data, y: np.ndarray | None,
            data: str, *, output: int = 0,
            confidence: float = DEFAULT_CONFIDENCE) -> Verification:
    import converters
    from converters.errors import ConversionError

    try:  # the full check of converters, in a child process first
        converters.TFLiteModel(content)
    except ConversionError as e:
        raise PrecisionError(f"the quantized model does not run in LiteRT: {e}") from e
    ev = _Evaluator(fm, x, y, output=output, confidence=confidence)
    s = ev(content)
    if s is None:
        raise PrecisionError("the quantized model does not run on LiteRT's default CPU path.")
    return Verification(
        data=data,
        samples=ev.n,
        float_accuracy=ev.float_score.accuracy,
        accuracy=s.accuracy,
        accuracy_drop_pt=ev.drop_pt(s),
        agreement=s.agreement,
        snr_db=s.snr_db,
        losses=s.losses,
        gains=s.gains,
        drop_bound_pt=ev.bound_pt(s),
        confidence=confidence,
        output=fm.output_names[output],
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
    output: int | str | None = None,
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
      output: the output (name or index) the verification measures.

    Returns:
      A `QuantizedModel`.

    Raises:
      PrecisionError: unknown layer names or precisions, bad data, or a model
        litert-quantizer cannot read.
    """
    fm = _FloatModel(model, sample=None)
    out = fm.output_index(output)
    calibration = _take(fm.check(calibration_data, "`calibration_data`"),
                        slice(0, _MAX_CALIBRATION))
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
        tx, ty = _pair(test_data)
        tx = fm.check(tx, "`test_data`")
        _check_disjoint(calibration, tx, "`test_data`")
        verification = _verify(fm, content, tx, _labels(ty, _n(tx), "`test_data` labels"),
                               "the test data", output=out)
    full = {n: layers.get(n, Precision.FLOAT) for n in names}
    not_as_assigned = _not_as_requested(content, fm.layers, full)
    full[OTHER_OPS] = other
    return QuantizedModel(content, full, len(fm.content), verification, not_as_assigned)


def _pair(test_data: Any) -> tuple[Any, Any]:
    """`(x, y)` from `test_data`: a 2-tuple is (inputs, labels); anything else is inputs."""
    if isinstance(test_data, tuple) and len(test_data) == 2:
        return test_data
    return test_data, None


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
      model: as for `sensitivity`.
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


def list_layers(model: Any) -> list[Layer]:
    """The layers (ops with weights) of a float model, as the other functions name them."""
    return list(_FloatModel(model, sample=None).layers)
