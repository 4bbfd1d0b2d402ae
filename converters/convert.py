"""Keras / SavedModel to verified `.tflite` flatbuffers, in one or several modes.

`convert` turns a model into one `.tflite` flatbuffer; `convert_many` into
several, sharing one trace-and-freeze between them (the export is about half
the cost of a MobileNetV2 conversion). Each result is checked against the
target's constraints and, by default, run in LiteRT and compared with the
source model before it is handed back.

This module is the order of the work: check the arguments (`_options`), load
the model (`source`) and its data (`data`), choose the validation samples,
export once (`_export`), convert each mode in the child process (`_isolate`,
`_worker`, `_recipes`), and turn each answer into a `ConversionResult`
(`result`) or a per-mode error (`_failures`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from converters._export import SharedExport, save_arrays
from converters._failures import converter_error, crash_error, recurrent_loop_error
from converters._isolate import run_request
from converters._native_log import keep_log, native_output_to_log
from converters._options import io_dtype, parse_modes, resolve_thresholds
from converters.analysis import analyze_flatbuffer, float_ops_note
from converters.data import as_arrays, random_inputs
from converters.errors import (
    ConversionError,
    PartialConversionError,
    RepresentativeDataError,
    TargetError,
    UnsupportedModelError,
)

# `write_atomic` is re-exported: callers imported it from here before `converters.files`.
from converters.files import write_atomic
from converters.modes import Mode, Target, parse_target
from converters.result import ConversionResult
from converters.source import load_source
from converters.targets import check_mode, check_model, needs_static_shapes
from converters.validate import Thresholds, ValidationReport

__all__ = ["ConversionResult", "convert", "convert_many", "write_atomic"]

_VALIDATION_SAMPLES = 32
_MAX_CALIBRATION_SAMPLES = 500


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
    selective: bool = False,
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
    mode_list = parse_modes(modes)
    tgt = parse_target(target)
    for m in mode_list:
        check_mode(tgt, m)
    integer_modes = [m for m in mode_list if m.needs_calibration]
    lenient = bool(integer_modes)
    io_default = "int8" if tgt is Target.EDGETPU else "float32"
    io = {
        m: (
            io_dtype(m, input_dtype, "input_dtype", default=io_default, lenient=lenient),
            io_dtype(m, output_dtype, "output_dtype", default=io_default, lenient=lenient),
        )
        for m in mode_list
    }
    limits = {m: resolve_thresholds(thresholds, m) for m in mode_list} if validate else {}
    if validation_data is not None and sample_data is not None:
        raise ConversionError.about(
            "validation_data", " or its older name `sample_data`, not both.", lead="Pass "
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
        raise RepresentativeDataError.about(
            "representative_data",
            " to fix the activation ranges: about 100 typical inputs for "
            f"{', '.join(s.describe() for s in source.inputs)} (an array, .npy/.npz file, "
            "tf.data.Dataset or generator).",
            lead=f"Mode {integer_modes[0].value!r} needs ",
            kind="missing",
        )
    if needs_static_shapes(tgt):
        free = [s.describe() for s in source.inputs if any(d is None for d in s.shape[1:])]
        if free:
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
            with native_output_to_log([]):
                reference = source.run(samples)
        except Exception as e:  # noqa: BLE001 - user models raise anything
            raise UnsupportedModelError(
                f"Running {source.description} on the validation samples failed: {e}"
            ) from e

    results: dict[str, ConversionResult] = {}
    failures: dict[str, ConversionError] = {}
    with tempfile.TemporaryDirectory(prefix="converters-") as tmp:
        export = SharedExport(
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
            common["calibration"] = save_arrays(os.path.join(tmp, "calibration.npz"), names, calibration)
        if samples is not None and reference is not None:
            common["samples"] = save_arrays(os.path.join(tmp, "samples.npz"), names, samples)
            common["reference"] = save_arrays(os.path.join(tmp, "reference.npz"), [], reference)

        first_errors: dict[Mode, str] = {}
        pending = list(mode_list)
        with native_output_to_log(logs):
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
                failures[m.value] = recurrent_loop_error(m, source)
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
                    "selective": {} if selective and m.needs_calibration else None,
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
                    failures[m.value] = crash_error(m, source, outcome.crashed[m.value], outcome.log)
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
                        failures[m.value] = converter_error(
                            m, source, first_errors.get(m, export.frozen_error or got["error"]),
                            got["error"], fields={k: got[k] for k in ("layer", "fix", "kind")
                                                  if k in got},
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
                        notes=(*source.notes, *got.get("notes", ())),
                        seconds=got.get("seconds", elapsed / max(1, len(pending)))
                        + (export.seconds if not results and not failures else 0.0),
                    )
                except ConversionError as e:
                    e.mode = e.mode or m.value
                    failures[m.value] = e
            if retry:
                try:
                    with native_output_to_log(logs):
                        spec = export.saved_model()
                except UnsupportedModelError as e:
                    for m in retry:
                        failures[m.value] = converter_error(m, source, first_errors[m], str(e))
                    retry = []
            if next_pending == pending:  # the child died before starting any mode
                for m in next_pending:
                    failures[m.value] = crash_error(m, source, "could not start", outcome.log)
                next_pending = []
            pending = retry + next_pending
    if failures:
        log_path = keep_log("\n".join(logs))
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



def _result(
    m: Mode,
    tgt: Target,
    flatbuffer: bytes,
    got: Mapping[str, Any],
    io: tuple[str, str],
    sparse: bool,
    *,
    seconds: float,
    notes: tuple[str, ...] = (),
) -> ConversionResult:
    stats = analyze_flatbuffer(flatbuffer)
    report = check_model(tgt, m, flatbuffer, stats)
    # An integer model with float islands says so: never silently float.
    floats = float_ops_note(stats, m.value) if m.needs_calibration else None
    notes = (*notes, floats) if floats else tuple(notes)
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
        notes=tuple(notes),
    )



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
    selective: bool = False,
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
      selective: mode `int8`: if full int8 fails validation, keep float
        the fewest ops that lose the signal (ranked by TensorFlow's
        `QuantizationDebugger`) so that it passes — a selective int8 model,
        labelled as such in `result.notes`, which needs float kernels besides
        the int8 ones (`converters.selective`). Mode `int16x8`: ops that have
        no 16x8 kernel (e.g. `NEG`) are kept float instead of failing the
        conversion, named in `result.notes`.

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
        selective=selective,
    )
    return next(iter(results.values()))
