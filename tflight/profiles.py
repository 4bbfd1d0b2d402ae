"""Named device profiles and an estimated latency from a model's per-op work.

A benchmark on the host tells the truth about the host only. On an AVX2 laptop
without VNNI an int8 model often runs *slower* than its float twin, while on an
ARM phone it runs two to three times faster. This module turns the work of each
operator of a `.tflite` graph (multiply-accumulates, bytes read and written,
the kind of arithmetic) into an **estimated** latency on a named device, so
that a user without the phone still sees the right story.

The model is a roofline per operator: each op costs
``max(work / throughput[kind], bytes / bandwidth) + per_op_overhead``, summed
over the graph. The throughputs are calibrated so that MobileNetV1 (1.0, 224)
reproduces published latencies of each device; `calibrate` does that fit and
the constants below record its output. Every figure that comes out of here is
an estimate and is labelled so wherever it is shown.

References:
  Williams, Waterman, Patterson. "Roofline: an insightful visual performance
    model for multicore architectures". CACM 2009.
  TensorFlow Lite performance measurement (MobileNetV1 on Pixel 4, 4 threads:
    14.0 ms float, 5.0 ms quantized), tensorflow.org/lite/performance/measurement.
  Coral Edge TPU performance benchmarks (MobileNet v1: 2.2 ms on the Dev Board's
    Edge TPU, 179 ms on its quad Cortex-A53 CPU), coral.ai/docs/edgetpu/benchmarks.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

import numpy as np

from tflight.errors import BenchmarkError

__all__ = [
    "OpKind",
    "OpWork",
    "ModelWork",
    "DeviceProfile",
    "LatencyEstimate",
    "PROFILES",
    "get_profile",
    "model_work",
    "estimate_latency",
    "calibrate",
]


class OpKind(enum.StrEnum):
    """The kind of arithmetic an operator does, which sets its throughput."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT16X8 = "int16x8"


@dataclasses.dataclass(frozen=True)
class OpWork:
    """The work of one operator of a `.tflite` graph.

    Attributes:
      index: the operator's position in the graph's execution order.
      op_name: the builtin operator name, e.g. `"CONV_2D"`.
      macs: multiply-accumulates (for ops without any: one per output element).
      bytes: bytes of every input and output tensor, constants included.
      kind: the arithmetic it runs with.
    """

    index: int
    op_name: str
    macs: int
    bytes: int
    kind: OpKind


@dataclasses.dataclass(frozen=True)
class ModelWork:
    """The per-op work of a whole model (its first subgraph)."""

    ops: tuple[OpWork, ...]

    @property
    def macs(self) -> int:
        return sum(o.macs for o in self.ops)

    @property
    def bytes(self) -> int:
        return sum(o.bytes for o in self.ops)

    def kinds(self) -> dict[str, int]:
        """MACs per arithmetic kind."""
        out: dict[str, int] = {}
        for o in self.ops:
            out[o.kind.value] = out.get(o.kind.value, 0) + o.macs
        return out


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Throughput constants of one device, calibrated against published latencies.

    Attributes:
      name: the CLI word, e.g. `"pixel4"`.
      description: what device it stands for.
      macs_per_s: effective multiply-accumulates per second, per `OpKind` value;
        a kind that is missing is not supported by the device.
      bandwidth: effective memory bandwidth in bytes per second.
      op_overhead_s: fixed cost of dispatching one operator.
      fallback: profile that runs the ops this device does not support
        (e.g. the host CPU of an accelerator), or None.
      calibration: the published figures the constants were fitted to.
    """

    name: str
    description: str
    macs_per_s: Mapping[str, float]
    bandwidth: float
    op_overhead_s: float
    fallback: str | None = None
    calibration: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must be a non-empty string.")
        bad = {k: v for k, v in self.macs_per_s.items() if k not in {e.value for e in OpKind}}
        if bad:
            raise ValueError(
                f"`macs_per_s` has unknown kinds {sorted(bad)}; use {[e.value for e in OpKind]}."
            )
        if any(v <= 0 for v in self.macs_per_s.values()) or self.bandwidth <= 0:
            raise ValueError(
                f"throughputs and `bandwidth` must be > 0, got {dict(self.macs_per_s)} "
                f"and {self.bandwidth}."
            )
        if self.op_overhead_s < 0:
            raise ValueError(f"`op_overhead_s` must be >= 0, got {self.op_overhead_s}.")
        object.__setattr__(self, "macs_per_s", MappingProxyType(dict(self.macs_per_s)))


@dataclasses.dataclass(frozen=True)
class LatencyEstimate:
    """An estimated latency of a model on a profile; never a measurement.

    Attributes:
      profile: the profile's name.
      ms: the estimated latency in milliseconds.
      per_op_ms: the estimated time of each op, in execution order.
      unsupported_ops: ops the device cannot run, estimated on `fallback`.
      label: how the number was obtained, for display.
    """

    profile: str
    ms: float
    per_op_ms: tuple[float, ...]
    unsupported_ops: tuple[str, ...]
    label: str = "estimated"

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "ms": self.ms,
            "estimated": True,
            "unsupported_ops": list(self.unsupported_ops),
        }


# Constants produced by `calibrate` on MobileNetV1 (1.0, 224) converted from
# `keras.applications.MobileNet(weights=None)` with TF 2.21 (569 M MACs; the fp32
# and full-int8 graphs). Bandwidths and overheads are set from the devices' memory
# (LPDDR4X for the Pixel 4, LPDDR4 for the Dev Board) and are not fitted.
# The Cortex-A53 fp32 throughput is not published for this model: it is set from
# the int8 fit with the Pixel 4's measured int8/fp32 ratio (an assumption).
_PIXEL4_FP32 = 4.5122e10
_PIXEL4_INT8 = 1.2450e11
_A53_INT8 = 3.1897e09
_EDGETPU_INT8 = 4.8459e11

PROFILES: Mapping[str, DeviceProfile] = MappingProxyType(
    {
        p.name: p
        for p in (
            DeviceProfile(
                name="pixel4",
                description="flagship phone CPU (Pixel 4, Snapdragon 855, 4 threads, XNNPACK)",
                macs_per_s={
                    "fp32": _PIXEL4_FP32,
                    # fp16 weights are dequantized to fp32 on the CPU path.
                    "fp16": _PIXEL4_FP32,
                    "int8": _PIXEL4_INT8,
                    # 16x8 runs on reference kernels: far slower than int8.
                    "int16x8": _PIXEL4_INT8 / 8,
                },
                bandwidth=15e9,
                op_overhead_s=5e-6,
                calibration="MobileNetV1 on Pixel 4, 4 threads: 14.0 ms fp32, 5.0 ms int8",
            ),
            DeviceProfile(
                name="cortex-a53",
                description="entry/mid-range ARM CPU (4x Cortex-A53 at 1.5 GHz)",
                macs_per_s={
                    "fp32": _A53_INT8 * _PIXEL4_FP32 / _PIXEL4_INT8,
                    "fp16": _A53_INT8 * _PIXEL4_FP32 / _PIXEL4_INT8,
                    "int8": _A53_INT8,
                    "int16x8": _A53_INT8 / 8,
                },
                bandwidth=4e9,
                op_overhead_s=20e-6,
                calibration="MobileNet v1 on the Coral Dev Board CPU (4x Cortex-A53): 179 ms",
            ),
            DeviceProfile(
                name="edgetpu",
                description="Edge TPU-class int8 accelerator (Coral Dev Board)",
                macs_per_s={"int8": _EDGETPU_INT8},
                bandwidth=8e9,
                op_overhead_s=2e-6,
                fallback="cortex-a53",
                calibration="MobileNet v1 on the Coral Dev Board's Edge TPU: 2.2 ms",
            ),
        )
    }
)


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """Returns the profile named `name` (a `DeviceProfile` is returned as is).

    Raises:
      BenchmarkError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, DeviceProfile):
        return name
    try:
        return PROFILES[name]
    except KeyError:
        raise BenchmarkError(
            f"unknown device profile {name!r}; known profiles: {', '.join(PROFILES)}"
        ) from None


_NO_MAC_OPS_PER_ELEMENT = 1


def _enum_names(cls) -> dict[int, str]:
    return {v: k for k, v in vars(cls).items() if not k.startswith("_") and isinstance(v, int)}


def model_work(model: str | Path | bytes) -> ModelWork:
    """Computes the per-op work of a `.tflite` model from its graph.

    The file should already have passed `converters.verify_tflite`: this
    function parses the flatbuffer in the calling process.

    Args:
      model: path to a `.tflite` file, or its bytes.

    Returns:
      A `ModelWork` with one `OpWork` per operator of the first subgraph.

    Raises:
      BenchmarkError: if the flatbuffer cannot be parsed.
    """
    from ai_edge_litert import schema_py_generated as schema

    buf = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
    try:
        m = schema.ModelT.InitFromPackedBuf(bytearray(buf), 0)
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file
        raise BenchmarkError(f"cannot parse the .tflite graph: {type(e).__name__}: {e}") from e
    op_names = _enum_names(schema.BuiltinOperator)
    type_names = _enum_names(schema.TensorType)
    sg = m.subgraphs[0]
    tensors = sg.tensors or []

    def shape(i: int) -> list[int]:
        if i < 0:
            return []
        s = tensors[i].shape
        return [max(int(d), 1) for d in (s if s is not None else [])]

    def dtype(i: int) -> str:
        return type_names.get(tensors[i].type, "FLOAT32") if i >= 0 else ""

    def nbytes(i: int) -> int:
        if i < 0:
            return 0
        size = {"FLOAT32": 4, "INT32": 4, "FLOAT16": 2, "INT16": 2, "INT64": 8, "FLOAT64": 8}
        return int(np.prod(shape(i), dtype=np.int64)) * size.get(dtype(i), 1)

    ops = []
    for idx, op in enumerate(sg.operators or []):
        code = m.operatorCodes[op.opcodeIndex]
        name = op_names.get(max(int(code.builtinCode), int(code.deprecatedBuiltinCode)), "CUSTOM")
        ins = [int(i) for i in (op.inputs if op.inputs is not None else [])]
        outs = [int(i) for i in (op.outputs if op.outputs is not None else [])]
        out_elems = int(np.prod(shape(outs[0]), dtype=np.int64)) if outs else 0
        macs = out_elems * _NO_MAC_OPS_PER_ELEMENT
        if name == "CONV_2D" and len(ins) > 1:
            _, kh, kw, cin = shape(ins[1])
            macs = out_elems * kh * kw * cin
        elif name == "DEPTHWISE_CONV_2D" and len(ins) > 1:
            _, kh, kw, _ = shape(ins[1])
            macs = out_elems * kh * kw
        elif name == "FULLY_CONNECTED" and len(ins) > 1:
            macs = out_elems * shape(ins[1])[-1]
        elif name == "BATCH_MATMUL" and len(ins) > 1:
            macs = out_elems * shape(ins[0])[-1]
        elif name == "TRANSPOSE_CONV" and len(ins) > 2:
            _, kh, kw, _ = shape(ins[1])
            macs = int(np.prod(shape(ins[2]), dtype=np.int64)) * kh * kw * shape(ins[1])[0]
        elif name == "CONV_3D" and len(ins) > 1:
            kd, kh, kw, cin, _ = shape(ins[1])
            macs = out_elems * kd * kh * kw * cin
        act = dtype(ins[0]) if ins else ""
        weights = dtype(ins[1]) if len(ins) > 1 else ""
        if act in ("INT32", "INT64", "BOOL", ""):
            # Index and shape arithmetic: it runs with whatever the graph runs.
            kind = None
        elif act == "INT16":
            kind = OpKind.INT16X8
        elif act in ("INT8", "UINT8") or (weights in ("INT8", "UINT8") and act != "FLOAT32"):
            kind = OpKind.INT8
        elif "FLOAT16" in (act, weights):
            kind = OpKind.FP16
        else:
            kind = OpKind.FP32
        ops.append(
            OpWork(
                index=idx,
                op_name=name,
                macs=int(macs),
                bytes=sum(nbytes(i) for i in ins + outs),
                kind=kind,
            )
        )
    kinds = {o.kind for o in ops if o.kind is not None}
    main = next((k for k in (OpKind.INT8, OpKind.INT16X8, OpKind.FP16) if k in kinds), OpKind.FP32)
    ops = [o if o.kind is not None else dataclasses.replace(o, kind=main) for o in ops]
    return ModelWork(ops=tuple(ops))


def estimate_latency(
    work: ModelWork | str | Path | bytes, profile: str | DeviceProfile
) -> LatencyEstimate:
    """Estimates the latency of a model on a device profile.

    Args:
      work: the model's `ModelWork`, or a `.tflite` path or bytes.
      profile: a profile name from `PROFILES`, or a `DeviceProfile`.

    Returns:
      A `LatencyEstimate` (labelled "estimated").

    Raises:
      BenchmarkError: for an unknown profile or an unreadable model.

    Example:
      >>> est = estimate_latency("mobilenet_int8.tflite", "pixel4")
      >>> print(f"{est.ms:.1f} ms (estimated)")
    """
    if not isinstance(work, ModelWork):
        work = model_work(work)
    prof = get_profile(profile)
    per_op, unsupported = [], []
    for op in work.ops:
        p = prof
        if op.kind.value not in p.macs_per_s:
            unsupported.append(f"{op.op_name}#{op.index} ({op.kind.value})")
            if p.fallback is None:
                per_op.append(float("nan"))
                continue
            p = get_profile(p.fallback)
        t = max(op.macs / p.macs_per_s[op.kind.value], op.bytes / p.bandwidth) + p.op_overhead_s
        per_op.append(t * 1e3)
    label = "estimated"
    if unsupported:
        label = f"estimated; {len(unsupported)} op(s) not supported by {prof.name}" + (
            f", estimated on {prof.fallback}" if prof.fallback else ""
        )
    return LatencyEstimate(
        profile=prof.name,
        ms=float(np.nansum(per_op)) if not all(np.isnan(per_op)) else float("nan"),
        per_op_ms=tuple(per_op),
        unsupported_ops=tuple(unsupported),
        label=label,
    )


def calibrate(
    work: ModelWork,
    kind: OpKind | str,
    target_ms: float,
    *,
    bandwidth: float,
    op_overhead_s: float,
) -> float:
    """Finds the throughput of `kind` that makes `work` take `target_ms`.

    Solves ``sum(max(macs / x, bytes / bandwidth) + overhead) == target`` for
    `x` by bisection on a log scale (the sum decreases monotonically in `x`).

    Args:
      work: the per-op work of the reference model (e.g. MobileNetV1).
      kind: the arithmetic kind being calibrated; every op of `work` is
        costed with it.
      target_ms: the published latency to reproduce.
      bandwidth: bytes per second of the device.
      op_overhead_s: per-op dispatch cost in seconds.

    Returns:
      Effective multiply-accumulates per second.

    Raises:
      ValueError: if `target_ms` cannot be reached (memory or overhead bound).
    """
    kind = OpKind(kind)

    def total(x: float) -> float:
        return sum(max(o.macs / x, o.bytes / bandwidth) + op_overhead_s for o in work.ops) * 1e3

    lo, hi = 1e6, 1e15
    if total(hi) > target_ms:
        raise ValueError(
            f"{target_ms} ms is below the memory/overhead floor of {total(hi):.3f} ms for "
            f"{kind.value}; lower `bandwidth` costs or `op_overhead_s`."
        )
    for _ in range(200):
        mid = (lo * hi) ** 0.5
        if total(mid) > target_ms:
            lo = mid
        else:
            hi = mid
    return hi
