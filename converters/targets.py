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

# Operator names from Coral's table of the operations the Edge TPU compiler can
# map to the accelerator ("TensorFlow models on the Edge TPU", section
# "Supported operations", https://coral.ai/docs/edgetpu/models-intro/#supported-operations).
# Only the names are checked: the table's "known limitations" column (MEAN and
# PAD along x/y only, FULLY_CONNECTED in the default weights format, fused
# activations refused on pooling and CONCATENATION, ...) is not, so the check is
# an op-name check and says so (`EDGETPU_CHECK`). Others run on the CPU.
EDGETPU_OPS = frozenset(
    """ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE EXPAND_DIMS
    FULLY_CONNECTED GATHER HARD_SWISH L2_NORMALIZATION LOGISTIC LSTM MAXIMUM MAX_POOL_2D MEAN
    MINIMUM MUL PACK PAD PADV2 PRELU QUANTIZE REDUCE_MAX REDUCE_MIN RELU RELU6 RELU_N1_TO_1
    RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SLICE SOFTMAX SPACE_TO_DEPTH SPLIT
    SQUARED_DIFFERENCE SQUEEZE STRIDED_SLICE SUB SUM TANH TRANSPOSE TRANSPOSE_CONV""".split()
)
EDGETPU_CHECK = (
    "static op-name check (Coral's supported-operations table; its per-op limitations are not "
    "checked), full int8, static shapes; not compiled"
)

# Operator names LiteRT's Qualcomm NPU compiler plug-in converts to QNN ops: the
# cases of `ConvertOp` in google-ai-edge/LiteRT,
# litert/vendors/qualcomm/compiler/qnn_compose_graph.cc (commit 00120bd0). An op
# outside it is not placed on a Qualcomm NPU by that plug-in; other vendors'
# plug-ins (MediaTek, ...) have their own lists, not checked here. The check is
# by op name only (`NPU_CHECK`): per-op options the plug-in refuses are not seen.
NPU_OPS = frozenset(
    """ADD AVERAGE_POOL_2D BATCH_MATMUL CAST CONCATENATION CONV_2D COS CUMSUM DEPTHWISE_CONV_2D
    DEPTH_TO_SPACE DEQUANTIZE DIV DYNAMIC_UPDATE_SLICE EMBEDDING_LOOKUP FLOOR_DIV
    FULLY_CONNECTED GATHER GATHER_ND GELU GREATER HARD_SWISH LEAKY_RELU LESS LOGICAL_AND
    LOGISTIC MAXIMUM MAX_POOL_2D MEAN MINIMUM MUL NOT_EQUAL PACK PAD PADV2 POW QUANTIZE RELU
    RELU6 RESHAPE RESIZE_BILINEAR RESIZE_NEAREST_NEIGHBOR RSQRT SELECT SELECT_V2 SIN SLICE
    SOFTMAX SPACE_TO_DEPTH SPLIT SQUARE SQUARED_DIFFERENCE SUB SUM TANH TRANSPOSE
    TRANSPOSE_CONV""".split()
)
NPU_CHECK = (
    "static op-name check (the ops LiteRT's Qualcomm NPU plug-in converts), builtin ops, static "
    "shapes, integer compute for integer modes; not compiled, nothing ran on an NPU"
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
      checked: exactly what was checked (for the Edge TPU without its compiler
        and for the NPU, an op-name check, never a compilation or a run).
    """

    target: Target
    compatible: bool
    issues: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    compiled: bytes | None = dataclasses.field(default=None, repr=False)
    checked: str = ""

    @property
    def static_only(self) -> bool:
        """True when the verdict rests on op names alone (no compiler ran, nothing was run)."""
        return self.target is Target.NPU or (self.target is Target.EDGETPU and self.compiled is None)

    def short(self) -> str:
        if not self.compatible:
            return f"{len(self.issues)} issue(s)"
        if self.static_only:
            return "op names ok (static check, not compiled)"
        return "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.value,
            "compatible": self.compatible,
            "issues": list(self.issues),
            "notes": list(self.notes),
            "compiled_size": None if self.compiled is None else len(self.compiled),
            "checked": self.checked,
            "static_only": self.static_only,
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
        return TargetReport(target, not issues, tuple(issues), tuple(notes), checked="CPU kernels")

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
        return TargetReport(target, not issues, tuple(issues), tuple(notes),
                            checked="run on LiteRT's GPU accelerator (software Vulkan)")

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
        # and ops LiteRT's Qualcomm plug-in converts (NPU_OPS), by name only.
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
                f"ops LiteRT's Qualcomm NPU plug-in does not convert (they run on the CPU): "
                f"{', '.join(unknown)}"
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
                "ahead-of-time compilation was not attempted"
            )
        return TargetReport(target, not issues, tuple(issues), tuple(notes), checked=NPU_CHECK)

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
            f"ops not in Coral's supported-operations table (the compiler leaves them, and "
            f"everything after the first, on the CPU): {', '.join(cpu_ops)}"
        )
    note, compiled = _run_edgetpu_compiler(content)
    notes.append(note)
    checked = EDGETPU_CHECK if compiled is None else "compiled by edgetpu_compiler"
    return TargetReport(target, not issues, tuple(issues), tuple(notes), compiled, checked)


def _run_edgetpu_compiler(content: bytes) -> tuple[str, bytes | None]:
    """Runs `edgetpu_compiler` if it is on PATH; returns (note, compiled model)."""
    exe = shutil.which("edgetpu_compiler")
    if exe is None:
        return (
            "edgetpu_compiler is not on PATH: checked statically by op name (Coral's table), "
            "not compiled",
            None,
        )
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
