"""What each deployment target needs, and checking a converted model against it.

Targets shape two things: the converter settings (Edge TPU and NPU get static
shapes and, for Edge TPU, integer inputs and outputs) and the checks made on
the flatbuffer afterwards. Hard constraints raise `TargetError`; everything else
is reported in a `TargetReport`.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
import tempfile
from typing import Any

from converters.analysis import ModelStats
from converters.errors import TargetError
from converters.modes import Mode, Target

__all__ = ["TargetReport", "check_mode", "check_model", "gpu_compatibility", "needs_static_shapes"]

# Operators the Edge TPU compiler maps to the accelerator (Coral documentation,
# "TensorFlow models on the Edge TPU", supported operations); others run on the CPU.
EDGETPU_OPS = frozenset(
    """ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE EXPAND_DIMS
    FULLY_CONNECTED GATHER HARD_SWISH L2_NORMALIZATION LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN
    MINIMUM MUL PACK PAD PADV2 PRELU QUANTIZE REDUCE_MAX REDUCE_MIN RELU RELU6 RELU_N1_TO_1
    RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
    SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TRANSPOSE TRANSPOSE_CONV""".split()
)

# Operators the NPU compiler plug-ins of LiteRT (Qualcomm QNN, MediaTek
# NeuroPilot) are commonly able to place on the accelerator: the Edge TPU set
# plus the ops of current vision and transformer models. An op outside it is
# reported (it may run on the CPU), not refused.
NPU_OPS = EDGETPU_OPS | frozenset(
    """BATCH_MATMUL CAST DEQUANTIZE DIV ELU EMBEDDING_LOOKUP EXP GELU LEAKY_RELU LOG_SOFTMAX
    POW REDUCE_PROD SELECT SELECT_V2 SQRT SQUARE SUM""".split()
)

_TARGET_MODES = {
    Target.CPU: tuple(Mode),
    Target.GPU: (Mode.FP32, Mode.FP16, Mode.DYNAMIC, Mode.INT8),
    Target.EDGETPU: (Mode.INT8,),
    Target.NPU: (Mode.INT8, Mode.INT16X8, Mode.FP16),
}

_WHY_NOT = {
    Target.GPU: "the GPU delegate has no int16x8 kernels",
    Target.EDGETPU: "the Edge TPU runs only full-integer int8 models",
    Target.NPU: "NPU compilers take full-integer (int8, int16x8) or float16 models",
}


@dataclasses.dataclass(frozen=True)
class TargetReport:
    """How a converted model fits its target.

    Attributes:
      target: the target checked.
      compatible: False if something will not run on the target's accelerator
        (ops that fall back to the CPU, delegate warnings).
      issues: one sentence per problem found.
      notes: facts worth knowing (compiler output, kernels used).
      compiled: the Edge TPU compiler's `_edgetpu.tflite` output, if
        `edgetpu_compiler` is on PATH and ran; None otherwise.
    """

    target: Target
    compatible: bool
    issues: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    compiled: bytes | None = dataclasses.field(default=None, repr=False)

    def short(self) -> str:
        if self.compatible:
            return "ok"
        return f"{len(self.issues)} issue(s)"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.value,
            "compatible": self.compatible,
            "issues": list(self.issues),
            "notes": list(self.notes),
            "compiled_size": None if self.compiled is None else len(self.compiled),
        }


def needs_static_shapes(target: Target) -> bool:
    """Edge TPU and NPU compilers, and LiteRT's GPU accelerator, need every shape fixed (batch 1)."""
    return target in (Target.EDGETPU, Target.NPU, Target.GPU)


def check_mode(target: Target, mode: Mode) -> None:
    """Raises `TargetError` early if `mode` cannot run on `target`."""
    allowed = _TARGET_MODES[target]
    if mode not in allowed:
        raise TargetError(
            f"Mode {mode.value!r} does not fit target {target.value!r}: {_WHY_NOT[target]}. "
            f"Use --mode {' or '.join(m.value for m in allowed)} for this target."
        )


def gpu_compatibility(content: bytes, analysis: str | None = None) -> tuple[bool, list[str]]:
    """Runs LiteRT's analyzer GPU check; returns (compatible, warnings).

    `content` must be trusted or verified: the analyzer is native code.
    """
    if analysis is None:
        try:
            from ai_edge_litert import _pywrap_analyzer_wrapper as aw

            analysis = aw.ModelAnalyzer(content, False, True)
        except Exception as e:  # noqa: BLE001 - optional native extension
            return False, [f"the GPU compatibility analyzer is unavailable ({e})"]
    warnings = [
        line.strip()
        for line in analysis.splitlines()
        if "GPU COMPATIBILITY WARNING" in line or "not supported by GPU" in line
    ]
    ok = "looks compatible with GPU delegate" in analysis and not warnings
    return ok, warnings


def _non_builtin(stats: ModelStats) -> list[str]:
    return [op for op in stats.ops if op.startswith("CUSTOM") or op.startswith("BUILTIN_")]


def check_model(
    target: Target,
    mode: Mode,
    content: bytes,
    stats: ModelStats,
    *,
    gpu_analysis: str | None = None,
) -> TargetReport:
    """Checks a flatbuffer against `target`.

    Raises:
      TargetError: a hard constraint of the target is violated (Edge TPU: float
        tensors or inputs/outputs, free dimensions; NPU: free dimensions,
        custom ops).
    """
    issues: list[str] = []
    notes: list[str] = []
    custom = _non_builtin(stats)
    if target is Target.CPU:
        if mode is Mode.INT16X8:
            notes.append("int16x8 runs on LiteRT's reference kernels, not XNNPACK: expect it slow")
        if custom:
            issues.append(f"custom ops need a custom op resolver: {', '.join(custom)}")
        return TargetReport(target, not issues, tuple(issues), tuple(notes))

    if target is Target.GPU:
        # The static analyzer follows the classic GPU delegate's rules; the
        # verdict comes from running LiteRT's GPU accelerator (converters/gpu.py).
        _, warnings = gpu_compatibility(content, gpu_analysis)
        notes.extend(f"LiteRT analyzer (static): {w}" for w in warnings)
        if custom:
            issues.append(f"custom ops run on the CPU: {', '.join(custom)}")
        if mode is Mode.INT8:
            notes.append("the GPU accelerator dequantizes int8 models and computes in float")
        from converters.gpu import gpu_target_check

        ran_issues, ran_notes = gpu_target_check(content)
        issues.extend(ran_issues)
        notes.extend(ran_notes)
        return TargetReport(target, not issues, tuple(issues), tuple(notes))

    free = [
        f"{t.name} {list(t.shape_signature)}"
        for t in (*stats.inputs, *stats.outputs)
        if any(d < 0 for d in t.shape_signature)
    ]
    if free:
        raise TargetError(
            f"Target {target.value!r} needs static shapes, but these tensors have free "
            f"dimensions: {'; '.join(free)}. Give the model fixed input sizes."
        )
    if target is Target.NPU:
        # A static check, no compiler: builtin ops only (refused otherwise),
        # static shapes (refused above), integer models computing in integer,
        # and ops in the set NPU plug-ins commonly place (NPU_OPS).
        if custom:
            raise TargetError(
                f"Target 'npu' needs builtin ops only; the model has {', '.join(custom)}."
            )
        if mode.needs_calibration:
            float_ops = sorted(
                op
                for op, by in stats.op_dtypes.items()
                if any(d in ("float32", "float16", "hybrid") for d in by)
                and op not in ("QUANTIZE", "DEQUANTIZE")
            )
            if float_ops:
                issues.append(
                    f"ops computing in float in a {mode.value} model (an NPU runs them on the "
                    f"CPU, or not at all): {', '.join(float_ops)}"
                )
        unknown = sorted(op for op in stats.ops if op not in NPU_OPS)
        if unknown:
            issues.append(
                f"ops outside the set NPU compilers commonly accelerate (they may fall back to "
                f"the CPU): {', '.join(unknown)}"
            )
        sdks = [
            name
            for name in ("ai_edge_litert_sdk_qualcomm", "ai_edge_litert_sdk_mediatek")
            if importlib.util.find_spec(name) is not None
        ]
        if sdks:
            notes.append(f"vendor SDKs installed for ahead-of-time compilation: {', '.join(sdks)}")
        else:
            notes.append(
                "no NPU vendor SDK (ai-edge-litert-sdk-qualcomm / -mediatek) is installed: "
                "ahead-of-time compilation was not attempted; checked statically: builtin ops, "
                "static shapes, integer compute for integer modes, known NPU ops"
            )
        return TargetReport(target, not issues, tuple(issues), tuple(notes))

    # Edge TPU.
    float_io = [t.name for t in (*stats.inputs, *stats.outputs) if t.dtype not in ("int8", "uint8")]
    if float_io:
        raise TargetError(
            f"Target 'edgetpu' needs int8 or uint8 inputs and outputs; these are not: "
            f"{', '.join(float_io)}. Leave input_dtype/output_dtype unset or pass 'int8'."
        )
    float_ops = sorted(
        op
        for op, by in stats.op_dtypes.items()
        if any(d in ("float32", "float16", "hybrid") for d in by) and op != "DEQUANTIZE"
    )
    if float_ops:
        raise TargetError(
            f"Target 'edgetpu' needs every op in int8, but these compute in float: "
            f"{', '.join(float_ops)}. Give representative data covering all inputs."
        )
    cpu_ops = sorted(op for op in stats.ops if op not in EDGETPU_OPS)
    if cpu_ops:
        issues.append(
            f"ops the Edge TPU does not run (the compiler leaves them, and everything after "
            f"the first, on the CPU): {', '.join(cpu_ops)}"
        )
    note, compiled = _run_edgetpu_compiler(content)
    notes.append(note)
    return TargetReport(target, not issues, tuple(issues), tuple(notes), compiled)


def _run_edgetpu_compiler(content: bytes) -> tuple[str, bytes | None]:
    """Runs `edgetpu_compiler` if it is on PATH; returns (note, compiled model)."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return "edgetpu_compiler is not on PATH: constraints checked statically", None
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "model.tflite")
        with open(src, "wb") as f:
            f.write(content)
        try:
            proc = subprocess.run(
                [exe, "-s", "-o", tmp, src], capture_output=True, text=True, timeout=600
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            raise TargetError(f"edgetpu_compiler could not run: {e}") from e
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
            raise TargetError(
                f"edgetpu_compiler rejected the model: {tail[0] if tail else proc.returncode}"
            )
        mapped = [
            ln.strip()
            for ln in proc.stdout.splitlines()
            if "mapped to Edge TPU" in ln or "will run on Edge TPU" in ln
        ]
        out = os.path.join(tmp, "model_edgetpu.tflite")
        if not os.path.isfile(out):
            raise TargetError(
                "edgetpu_compiler reported success but wrote no model_edgetpu.tflite."
            )
        with open(out, "rb") as f:
            compiled = f.read()
        return "edgetpu_compiler: " + ("; ".join(mapped) or "compiled"), compiled
