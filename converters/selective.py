"""Selective int8: keep float the few ops that lose the signal, quantize the rest.

Some models lose too much in full int8 (a small ViT: SNR 9.5–11.7 dB against
the 12 dB threshold), and the loss is not spread evenly: a few ops (softmax
and layer-norm statistics, GELU tails, the residual adds of attention blocks)
account for most of it. TensorFlow's `QuantizationDebugger` measures, op by op,
the error that quantizing that op adds: here the SNR of the op's int8 output
against the float op run on the same inputs. The ops with the lowest SNR are
kept float, worst first, in growing sets (1, 2, 4 ops) until the model
passes validation on the held-out samples; everything else stays int8. An
op's own error does not always show where the output's signal goes (it can
be lost downstream), so if no such set passes, whole op types are tried:
each kept float alone and measured on the validation samples, then the most
helpful types together, until the model passes.

The result is labelled: it is not a full-int8 model. Its notes list the ops
kept float, it needs float kernels next to the integer ones (fine on CPU and
GPU, not on an integer-only NPU or the Edge TPU), and its size and speed lie
between int8 and dynamic range.

This runs in the converter child (`converters._worker`), which calls
`convert_selectively` for an int8 mode asked for with `selective=True`.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "DEFAULT_MAX_FLOAT_OPS",
    "convert_16x8_keeping_float",
    "convert_selectively",
    "rank_ops",
]

DEFAULT_MAX_FLOAT_OPS = 4


def _layer_snr_db(f: np.ndarray, q: np.ndarray, scale: float, zero_point: int) -> float:
    """SNR, in dB, of one op's int8 output against the float op on the same inputs.

    Computed from their correlation r (SNR = r² / (1 − r²)), which does not
    depend on how the integer tensor is scaled.
    """
    a = np.asarray(f, np.float64).ravel()
    b = np.asarray(q, np.float64).ravel()
    if a.size < 2 or not np.isfinite(a).all() or a.std() == 0.0 or b.std() == 0.0:
        return 200.0 if a.size < 2 or a.std() == 0.0 else -200.0
    r = float(np.corrcoef(a, b)[0, 1])
    if not math.isfinite(r):
        return -200.0
    r2 = min(r * r, 1.0 - 1e-12)
    return 10.0 * math.log10(r2 / (1.0 - r2))


def rank_ops(debugger: Any) -> list[tuple[str, float]]:
    """(op output tensor name, its int8 SNR in dB) of every quantized op, worst first.

    Read from the debugger's own per-layer table (`layer_statistics_dump`),
    whose `tensor_name` is what `denylisted_nodes` takes. The SNR compares
    each op's int8 output with the float op run on the same (dequantized)
    inputs: the loss that op adds. (Its `rmse/scale`, the error in units of
    the quantization step, misses ops whose step is coarse because their range
    is wide: they round "well" and still lose the signal.)
    """
    buffer = io.StringIO()
    debugger.layer_statistics_dump(buffer)
    ranked = []
    for row in csv.DictReader(io.StringIO(buffer.getvalue())):
        try:
            snr = float(row["snr_db"])
        except (KeyError, TypeError, ValueError):
            continue
        if math.isfinite(snr):
            ranked.append((row["tensor_name"], snr))
    ranked.sort(key=lambda kv: kv[1])
    return ranked


def _debug_dataset(samples: dict[str, np.ndarray], holder: dict[str, Any]) -> Callable[[], Any]:
    """The debugger's samples: lists in its interpreter's input order (matched by name)."""
    names = list(samples)
    n = len(next(iter(samples.values())))

    def order() -> list[str]:
        details = holder["debugger"]._quant_interpreter.get_input_details()
        found = []
        for d in details:
            hits = [k for k in sorted(names, key=len, reverse=True) if k in d["name"]]
            found.append(hits[0] if hits else None)
        return found if None not in found and len(set(found)) == len(names) else names

    def gen() -> Any:
        keys = order()
        for i in range(n):
            yield [samples[k][i : i + 1] for k in keys]

    return gen


def convert_selectively(
    make_converter: Callable[[], Any],
    samples: dict[str, np.ndarray],
    validate: Callable[[bytes], dict[str, Any] | None],
    *,
    max_float_ops: int = DEFAULT_MAX_FLOAT_OPS,
    integer_io: bool = False,
) -> tuple[bytes, list[str], dict[str, Any] | None]:
    """Quantizes to int8, keeping float the fewest most-lossy ops that make it pass.

    Args:
      make_converter: returns a fresh `TFLiteConverter` configured for int8
        (optimizations and representative dataset set).
      samples: the calibration inputs by input name, which the debugger
        also runs to measure each op's error.
      validate: runs a flatbuffer against the reference; returns the
        validation report as a dict (`"failures"` empty when it passes).
      max_float_ops: the most ops kept float before giving up.
      integer_io: whether the model's inputs and outputs are integer (as the
        converter asked for); otherwise the selective files keep float ones.

    Returns:
      (flatbuffer, notes, validation report dict) — the full-int8 model and
      its report if it passes as it is; else the first selective model that
      passes, or the best one tried, with notes naming the ops kept float.
    """
    import tensorflow as tf

    def debugger_for(nodes: list[str], ops: list[str] | None = None) -> Any:
        converter = make_converter()
        # Ops kept float need float kernels beside the integer ones.
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS
        ]
        options = tf.lite.experimental.QuantizationDebugOptions(
            layer_direct_compare_metrics={"snr_db": _layer_snr_db},
            denylisted_nodes=nodes or None,
            denylisted_ops=ops or None,
            fully_quantize=integer_io,
        )
        holder: dict[str, Any] = {}
        holder["debugger"] = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=_debug_dataset(samples, holder),
            debug_options=options,
        )
        return holder["debugger"]

    from converters._recipes import run_converter

    # Full int8 first, exactly as without the selective option.
    flatbuffer = run_converter(make_converter())
    report = validate(flatbuffer)
    if report is None or not report.get("failures"):
        return flatbuffer, [], report
    debugger = debugger_for([])
    debugger.run()
    ranked = rank_ops(debugger)
    suspects = [n for n, _ in ranked][:max_float_ops]
    best = (flatbuffer, [], report)
    k = 1
    while suspects:
        nodes = suspects[:k]
        candidate = bytes(debugger_for(nodes).get_nondebug_quantized_model())
        got = validate(candidate)
        worst = {n: round(r, 1) for n, r in ranked if n in nodes}
        notes = [
            f"selective int8: {len(nodes)} op(s) kept float because int8 loses the signal "
            f"there (their own int8 SNR, measured by TensorFlow's QuantizationDebugger): "
            + ", ".join(f"{n} ({r} dB)" for n, r in worst.items())
            + "; every other op is int8, and the file needs float kernels besides int8 ones"
        ]
        if got is not None and not got.get("failures"):
            return candidate, notes, got
        if got is not None and _snr(got) > _snr(best[2]):
            best = (candidate, notes, got)
        if k >= len(suspects):
            break
        k = min(2 * k, len(suspects))
    # The per-op ranking can miss where the signal goes (the loss of an op
    # may only show downstream). Then op types are tried: each kept float
    # alone, measured on the validation samples, and the most helpful ones
    # added together until the model passes.
    types = sorted({_op_type(debugger, n) for n, _ in ranked} - {None})
    gains = []
    for op in types:
        got = validate(bytes(debugger_for([], [op]).get_nondebug_quantized_model()))
        gains.append((_snr(got), op))
    gains.sort(reverse=True)
    chosen: list[str] = []
    for _, op in gains[: max(1, min(len(gains), max_float_ops))]:
        chosen.append(op)
        candidate = bytes(debugger_for([], chosen).get_nondebug_quantized_model())
        got = validate(candidate)
        notes = [
            f"selective int8: every {', '.join(chosen)} op kept float because int8 loses the "
            "signal there (measured on the validation samples); every other op is int8, and "
            "the file needs float kernels besides int8 ones"
        ]
        if got is not None and not got.get("failures"):
            return candidate, notes, got
        if got is not None and _snr(got) > _snr(best[2]):
            best = (candidate, notes, got)
    return best


def _op_type(debugger: Any, tensor_name: str) -> str | None:
    """The builtin op type (e.g. "BATCH_MATMUL") whose output is `tensor_name`."""
    interp = debugger._quant_interpreter
    for op in interp._get_ops_details():
        outs = [interp._get_tensor_details(i, subgraph_index=0)["name"] for i in op["outputs"]]
        if tensor_name in outs:
            return op["op_name"]
    return None


def _snr(report: dict[str, Any] | None) -> float:
    if not report:
        return -np.inf
    values = [o.get("snr_db", -np.inf) for o in report.get("outputs", [])]
    finite = [v if v is not None else -np.inf for v in values]
    return min(finite) if finite else -np.inf


_NO_16X8 = re.compile(r"not yet supported for op: '([A-Z0-9_]+)'")


def convert_16x8_keeping_float(make_converter: Callable[[], Any]) -> tuple[bytes, list[str]]:
    """16x8 quantization, with the ops that have no 16x8 kernel kept float.

    The 16x8 recipe (int16 activations, int8 weights) refuses a whole model
    when one op lacks a 16x8 kernel (`NEG` in a GELU, for one). TensorFlow's
    16x8 guide allows such ops to run in float instead, by adding the float
    builtins to the supported ops; that is done only when the strict
    conversion fails for that reason, and the ops kept float are named.

    Args:
      make_converter: returns a fresh `TFLiteConverter` configured for 16x8.

    Returns:
      (flatbuffer, notes): the strict 16x8 model and no notes if it converts;
      else the model with float fallback and a note naming the ops kept float.

    Raises:
      The strict conversion's error when it failed for another reason.
    """
    import tensorflow as tf

    from converters._recipes import run_converter

    try:
        return run_converter(make_converter()), []
    except Exception as e:  # noqa: BLE001 - the converter raises many types
        missing = sorted(set(_NO_16X8.findall(str(e))))
        if not missing:
            raise
    converter = make_converter()
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
        tf.lite.OpsSet.TFLITE_BUILTINS,
    ]
    flatbuffer = run_converter(converter)
    _check_runs(flatbuffer, missing)
    return flatbuffer, [
        f"selective 16x8: {', '.join(missing)} has no 16x8 kernel, so those ops are kept "
        "float (TensorFlow's 16x8 float fallback); every other op has int16 activations and "
        "int8 weights, and the file needs float kernels besides the 16x8 ones"
    ]


def _check_runs(flatbuffer: bytes, kept_float: list[str]) -> None:
    """Refuses a 16x8 file LiteRT cannot run (the converter emits int16 ops LiteRT lacks).

    The converter's float fallback only covers the ops it knows have no 16x8
    kernel; LiteRT can still refuse others at run time (an int16
    `SQUARED_DIFFERENCE` in a layer norm, for one). One invoke on zeros finds
    that before the file is handed back.
    """
    from ai_edge_litert.interpreter import Interpreter

    from converters.errors import UnsupportedModelError

    try:
        interpreter = Interpreter(model_content=flatbuffer)
        interpreter.allocate_tensors()
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interpreter.invoke()
    except (RuntimeError, ValueError) as e:
        found = re.search(r"Node number \d+ \(([A-Z0-9_]+)\) failed", str(e))
        op = found.group(1) if found else None
        error = UnsupportedModelError(
            f"Mode 'int16x8' with {', '.join(kept_float)} kept float converts, but LiteRT cannot "
            f"run the result: {str(e).strip()[:300]} Use mode 'int8', 'dynamic' or 'fp16'.",
            layer=op, kind="unsupported_op",
            fix="use mode 'int8', 'dynamic' or 'fp16' (LiteRT has no int16 kernel for "
            f"{op or 'an op of this model'})",
        )
        error.mode = "int16x8"
        raise error from e
