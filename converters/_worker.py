"""The child process that runs the TFLite converter, its calibrator and LiteRT.

The converter and the int8 calibrator are native code: on some graphs they
crash (SIGSEGV, abort) instead of raising, and they print progress to the
process's file descriptors 1 and 2. Running them here, in a child process,
turns a crash into a `ConversionError` in the caller and keeps their output in
a log instead of the user's terminal.

Protocol: the parent writes one request directory per line on stdin and reads
events from the file descriptor named by `CONVERTERS_STATUS_FD`, one
`converters._child` reply line each (`_child.encode` / `_child.decode`):
`{"event": "start", "mode": m}`, `{"event": "end", "mode": m}` and
`{"event": "done"}` once every mode of the request has its
`<mode>.tflite` / `<mode>.json` files. The request directory holds
`request.json` (written by `converters.convert.convert_many`) and the `.npz` arrays it
names. The process exits when stdin closes.

Test hook: if the environment variable `CONVERTERS_TEST_CRASH_MODE` names a
mode (e.g. `int8`), the child calls `os.abort()` when it starts that mode, so
that tests can check what a real native crash does to the caller.

Run as `python -m converters._worker`.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from converters import _child

CRASH_HOOK = "CONVERTERS_TEST_CRASH_MODE"
STATUS_FD = "CONVERTERS_STATUS_FD"


def _load_npz(path: str | None) -> Any:
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _error_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return next((ln for ln in lines if "error:" in ln), lines[0] if lines else type(e).__name__)


class _Converter:
    """Converts one request's modes from a frozen graph or a SavedModel."""

    def __init__(self, request: dict[str, Any], directory: Path) -> None:
        self.request = request
        self.directory = directory
        self._frozen: Any = None

    def _frozen_function(self) -> Any:
        import tensorflow as tf

        if self._frozen is None:
            src = self.request["source"]
            graph_def = tf.compat.v1.GraphDef()
            graph_def.ParseFromString(Path(src["path"]).read_bytes())

            def _import() -> None:
                tf.compat.v1.import_graph_def(graph_def, name="")

            wrapped = tf.compat.v1.wrap_function(_import, [])
            graph = wrapped.graph
            self._frozen = wrapped.prune(
                feeds=[graph.get_tensor_by_name(n) for n in src["inputs"]],
                fetches=[graph.get_tensor_by_name(n) for n in src["outputs"]],
            )
            self._keep = wrapped
        return self._frozen

    def _converter(self, spec: dict[str, Any], calibration: list[np.ndarray] | None) -> Any:
        """A TFLite converter configured for the mode of `spec`."""
        import tensorflow as tf

        from converters._recipes import configure
        from converters.modes import Mode

        req = self.request
        src = req["source"]
        options = dict(
            calibration=calibration,
            input_dtype=spec["input_dtype"],
            output_dtype=spec["output_dtype"],
            sparse=req["sparse"],
        )
        if src["kind"] == "frozen":
            converter = tf.lite.TFLiteConverter.from_concrete_functions(
                [self._frozen_function()], trackable_obj=tf.Module()
            )
            converter.experimental_lower_to_saved_model = False
            configure(converter, Mode(spec["mode"]), input_names=None, **options)
        else:
            converter = tf.lite.TFLiteConverter.from_saved_model(src["path"])
            configure(converter, Mode(spec["mode"]), input_names=req["input_names"], **options)
        return converter

    def _finish(self, flatbuffer: bytes) -> bytes:
        from converters._recipes import add_signature, reorder_io

        req = self.request
        if req["source"]["kind"] == "frozen":
            flatbuffer = add_signature(
                flatbuffer, req["input_names"], sorted(req["output_names"])
            )
        return reorder_io(flatbuffer, req["input_names"], req["output_names"])

    def convert(self, spec: dict[str, Any], calibration: list[np.ndarray] | None) -> bytes:
        from converters._recipes import run_converter

        return self._finish(run_converter(self._converter(spec, calibration)))

    def convert_selectively(
        self, spec: dict[str, Any], calibration: list[np.ndarray] | None, samples: Any,
        reference: Any,
    ) -> tuple[bytes, list[str]]:
        """Int8 with the ops that lose the signal kept float (`converters.selective`).

        Int16x8: the ops without a 16x8 kernel kept float (`convert_16x8_keeping_float`).
        """
        from converters.selective import (
            DEFAULT_MAX_FLOAT_OPS,
            convert_16x8_keeping_float,
            convert_selectively,
        )

        if spec["mode"] == "int16x8":
            flatbuffer, notes = convert_16x8_keeping_float(
                lambda: self._converter(spec, calibration)
            )
            return self._finish(flatbuffer), notes

        def validate(flatbuffer: bytes) -> dict[str, Any] | None:
            if spec.get("thresholds") is None or samples is None:
                return None
            return _validate(self._finish(flatbuffer), spec, self.request, samples, reference)

        flatbuffer, notes, _ = convert_selectively(
            lambda: self._converter(spec, calibration),
            dict(zip(self.request["input_names"], calibration or [], strict=True)),
            validate,
            max_float_ops=int(spec["selective"].get("max_float_ops", DEFAULT_MAX_FLOAT_OPS)),
            integer_io="float32" not in (spec["input_dtype"], spec["output_dtype"]),
        )
        return self._finish(flatbuffer), notes


def _validate(
    flatbuffer: bytes, spec: dict[str, Any], req: dict[str, Any], samples: Any, reference: Any
) -> dict[str, Any]:
    from converters.modes import Mode
    from converters.runtime import TFLiteModel
    from converters.validate import Thresholds, compare_outputs

    tfl = TFLiteModel(flatbuffer, _trusted=True)
    arrays = [samples[n] for n in req["input_names"]]
    feed = dict(zip(req["input_names"], arrays, strict=True))
    if set(feed) != set(tfl.input_names):
        feed = dict(zip(tfl.input_names, arrays, strict=False))
    out = tfl.predict(feed, batch_size=len(arrays[0]))
    outs = out if isinstance(out, list) else [out]
    converted = dict(zip(tfl.output_names, outs, strict=False))
    missing = [k for k in reference if k not in converted]
    if missing:
        raise RuntimeError(
            f"The converted model has outputs {sorted(converted)}, expected {sorted(reference)}."
        )
    report = compare_outputs(
        reference,
        converted,
        mode=Mode(spec["mode"]),
        thresholds=Thresholds(**spec["thresholds"]),
        sample_source=req["sample_source"],
    )
    return report.to_dict()


def _handle(directory: Path, emit: Any) -> None:
    req = json.loads((directory / "request.json").read_text())
    calibration_map = _load_npz(req.get("calibration"))
    calibration = (
        None if calibration_map is None else [calibration_map[n] for n in req["input_names"]]
    )
    samples = _load_npz(req.get("samples"))
    reference = _load_npz(req.get("reference"))
    converter = _Converter(req, directory)
    crash = os.environ.get(CRASH_HOOK, "")
    for spec in req["modes"]:
        mode = spec["mode"]
        emit({"event": "start", "mode": mode})
        if crash == mode:
            os.abort()
        outcome: dict[str, Any] = {"mode": mode}
        start = time.perf_counter()
        try:
            if spec.get("selective") is not None:
                flatbuffer, notes = converter.convert_selectively(
                    spec, calibration, samples, reference
                )
                outcome["notes"] = notes
            else:
                flatbuffer = converter.convert(spec, calibration)
            if spec["mode"] in ("int8", "int16x8"):
                # Scales a LiteRT kernel would refuse at prepare time (QAT
                # ranges into HARD_SWISH) are raised to what it accepts.
                from converters.repair import repair

                flatbuffer, repaired = repair(flatbuffer)
                if repaired:
                    outcome["notes"] = [*outcome.get("notes", []), *repaired]
        except Exception as e:  # noqa: BLE001 - the converter raises many types
            outcome.update(ok=False, stage="convert", error=_error_line(e)[:2000],
                           error_type=type(e).__name__)
            # Our own refusals raised in the child keep their fields across the pipe.
            for field in ("layer", "fix", "kind"):
                if getattr(e, field, None) is not None:
                    outcome[field] = getattr(e, field)
            traceback.print_exc()
        else:
            (directory / f"{mode}.tflite").write_bytes(flatbuffer)
            outcome["ok"] = True
            if spec.get("thresholds") is not None and samples is not None:
                try:
                    outcome["validation"] = _validate(flatbuffer, spec, req, samples, reference)
                except Exception as e:  # noqa: BLE001 - LiteRT raises many types
                    outcome.update(ok=False, stage="validate", error=_error_line(e)[:2000],
                                   error_type=type(e).__name__)
                    traceback.print_exc()
        outcome["seconds"] = time.perf_counter() - start
        (directory / f"{mode}.json").write_text(json.dumps(outcome))
        sys.stdout.flush()
        sys.stderr.flush()
        emit({"event": "end", "mode": mode})


def main() -> None:
    status = os.fdopen(int(os.environ[STATUS_FD]), "w", buffering=1)

    def emit(event: dict[str, Any]) -> None:
        status.write(_child.encode(event))
        status.flush()

    emit({"event": "ready"})
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            _handle(Path(line), emit)
        except Exception as e:  # noqa: BLE001 - report, keep serving
            traceback.print_exc()
            emit({"event": "error", "error": f"{type(e).__name__}: {e}"[:2000]})
        emit({"event": "done"})


if __name__ == "__main__":
    main()
