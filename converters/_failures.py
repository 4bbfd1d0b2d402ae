"""The errors of a mode that failed: converter refusals, crashes, free-length loops.

Each names the mode (`error.mode`) and says what to try instead.
"""

from __future__ import annotations

import re

from converters._native_log import log_tail
from converters.errors import ConversionError, ConverterCrashError, UnsupportedModelError
from converters.modes import Mode
from converters.source import Source

__all__ = ["converter_error", "recurrent_loop_error", "crash_error"]

# How the converter and LiteRT name the op they stopped at.
_OP_PATTERNS = (
    re.compile(r"not yet supported for op: '([A-Z0-9_]+)'"),
    re.compile(r"Node number \d+ \(([A-Z0-9_]+)\) failed"),
    re.compile(r"'(tf\.[A-Za-z0-9_]+)' op is neither a custom op nor a flex op"),
)


def _failing_op(*texts: str | None) -> str | None:
    """The op the converter's message names as the one it cannot handle, if any."""
    for text in texts:
        for pattern in _OP_PATTERNS:
            if text and (m := pattern.search(text)):
                return m.group(1)
    return None


def _hint(mode: Mode, source: Source) -> str:
    if source.recurrent_loop:
        return (
            " The recurrent layers have a free number of time steps, so they stay a loop; "
            "give the model's Input a fixed sequence length (e.g. keras.Input((T, features))) "
            "so that they can be unrolled."
        )
    if mode.needs_calibration and source.qat_float_kernels:
        names = ", ".join(repr(n) for n in source.qat_float_kernels[:6])
        return (
            f" Quantization-aware training left layers with kernels in float ({names}) "
            "between quantized ones, and the int8 converter cannot always join the two: "
            "quantize those layers too (give them a QuantizeConfig), or convert this model "
            "with mode 'dynamic' or 'fp16'."
        )
    if mode is Mode.INT16X8:
        return (
            " Some ops have no 16x8 kernels; the selective option (selective=True, "
            "--selective) keeps them float, or try mode 'int8', 'dynamic' or 'fp16'."
        )
    if mode.needs_calibration:
        return " Some ops have no integer kernels; try mode 'dynamic' or 'fp16'."
    return ""


def converter_error(
    mode: Mode, source: Source, first: str, fallback: str | None = None,
    fields: dict[str, str] | None = None,
) -> ConversionError:
    text = f"The TFLite converter failed on {source.description} in mode {mode.value!r}: {first[:500]}"
    if fallback is not None and fallback != first:
        text += f" (converting through a SavedModel instead failed too: {fallback[:300]})"
    if fields and fields.get("fix"):
        # A refusal of our own in the child: its fields say what to do.
        e = UnsupportedModelError(text.rstrip(".") + ".", **fields)
        e.mode = mode.value
        return e
    e = UnsupportedModelError(text.rstrip(".") + "." + _hint(mode, source))
    e.mode = mode.value
    if mode.needs_calibration and source.qat_float_kernels:
        e.layer = source.qat_float_kernels[0]
        e.fix = "quantize the layers QAT kept float, or use mode 'dynamic'"
    elif (op := _failing_op(first, fallback)) is not None:
        # The converter or LiteRT stopped at this op in this mode: name it, and what works.
        e.layer = op
        e.kind = "unsupported_op"
        if mode is Mode.INT16X8:
            e.fix = (
                f"{op} has no 16x8 kernel: the selective option (selective=True, --selective) "
                "keeps those ops float, labelled; or use mode 'int8', 'dynamic' or 'fp16'"
            )
        elif mode.needs_calibration:
            e.fix = (
                f"LiteRT stops at op {op} in mode {mode.value}: use mode 'dynamic' or 'fp16', "
                "or replace the layer that produces it"
            )
        else:
            e.fix = f"replace the layer that produces {op}"
    return e



def recurrent_loop_error(mode: Mode, source: Source) -> ConversionError:
    e = UnsupportedModelError(
        f"Mode {mode.value!r} cannot convert {source.description}: its recurrent layers have a "
        "free number of time steps, so they stay a WHILE loop, and TensorFlow's int8 calibrator "
        "crashes on that loop. Give the Input a fixed sequence length (e.g. "
        "keras.Input((T, features))) so that they are unrolled, or use mode 'fp32', 'fp16' or "
        "'dynamic'."
    )
    e.mode = mode.value
    return e


def crash_error(mode: Mode, source: Source, how: str, log: str) -> ConversionError:
    tail = log_tail(log)
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
