"""Per-layer recipes for litert-quantizer: build a quantized variant, or quantize with a given plan.

A float `.tflite` model is quantized layer by layer with LiteRT's own quantizer
(`litert-quantizer`: its per-op recipes do the work; this module decides which
recipe each layer gets). `_Builder` calibrates once and builds any assignment
of precisions to layers (the sensitivity and the search build hundreds);
`quantize_layers` applies one given assignment and returns a `QuantizedModel`.

A layer litert-quantizer refuses at a precision, leaves float or stores in
another type is reported as such (`QuantizedModel.not_as_assigned`), never
counted as quantized.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import re
import warnings
from collections.abc import Mapping
from typing import Any

from tflight.errors import PrecisionError
from tflight.precision.choices import OTHER_OPS, Precision, _describe, _precisions
from tflight.precision.data import (
    _MAX_CALIBRATION,
    Data,
    _check_disjoint,
    _labels,
    _n,
    _pair,
    _take,
)
from tflight.precision.model import _FloatModel, _not_as_requested
from tflight.precision.scoring import Verification, _gzip_size, _verify

__all__ = ["QuantizedModel", "quantize_layers"]


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
                f"{_n(calibration)} samples: {e}",
                kind="calibration_failed",
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
                from tflight.precision.refusals import quantizer_failed, quantizer_refused

                if quantizer_failed(e):
                    frame = e.__traceback__
                    while frame is not None and frame.tb_next is not None:
                        frame = frame.tb_next
                    where = "" if frame is None else (
                        f" in its {frame.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}")
                    raise PrecisionError(
                        f"litert-quantizer failed building {_describe(layers, other)} on "
                        f"{self.fm.source} ({type(e).__name__}{where}: {e}; a failure of the "
                        "quantizer, not of the model), so that option is left out",
                        kind="quantizer_failed",
                    ) from e
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
            raise PrecisionError(str(e), option="path", fix=e.fix,
                                 kind=e.kind or "write_failed") from e

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
      model: as for `precision_sensitivity`.
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
    calibration = _take(fm.check(calibration_data, "`calibration_data`", "calibration_data"),
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
                    f"{key!r} is neither a layer nor an op of {fm.source}; layers: {list(names)}.",
                    option="assignment", layer=str(key), kind="unknown_layer",
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
        tx = fm.check(tx, "`test_data`", "test_data")
        _check_disjoint(calibration, tx, "`test_data`")
        verification = _verify(fm, content, tx,
                               _labels(ty, _n(tx), "`test_data` labels", "test_data"),
                               "the test data", output=out)
    full = {n: layers.get(n, Precision.FLOAT) for n in names}
    not_as_assigned = _not_as_requested(content, fm.layers, full)
    full[OTHER_OPS] = other
    return QuantizedModel(content, full, len(fm.content), verification, not_as_assigned)
