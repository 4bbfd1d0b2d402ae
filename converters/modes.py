"""Conversion modes and deployment targets.

Both are string enums whose values are the words used on the command line, so
`Mode("int8")` and `--mode int8` mean the same thing.
"""

from __future__ import annotations

import enum

from converters.errors import ConversionError, TargetError

__all__ = ["Mode", "Target", "parse_mode", "parse_target"]


class Mode(enum.StrEnum):
    """How weights and activations are stored in the `.tflite` flatbuffer.

    * `fp32`: float32 everywhere, numerically the source model.
    * `fp16`: float16 weights, dequantized to float32 at load time.
    * `dynamic`: int8 weights, float activations (dynamic-range quantization).
    * `int8`: full integer (int8 weights and activations); needs representative data.
    * `int16x8`: int16 activations with int8 weights; needs representative data.
    """

    FP32 = "fp32"
    FP16 = "fp16"
    DYNAMIC = "dynamic"
    INT8 = "int8"
    INT16X8 = "int16x8"

    @property
    def needs_calibration(self) -> bool:
        """Whether the mode needs representative data to fix activation ranges."""
        return self in (Mode.INT8, Mode.INT16X8)


class Target(enum.StrEnum):
    """Where the `.tflite` file is meant to run.

    * `cpu`: LiteRT's CPU runtime with the XNNPACK delegate.
    * `gpu`: the LiteRT GPU delegate; the result reports delegate compatibility.
    * `edgetpu`: Coral Edge TPU: full int8 including inputs and outputs, static shapes.
    * `npu`: LiteRT's NPU path (ahead-of-time compilation by a vendor plug-in):
      static shapes, builtin ops only, quantized or float16 models.
    """

    CPU = "cpu"
    GPU = "gpu"
    EDGETPU = "edgetpu"
    NPU = "npu"


def parse_mode(mode: Mode | str) -> Mode:
    """Returns `mode` as a `Mode`, or raises `ConversionError` naming the valid words."""
    try:
        return Mode(str(mode).strip().lower())
    except ValueError:
        valid = ", ".join(m.value for m in Mode)
        raise ConversionError(f"Unknown mode {mode!r}; expected one of: {valid}.") from None


def parse_target(target: Target | str) -> Target:
    """Returns `target` as a `Target`, or raises `TargetError` naming the valid words."""
    try:
        return Target(str(target).strip().lower())
    except ValueError:
        valid = ", ".join(t.value for t in Target)
        raise TargetError(f"Unknown target {target!r}; expected one of: {valid}.") from None
