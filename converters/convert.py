"""Keras / SavedModel to verified `.tflite` flatbuffers, in one or several modes.

`convert` turns a model into one `.tflite` flatbuffer; `convert_many` into
several, sharing one SavedModel export between them (the export is about half
the cost of a MobileNetV2 conversion). Each result is checked against the
target's constraints and, by default, run in LiteRT and compared with the
source model before it is handed back.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import io
import json
import os
import struct
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from converters import flatbuffer as fb
from converters._isolate import run_request
from converters.analysis import ModelStats, analyze_flatbuffer
from converters.data import as_arrays, random_inputs
from converters.errors import (
    ConversionError,
    ConverterCrashError,
    PartialConversionError,
    RepresentativeDataError,
    UnsupportedModelError,
)
from converters.files import write_atomic
from converters.modes import Mode, Target, parse_mode, parse_target
from converters.runtime import TFLiteModel
from converters.source import Source, load_source
from converters.targets import TargetReport, check_mode, check_model, needs_static_shapes
from converters.validate import Thresholds, ValidationReport, default_thresholds

__all__ = ["ConversionResult", "convert", "convert_many", "write_atomic"]

_SIGNATURE_KEY = "serving_default"
_VALIDATION_SAMPLES = 32
_MAX_CALIBRATION_SAMPLES = 500
_IO_DTYPES = {
    Mode.FP32: ("float32",),
    Mode.FP16: ("float32",),
    Mode.DYNAMIC: ("float32",),
    Mode.INT8: ("float32", "int8", "uint8"),
    Mode.INT16X8: ("float32", "int16"),
}


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """A converted model and what is known about it.

    Attributes:
      mode: the conversion mode.
      target: the deployment target it was checked for.
      flatbuffer: the `.tflite` bytes.
      stats: ops by type and dtype, quantized tensors, inputs/outputs, sizes.
      validation: the comparison with the source model, or None if skipped.
      target_report: how the model fits the target.
      input_dtype: dtype of the model inputs in the flatbuffer.
      output_dtype: dtype of the model outputs in the flatbuffer.
      sparse: whether TFLite's sparse weight storage was requested.
      seconds: time spent converting this mode (for the first mode of a
        `convert_many` call, including the shared trace and freeze).
    """

    mode: Mode
    target: Target
    flatbuffer: bytes = dataclasses.field(repr=False)
    stats: ModelStats = dataclasses.field(repr=False)
    validation: ValidationReport | None
    target_report: TargetReport | None
    input_dtype: str
    output_dtype: str
    sparse: bool
    seconds: float

    @property
    def size(self) -> int:
        """Bytes of the flatbuffer."""
        return len(self.flatbuffer)

    @functools.cached_property
    def gzip_size(self) -> int:
        """Bytes of the flatbuffer after gzip at level 9 (what a download costs)."""
        return len(gzip.compress(self.flatbuffer, compresslevel=9, mtime=0))

    @property
    def ops(self) -> dict[str, int]:
        """Operator counts by type."""
        return self.stats.ops

    @property
    def op_dtypes(self) -> dict[str, dict[str, int]]:
        """Operator counts by type and the dtype each computes in."""
        return self.stats.op_dtypes

    @property
    def quantized_tensors(self) -> tuple[str, ...]:
        """Names of the tensors that carry quantization parameters."""
        return self.stats.quantized_tensors

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the flatbuffer to `path` atomically; returns the path.

        For the `edgetpu` target, when `edgetpu_compiler` ran, its output is
        written too, next to `path` as `<stem>_edgetpu.tflite` (see
        `compiled_path`).
        """
        path = write_atomic(path, self.flatbuffer)
        compiled = None if self.target_report is None else self.target_report.compiled
        if compiled is not None:
            write_atomic(self.compiled_path(path), compiled)
        return path

    @staticmethod
    def compiled_path(path: str | os.PathLike) -> Path:
        """Where `save(path)` writes the Edge TPU compiler's output."""
        path = Path(path)
        return path.with_name(f"{path.stem}_edgetpu.tflite")

    def load(self, *, num_threads: int | None = None) -> TFLiteModel:
        """The flatbuffer loaded in LiteRT."""
        return TFLiteModel(self.flatbuffer, num_threads=num_threads, _trusted=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "target": self.target.value,
            "size": self.size,
            "gzip_size": self.gzip_size,
            "input_dtype": self.input_dtype,
            "output_dtype": self.output_dtype,
            "sparse": self.sparse,
            "seconds": round(self.seconds, 3),
            "stats": self.stats.to_dict(),
            "validation": None if self.validation is None else self.validation.to_dict(),
            "target_report": None if self.target_report is None else self.target_report.to_dict(),
        }

    def summary(self, print_fn: Any = None) -> str:
        """A few lines on size, ops, target fit and validation; printed if `print_fn`."""
        quant = len(self.quantized_tensors)
        lines = [
            f"{self.mode.value} for {self.target.value}: {self.size:,} bytes "
            f"({self.gzip_size:,} gzipped), {sum(self.ops.values())} ops, "
            f"{quant}/{self.stats.tensor_count} tensors quantized, "
            f"I/O {self.input_dtype}/{self.output_dtype}",
            "  ops: "
            + ", ".join(
                f"{op} x{n} ({'/'.join(sorted(self.op_dtypes.get(op, {})))})"
                for op, n in self.ops.items()
            ),
        ]
        if self.target_report is not None:
            lines.append(f"  target {self.target.value}: {self.target_report.short()}")
            lines.extend(f"    - {x}" for x in self.target_report.issues)
            lines.extend(f"    * {x}" for x in self.target_report.notes)
        if self.validation is None:
            lines.append("  validation: skipped")
        else:
            lines.append(f"  validation: {self.validation.short()}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


def _parse_modes(modes: Mode | str | Iterable[Mode | str]) -> list[Mode]:
    if isinstance(modes, str):
        items: list[Any] = [m for m in modes.split(",") if m.strip()]
    else:
        items = list(modes)
    out: list[Mode] = []
    for m in items:
        mode = parse_mode(m)
        if mode not in out:
            out.append(mode)
    if not out:
        raise ConversionError("No conversion mode given; pass at least one of: "
                              + ", ".join(m.value for m in Mode) + ".")
    return out


def _io_dtype(mode: Mode, value: Any, which: str, *, default: str, lenient: bool) -> str:
    if value is None:
        wanted = default if default in _IO_DTYPES[mode] else "float32"
    else:
        try:
            wanted = np.dtype(getattr(value, "as_numpy_dtype", value)).name
        except TypeError:
            raise ConversionError(f"`{which}` must be a dtype name, got {value!r}.") from None
    if wanted not in _IO_DTYPES[mode]:
        if lenient and mode in (Mode.FP32, Mode.FP16, Mode.DYNAMIC):
            return "float32"
        raise ConversionError(
            f"`{which}`={wanted!r} does not fit mode {mode.value!r}, whose "
            f"{which.split('_')[0]}s can be: {', '.join(_IO_DTYPES[mode])}."
        )
    return wanted


def _resolve_thresholds(thresholds: Any, mode: Mode) -> Thresholds:
    if thresholds is None:
        return default_thresholds(mode)
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, Mapping):
        value = thresholds.get(mode, thresholds.get(mode.value))
        if value is None:
            return default_thresholds(mode)
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, Mapping):
            try:
                return Thresholds(**value)
            except TypeError as e:
                raise ConversionError(
                    f"`thresholds` for {mode.value!r}: {e}; the fields are min_snr_db, "
                    "min_top1 and max_abs_error."
                ) from None
    raise ConversionError(
        "`thresholds` must be None, a converters.Thresholds, or a dict from mode to "
        f"Thresholds; got {type(thresholds).__name__}."
    )


def _hint(mode: Mode, source: Source) -> str:
    if source.recurrent_loop:
        return (
            " The recurrent layers have a free number of time steps, so they stay a loop; "
            "give the model's Input a fixed sequence length (e.g. keras.Input((T, features))) "
            "so that they can be unrolled."
        )
    if mode.needs_calibration:
        return " Some ops have no integer kernels; try mode 'dynamic' or 'fp16'."
    return ""


def _converter_error(
    mode: Mode, source: Source, first: str, fallback: str | None = None
) -> ConversionError:
    text = f"The TFLite converter failed on {source.description} in mode {mode.value!r}: {first[:500]}"
    if fallback is not None and fallback != first:
        text += f" (converting through a SavedModel instead failed too: {fallback[:300]})"
    e = UnsupportedModelError(text.rstrip(".") + "." + _hint(mode, source))
    e.mode = mode.value
    return e


def _configure(
    converter: Any,
    mode: Mode,
    *,
    calibration: list[np.ndarray] | None,
    input_names: list[str] | None,
    input_dtype: str,
    output_dtype: str,
    sparse: bool,
) -> None:
    """Sets the converter options of `mode` (the TFLite post-training recipes)."""
    import tensorflow as tf

    optimizations = []
    if mode is not Mode.FP32:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if mode is Mode.FP16:
        converter.target_spec.supported_types = [tf.float16]
    if not mode.needs_calibration:
        return
    assert calibration is not None
    n = calibration[0].shape[0]

    def representative_dataset():
        for i in range(n):
            sample = [a[i : i + 1] for a in calibration]
            # Models with a signature take samples by name; frozen functions
            # take them in input order.
            yield dict(zip(input_names, sample, strict=True)) if input_names else sample

    converter.representative_dataset = representative_dataset
    if mode is Mode.INT8:
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    else:
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
        ]
    converter.inference_input_type = tf.as_dtype(input_dtype)
    converter.inference_output_type = tf.as_dtype(output_dtype)


def _run_converter(converter: Any) -> bytes:
    # The converter and its calibrator print progress to stdout; keep the
    # caller's stdout clean (it may be JSON).
    with contextlib.redirect_stdout(io.StringIO()):
        return bytes(converter.convert())


def _add_signature(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """Adds the `serving_default` signature a frozen-graph conversion lacks.

    Runtimes and apps address inputs and outputs through signatures
    (`get_signature_runner`), so every file we write has one, named after the
    source model's inputs and outputs.
    """
    s = fb.schema()
    model = fb.parse(flatbuffer)
    if model.signatureDefs:
        return flatbuffer
    sg = model.subgraphs[0]
    if len(sg.inputs) != len(input_names) or len(sg.outputs) != len(output_names):
        raise ConversionError(
            f"The converted model has {len(sg.inputs)} inputs and {len(sg.outputs)} outputs, "
            f"the source model {len(input_names)} and {len(output_names)}."
        )

    def tensor_map(name: str, index: int) -> Any:
        tm = s.TensorMapT()
        tm.name = name
        tm.tensorIndex = int(index)
        return tm

    sd = s.SignatureDefT()
    sd.signatureKey = _SIGNATURE_KEY
    sd.subgraphIndex = 0
    sd.inputs = [tensor_map(n, i) for n, i in zip(input_names, sg.inputs, strict=True)]
    sd.outputs = [tensor_map(n, i) for n, i in zip(output_names, sg.outputs, strict=True)]
    model.signatureDefs = [sd]
    return fb.build(model, size_hint=len(flatbuffer) + 4096)


class _SharedExport:
    """One trace-and-freeze of the source model, shared by every mode.

    The model is traced and its variables folded into constants once, here in
    the caller's process; the frozen graph is written to a file and every mode
    converts from it in the conversion child process (`converters._worker`),
    which skips the SavedModel export and re-import that `from_keras_model` /
    `from_saved_model` repeat for every conversion. Graphs the frozen path
    cannot handle (it fails on some stateful or control-flow graphs) fall back
    to one SavedModel export, also shared.
    """

    def __init__(self, source: Source, directory: str, *, static_batch: int | None) -> None:
        self.source = source
        self.directory = directory
        self.static_batch = static_batch
        self.frozen_error: str | None = None
        self._frozen: dict[str, Any] | None = None
        self._saved_model: dict[str, Any] | None = None
        self.seconds = 0.0

    def frozen(self) -> dict[str, Any] | None:
        """The frozen graph's description for the child, or None if freezing failed."""
        if self._frozen is None and self.frozen_error is None:
            start = time.perf_counter()
            try:
                fn = self.source.freeze(static_batch=self.static_batch)
                path = os.path.join(self.directory, "frozen.pb")
                with open(path, "wb") as f:
                    f.write(fn.graph.as_graph_def().SerializeToString())
                self._frozen = {
                    "kind": "frozen",
                    "path": path,
                    "inputs": [t.name for t in fn.inputs],
                    "outputs": [t.name for t in fn.outputs],
                }
            except Exception as e:  # noqa: BLE001 - fall back to a SavedModel
                self.frozen_error = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
            self.seconds += time.perf_counter() - start
        return self._frozen

    def saved_model(self) -> dict[str, Any]:
        """The SavedModel export's description for the child (exported once)."""
        if self._saved_model is None:
            start = time.perf_counter()
            path = self.source.export(self.directory, static_batch=self.static_batch)
            self._saved_model = {"kind": "saved_model", "path": path}
            self.seconds += time.perf_counter() - start
        return self._saved_model


def _save_arrays(path: str, names: list[str], arrays: list[np.ndarray] | Mapping[str, Any]) -> str:
    if isinstance(arrays, Mapping):
        np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})
    else:
        np.savez(path, **dict(zip(names, arrays, strict=True)))
    return path


@contextlib.contextmanager
def _native_output_to_log(logs: list[str]) -> Any:
    """Sends what native code prints to descriptors 1 and 2 (TensorFlow's
    graph optimizer while freezing) to `logs` instead of the terminal."""
    import sys

    try:
        saved = (os.dup(1), os.dup(2))
    except OSError:
        yield
        return
    fd, path = tempfile.mkstemp(prefix="converters-trace-", suffix=".log")
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (*saved, fd):
            os.close(f)
        with contextlib.suppress(OSError):
            with open(path, errors="replace") as f:
                logs.append(f.read())
            os.unlink(path)


def _keep_log(text: str) -> str:
    """Writes the converter's output to a kept log file; returns its path."""
    fd, path = tempfile.mkstemp(prefix="converters-", suffix=".log")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return path


_NOISE = ("cuda", "cuinit", "onednn", "port.cc", "cpu_feature_guard", "absl::initializelog",
          "single_machine.cc", "devices.cc", "rebuild tensorflow")


def _log_tail(text: str, n: int = 3) -> str:
    """The last few lines of a native log that say something about a failure."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not any(k in ln.lower() for k in _NOISE)]
    useful = [
        ln for ln in lines
        if any(k in ln.lower() for k in ("error", "fatal", "check failed", "abort", "segmentation"))
    ]
    return " | ".join(useful[-n:])[:600]


def convert_many(
    model: Any,
    modes: Iterable[Mode | str] | str,
    *,
    representative_data: Any = None,
    input_dtype: Any = None,
    output_dtype: Any = None,
    target: Target | str = "cpu",
    validate: bool = True,
    thresholds: Thresholds | Mapping[Any, Any] | None = None,
    sparse: bool = False,
    validation_data: Any = None,
    sample_data: Any = None,
    progress: Callable[[str, str], None] | None = None,
) -> dict[str, ConversionResult]:
    """Converts a model to several modes from a single trace.

    Same arguments as `convert`, with `modes` a list of modes (or a
    comma-separated string), and `progress`, called with `("start", mode)` and
    `("end", mode)` as each mode is converted. The model is loaded, checked,
    traced and frozen once; each mode then converts from that, in one child
    process shared by all modes (see `convert`).

    Returns:
      A dict from mode word (`"fp32"`, `"int8"`, ...) to `ConversionResult`,
      in the order given.

    Raises:
      PartialConversionError: some modes failed; the ones that converted are
        in its `results`, each failure (a `ConversionError` naming its mode)
        in its `failures`. A single requested mode that fails raises its own
        error instead.
      The other errors of `convert`, for problems found before any conversion.

    Example:
      >>> results = convert_many(model, ["fp32", "int8"], representative_data=x[:100])
      >>> results["fp32"].size / results["int8"].size
      3.9
    """
    mode_list = _parse_modes(modes)
    tgt = parse_target(target)
    for m in mode_list:
        check_mode(tgt, m)
    integer_modes = [m for m in mode_list if m.needs_calibration]
    lenient = bool(integer_modes)
    io_default = "int8" if tgt is Target.EDGETPU else "float32"
    io = {
        m: (
            _io_dtype(m, input_dtype, "input_dtype", default=io_default, lenient=lenient),
            _io_dtype(m, output_dtype, "output_dtype", default=io_default, lenient=lenient),
        )
        for m in mode_list
    }
    limits = {m: _resolve_thresholds(thresholds, m) for m in mode_list} if validate else {}
    if validation_data is not None and sample_data is not None:
        raise ConversionError(
            "Pass `validation_data` or its older name `sample_data`, not both."
        )
    validation_data = validation_data if validation_data is not None else sample_data

    source = load_source(model)
    given = None
    if representative_data is not None:
        given = as_arrays(
            representative_data,
            source.inputs,
            what="representative_data",
            max_samples=_MAX_CALIBRATION_SAMPLES + _VALIDATION_SAMPLES,
        )
    elif integer_modes:
        raise RepresentativeDataError(
            f"Mode {integer_modes[0].value!r} needs `representative_data` to fix the activation "
            f"ranges: about 100 typical inputs for {', '.join(s.describe() for s in source.inputs)} "
            "(an array, .npy/.npz file, tf.data.Dataset or generator)."
        )
    if needs_static_shapes(tgt):
        free = [s.describe() for s in source.inputs if any(d is None for d in s.shape[1:])]
        if free:
            from converters.errors import TargetError

            raise TargetError(
                f"Target {tgt.value!r} needs static shapes, but these inputs have free "
                f"dimensions besides the batch: {'; '.join(free)}. Give the model fixed input sizes."
            )

    # Validation must not look at the samples calibration was fitted to: with
    # an integer mode and no `validation_data`, the last quarter of the
    # representative data (at most 32 samples) is held out from calibration.
    calibration = given
    held_out = None
    if given is not None and integer_modes and validate and validation_data is None:
        n = given[0].shape[0]
        n_val = min(_VALIDATION_SAMPLES, n // 4) if n >= 8 else 0
        if n_val:
            calibration = [a[: n - n_val] for a in given]
            held_out = [a[n - n_val :] for a in given]
    if calibration is not None:
        calibration = [a[:_MAX_CALIBRATION_SAMPLES] for a in calibration]

    samples = None
    reference = None
    sample_source = ""
    logs: list[str] = []
    if validate:
        if validation_data is not None:
            samples = as_arrays(
                validation_data, source.inputs, what="validation_data",
                max_samples=_VALIDATION_SAMPLES,
            )
            sample_source = "validation_data"
        elif held_out is not None:
            samples = held_out
            sample_source = "held-out representative_data"
        elif given is not None:
            samples = [a[:_VALIDATION_SAMPLES] for a in given]
            sample_source = (
                "in-sample representative_data" if integer_modes else "representative_data"
            )
        else:
            samples = random_inputs(source.inputs, _VALIDATION_SAMPLES)
            sample_source = "random"
        try:
            with _native_output_to_log([]):
                reference = source.run(samples)
        except Exception as e:  # noqa: BLE001 - user models raise anything
            raise UnsupportedModelError(
                f"Running {source.description} on the validation samples failed: {e}"
            ) from e

    results: dict[str, ConversionResult] = {}
    failures: dict[str, ConversionError] = {}
    with tempfile.TemporaryDirectory(prefix="converters-") as tmp:
        export = _SharedExport(
            source, tmp, static_batch=1 if needs_static_shapes(tgt) else None
        )
        names = [i.name for i in source.inputs]
        common: dict[str, Any] = {
            "input_names": names,
            "output_names": list(source.output_names),
            "sparse": bool(sparse),
            "sample_source": sample_source,
            "calibration": None,
            "samples": None,
            "reference": None,
        }
        if calibration is not None:
            common["calibration"] = _save_arrays(os.path.join(tmp, "calibration.npz"), names, calibration)
        if samples is not None and reference is not None:
            common["samples"] = _save_arrays(os.path.join(tmp, "samples.npz"), names, samples)
            common["reference"] = _save_arrays(os.path.join(tmp, "reference.npz"), [], reference)

        first_errors: dict[Mode, str] = {}
        pending = list(mode_list)
        with _native_output_to_log(logs):
            spec = export.frozen()
            if spec is None:
                try:
                    spec = export.saved_model()
                except UnsupportedModelError as e:
                    raise UnsupportedModelError(
                        f"{e} (tracing and freezing it failed first: {export.frozen_error})"
                    ) from e
        if source.recurrent_loop:
            for m in [m for m in pending if m.needs_calibration]:
                pending.remove(m)
                failures[m.value] = _recurrent_loop_error(m, source)
        round_no = 0
        while pending:
            round_no += 1
            request_dir = os.path.join(tmp, f"request{round_no}")
            os.mkdir(request_dir)
            request = dict(common)
            request["source"] = spec
            request["modes"] = [
                {
                    "mode": m.value,
                    "input_dtype": io[m][0],
                    "output_dtype": io[m][1],
                    "thresholds": dataclasses.asdict(limits[m]) if validate else None,
                }
                for m in pending
            ]
            with open(os.path.join(request_dir, "request.json"), "w") as f:
                json.dump(request, f)
            start = time.perf_counter()
            try:
                outcome = run_request(request_dir, [m.value for m in pending], progress=progress)
            except RuntimeError as e:
                raise ConversionError(str(e)) from e
            logs.append(outcome.log)
            elapsed = time.perf_counter() - start
            retry: list[Mode] = []
            next_pending: list[Mode] = []
            for m in pending:
                if m.value in outcome.crashed:
                    failures[m.value] = _crash_error(m, source, outcome.crashed[m.value], outcome.log)
                    continue
                if m.value in outcome.not_started:
                    next_pending.append(m)
                    continue
                got = outcome.outcomes[m.value]
                if not got["ok"]:
                    if got["stage"] == "convert" and spec["kind"] == "frozen":
                        first_errors[m] = got["error"]
                        retry.append(m)
                    elif got["stage"] == "convert":
                        failures[m.value] = _converter_error(
                            m, source, first_errors.get(m, export.frozen_error or got["error"]),
                            got["error"],
                        )
                    else:
                        e = ConversionError(
                            f"Running the {m.value} model in LiteRT for validation failed: "
                            f"{got['error']}"
                        )
                        e.mode = m.value
                        failures[m.value] = e
                    continue
                flatbuffer = (Path(request_dir) / f"{m.value}.tflite").read_bytes()
                try:
                    results[m.value] = _result(
                        m, tgt, flatbuffer, got, io[m], sparse,
                        seconds=got.get("seconds", elapsed / max(1, len(pending)))
                        + (export.seconds if not results and not failures else 0.0),
                    )
                except ConversionError as e:
                    e.mode = e.mode or m.value
                    failures[m.value] = e
            if retry:
                try:
                    with _native_output_to_log(logs):
                        spec = export.saved_model()
                except UnsupportedModelError as e:
                    for m in retry:
                        failures[m.value] = _converter_error(m, source, first_errors[m], str(e))
                    retry = []
            if next_pending == pending:  # the child died before starting any mode
                for m in next_pending:
                    failures[m.value] = _crash_error(m, source, "could not start", outcome.log)
                next_pending = []
            pending = retry + next_pending
    if failures:
        log_path = _keep_log("\n".join(logs))
        for e in failures.values():
            e.log_path = log_path
    ordered = {m.value: results[m.value] for m in mode_list if m.value in results}
    if failures:
        if len(mode_list) == 1:
            raise next(iter(failures.values()))
        raise PartialConversionError(
            ordered, {m.value: failures[m.value] for m in mode_list if m.value in failures}
        )
    return ordered


def _recurrent_loop_error(mode: Mode, source: Source) -> ConversionError:
    e = UnsupportedModelError(
        f"Mode {mode.value!r} cannot convert {source.description}: its recurrent layers have a "
        "free number of time steps, so they stay a WHILE loop, and TensorFlow's int8 calibrator "
        "crashes on that loop. Give the Input a fixed sequence length (e.g. "
        "keras.Input((T, features))) so that they are unrolled, or use mode 'fp32', 'fp16' or "
        "'dynamic'."
    )
    e.mode = mode.value
    return e


def _crash_error(mode: Mode, source: Source, how: str, log: str) -> ConversionError:
    tail = _log_tail(log)
    hint = (
        " Integer calibration runs the model in TensorFlow's calibrator, which crashes on some "
        "graphs: try mode 'dynamic' or 'fp16'."
        if mode.needs_calibration
        else ""
    )
    e = ConverterCrashError(
        f"The converter process {how} while converting {source.description} in mode "
        f"{mode.value!r}; the other modes are not affected."
        + (f" Its last output: {tail}." if tail else "")
        + hint
    )
    e.mode = mode.value
    return e


def _result(
    m: Mode,
    tgt: Target,
    flatbuffer: bytes,
    got: Mapping[str, Any],
    io: tuple[str, str],
    sparse: bool,
    *,
    seconds: float,
) -> ConversionResult:
    stats = analyze_flatbuffer(flatbuffer)
    report = check_model(tgt, m, flatbuffer, stats)
    validation = None
    if got.get("validation") is not None:
        validation = ValidationReport.from_dict(got["validation"])
        validation.raise_if_failed()
    return ConversionResult(
        mode=m,
        target=tgt,
        flatbuffer=flatbuffer,
        stats=stats,
        validation=validation,
        target_report=report,
        input_dtype=io[0],
        output_dtype=io[1],
        sparse=bool(sparse),
        seconds=seconds,
    )


def _reorder_io(flatbuffer: bytes, input_names: list[str], output_names: list[str]) -> bytes:
    """Puts the main subgraph's inputs and outputs in the source model's order.

    The converter orders a subgraph's inputs and outputs as the graph happens
    to be traversed, so a two-input model can come out with its inputs
    swapped. Signature names are kept, and the index vectors of the main
    subgraph are permuted in place (same bytes, same length) to follow the
    source model, so that positional `predict([a, b])` means what the user
    expects.
    """
    buf, model = fb.table_view(flatbuffer)
    if model.SignatureDefsLength() != 1 or model.SubgraphsLength() < 1:
        return flatbuffer
    sd = model.SignatureDefs(0)
    if sd.SubgraphIndex() != 0:
        return flatbuffer
    sg = model.Subgraphs(0)
    for field, count, items, wanted in (
        (6, sg.InputsLength(), [sd.Inputs(i) for i in range(sd.InputsLength())], input_names),
        (8, sg.OutputsLength(), [sd.Outputs(i) for i in range(sd.OutputsLength())], output_names),
    ):
        index = {tm.Name().decode(): tm.TensorIndex() for tm in items}
        if sorted(index) != sorted(wanted) or count != len(wanted):
            continue
        order = [index[n] for n in wanted]
        o = sg._tab.Offset(field)
        start = sg._tab.Vector(o)
        current = [struct.unpack_from("<i", buf, start + 4 * j)[0] for j in range(count)]
        if sorted(current) != sorted(order):
            continue
        for j, t in enumerate(order):
            struct.pack_into("<i", buf, start + 4 * j, t)
    return bytes(buf)


def convert(
    model: Any,
    mode: Mode | str = "fp32",
    *,
    representative_data: Any = None,
    input_dtype: Any = None,
    output_dtype: Any = None,
    target: Target | str = "cpu",
    validate: bool = True,
    thresholds: Thresholds | Mapping[Any, Any] | None = None,
    sparse: bool = False,
    validation_data: Any = None,
    sample_data: Any = None,
) -> ConversionResult:
    """Converts a Keras model or SavedModel to a checked `.tflite` flatbuffer.

    The model is traced and frozen once, converted with
    `tf.lite.TFLiteConverter` in the requested mode, checked against the
    target's constraints and (unless `validate=False`) run in LiteRT on sample
    inputs and compared with the source model. The source model is never
    modified.

    The converter, its int8 calibrator and the LiteRT validation run in a
    child process (started once per Python process and reused): a native
    crash there (SIGSEGV, abort) becomes a `ConversionError` naming the mode,
    and their console output goes to a log, kept and named in the error
    (`error.log_path`) when a mode fails, instead of the terminal.

    Keras 3 LSTM / GRU / SimpleRNN layers (also in Bidirectional) with a fixed
    number of time steps are traced unrolled, so every mode converts them
    with builtin ops; with a free number of time steps they stay a loop,
    traced with batch size 1, which the float modes convert and the integer
    modes refuse with an explanation.

    Args:
      model: a tf_keras model, a Keras 3 Sequential/Functional model, or a path
        to a `.keras` file, an `.h5` file or a SavedModel directory.
      mode: `"fp32"`, `"fp16"`, `"dynamic"`, `"int8"` or `"int16x8"` (or a `Mode`).
      representative_data: calibration inputs, needed by `int8` and `int16x8`:
        an array, a list of arrays or a dict by input name (several inputs), a
        `.npy`/`.npz` path, a `tf.data.Dataset` or a generator. At most 500
        samples are used.
      input_dtype: dtype of the `.tflite` inputs: float32 (default), or
        int8/uint8 for `int8`, int16 for `int16x8`. Defaults to int8 for the
        `edgetpu` target.
      output_dtype: dtype of the `.tflite` outputs, same choices.
      target: `"cpu"`, `"gpu"`, `"edgetpu"` or `"npu"` (or a `Target`).
      validate: run the result in LiteRT and compare with the source model.
      thresholds: a `Thresholds`, or a dict from mode to `Thresholds`;
        defaults per mode from `default_thresholds`.
      sparse: store weights in TFLite's sparse format
        (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), worth it for pruned models.
      validation_data: inputs for validation (at most 32 samples are used),
        in the forms `representative_data` takes. Without it, an integer
        mode holds out the last quarter of `representative_data` (at most 32
        samples, if it has at least 8) from calibration and validates on
        those; a float mode validates on the first 32 representative samples,
        or on uniform random inputs. `result.validation.sample_source` says
        which.
      sample_data: the older name of `validation_data`.

    Returns:
      A `ConversionResult`.

    Raises:
      ModelLoadError: the model path does not exist or holds no model.
      UnsupportedModelError: the model cannot be exported or converted.
      RepresentativeDataError: calibration or sample data is missing or does
        not match the model's inputs.
      TargetError: the mode or the result does not fit the target.
      ValidationError: the result disagrees with the source model beyond the
        thresholds; the message says by how much.
      ConversionError: any other misuse (bad mode, dtype, output path).

    Example:
      >>> result = convert(model, "int8", representative_data=x_train[:100])
      >>> result.save("model_int8.tflite")

    References:
      Jacob et al., "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference", CVPR 2018.
    """
    results = convert_many(
        model,
        [mode],
        representative_data=representative_data,
        input_dtype=input_dtype,
        output_dtype=output_dtype,
        target=target,
        validate=validate,
        thresholds=thresholds,
        sparse=sparse,
        validation_data=validation_data,
        sample_data=sample_data,
    )
    return next(iter(results.values()))
