"""The cost model of the device profiles: feature columns, profiles and estimates.

Each operator's work (`converters.opwork.OpRecord`) becomes a few feature
columns, and a `DeviceProfile` holds seconds per unit of each column. On a CPU
the columns are, per arithmetic (fp32 or int8), the multiply-accumulates and
the output elements of each kind of MAC operator (k x k convolution,
pointwise convolution, dense, depthwise), the elements of light operators,
activation and weight bytes, and a fixed cost per operator; on the Edge TPU
MACs, light elements, parameter bytes streamed from off chip and a cost per
operator; on a GPU delegate MACs, light elements, bytes and a cost per
operator, one rate for every arithmetic (it computes int8 graphs in float).
`tflight.devices.profiles` re-exports the public names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tflight.devices.fit import Validation

__all__ = [
    "CPU_COLUMNS", "TPU_COLUMNS", "GPU_COLUMNS", "EDGETPU_OPS", "EDGETPU_SRAM_BYTES",
    "GPU_FRAGMENTED_PARTITIONS", "DeviceProfile", "LatencyEstimate", "columns_for",
    "work_columns", "features_from_totals",
]


_MAC_CLASSES = ("conv", "pointwise", "dense", "depthwise")
_LIGHT_CLASSES = {"elementwise", "pool", "resize", "movement"}
_FREE_CLASSES = {"reshape", "constant", "control"}

# Per arithmetic: multiply-accumulates and output elements of each MAC class
# (an output element's cost is what makes a shallow convolution, like a stem
# over 3 input channels, dearer per MAC than a deep one: MACs / outputs is the
# reduction depth), light-op elements, activation and weight bytes (memory
# traffic; weights that outgrow the caches stream in on every inference), and
# a fixed cost per MAC operator and per light operator.
_CPU_PARTS = (
    *_MAC_CLASSES, *(f"{c}_out" for c in _MAC_CLASSES), "light", "act_bytes", "weight_bytes",
    "mac_ops", "light_ops",
)
CPU_COLUMNS = tuple(f"{a}:{p}" for a in ("fp32", "int8") for p in _CPU_PARTS)
TPU_COLUMNS = ("tpu:macs", "tpu:light", "tpu:offchip_bytes", "ops")
GPU_COLUMNS = ("gpu:macs", "gpu:light", "gpu:bytes", "gpu:ops")


def columns_for(kind: str) -> tuple[str, ...]:
    """The feature columns of a profile kind (`"cpu"`, `"edgetpu"`, `"gpu"`)."""
    return {"cpu": CPU_COLUMNS, "edgetpu": TPU_COLUMNS, "gpu": GPU_COLUMNS}[kind]


def work_columns(kind: str) -> frozenset[str]:
    """Columns that count arithmetic work (the fit's ridge pulls them to one flat rate)."""
    if kind == "cpu":
        return frozenset(f"{a}:{p}" for a in ("fp32", "int8") for p in (*_MAC_CLASSES, "light"))
    if kind == "edgetpu":
        return frozenset({"tpu:macs", "tpu:light"})
    return frozenset({"gpu:macs", "gpu:light"})


# Edge TPU operators, from coral.ai/docs/edgetpu/models-intro ("Supported
# operations"), as TFLite builtin names. The first group was checked against a
# stored copy of that table (which is cut off after ResizeNearestNeighbor); the
# second group is the rest of the page's table and was not re-checked here.
EDGETPU_OPS = frozenset({
    "LOGISTIC", "RELU", "RELU6", "RELU_N1_TO_1", "TANH", "ADD", "MAXIMUM", "MINIMUM", "MUL",
    "SUB", "AVERAGE_POOL_2D", "CONCATENATION", "CONV_2D", "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED", "L2_NORMALIZATION", "MAX_POOL_2D", "MEAN", "PAD", "RESHAPE",
    "RESIZE_BILINEAR", "RESIZE_NEAREST_NEIGHBOR",
}) | frozenset({
    "EXPAND_DIMS", "LSTM", "UNIDIRECTIONAL_SEQUENCE_LSTM", "PACK", "PRELU", "QUANTIZE",
    "DEQUANTIZE", "REDUCE_MAX", "REDUCE_MIN", "RSQRT", "SLICE", "SOFTMAX", "SPACE_TO_DEPTH",
    "SPLIT", "SQUEEZE", "STRIDED_SLICE", "SUM", "SQUARED_DIFFERENCE", "TRANSPOSE",
    "TRANSPOSE_CONV",
})
# Parameters the Edge TPU caches on chip; the rest streams in on every inference.
EDGETPU_SRAM_BYTES = 8 * 1024 * 1024

# A graph the GPU delegate splits into more GPU partitions than this is
# flagged as fragmented: every extra partition adds a CPU<->GPU copy each way.
GPU_FRAGMENTED_PARTITIONS = 1

_CALIBRATED_RULES = {
    "fp16": "fp16 weights costed as fp32 (dequantized at load on the CPU)",
    "hybrid": "hybrid ops costed at the int8 MAC rate plus an fp32 pass per output (no published figures)",
    "int16x8": "int16x8 costed at the fp32 rates (no published figures)",
}


def _cpu_features(op_class: str, arith: str, n: float, macs: float, elements: float,
                  nbytes: float, wbytes: float) -> dict[str, float]:
    """Columns of `CPU_COLUMNS` for `n` operators of one class and arithmetic."""
    if op_class in _FREE_CLASSES or n == 0:
        return {}
    rate = "int8" if arith in ("int8", "hybrid") else "fp32"
    out = {f"{rate}:act_bytes": nbytes, f"{rate}:weight_bytes": wbytes}
    if op_class in _MAC_CLASSES:
        out[f"{rate}:{op_class}"] = macs
        out[f"{rate}:{op_class}_out"] = elements
        out[f"{rate}:mac_ops"] = n
        if arith == "hybrid":
            out["fp32:light"] = elements
    else:
        out[f"{rate}:light"] = elements
        out[f"{rate}:light_ops"] = n
    return out


def _tpu_features(op_class: str, n: float, macs: float, elements: float,
                  offchip: float) -> dict[str, float]:
    if op_class in _FREE_CLASSES or n == 0:
        return {}
    out = {"ops": n, "tpu:offchip_bytes": offchip}
    if op_class in _MAC_CLASSES:
        out["tpu:macs"] = macs
    else:
        out["tpu:light"] = elements
    return out


def _gpu_features(op_class: str, n: float, macs: float, elements: float,
                  nbytes: float) -> dict[str, float]:
    # The GPU delegate computes int8 models in float: one rate for every arithmetic.
    if op_class in _FREE_CLASSES or n == 0:
        return {}
    out = {"gpu:ops": n, "gpu:bytes": nbytes}
    if op_class in _MAC_CLASSES:
        out["gpu:macs"] = macs
    else:
        out["gpu:light"] = elements
    return out


def features_from_totals(totals: Mapping[str, Sequence[float]], kind: str) -> dict[str, float]:
    """Feature columns of a model from its cached totals (see `ModelWork.totals`).

    For the Edge TPU and the GPU every operator is taken to run on the
    accelerator (true of the published models); user models go through
    `estimate_latency`, which places operators one by one.
    """
    out: dict[str, float] = {}
    wtotal = 0.0
    for key, (n, macs, elements, nbytes, wbytes) in totals.items():
        op_class, arith = key.split("/")
        if kind == "edgetpu":
            f = _tpu_features(op_class, n, macs, elements, 0.0)
            wtotal += wbytes if op_class not in _FREE_CLASSES else 0
        elif kind == "gpu":
            f = _gpu_features(op_class, n, macs, elements, nbytes)
        else:
            f = _cpu_features(op_class, arith, n, macs, elements, nbytes, wbytes)
        for k, v in f.items():
            out[k] = out.get(k, 0.0) + float(v)
    if kind == "edgetpu":
        out["tpu:offchip_bytes"] = max(0.0, wtotal - EDGETPU_SRAM_BYTES)
    return out


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Fitted cost coefficients of one device.

    Attributes:
      name: the CLI word, e.g. `"pixel4"`.
      description: what device it stands for.
      kind: `"cpu"` (coefficients over `CPU_COLUMNS`), `"edgetpu"` (over
        `TPU_COLUMNS`; operators after the first unsupported one run on
        `fallback`) or `"gpu"` (over `GPU_COLUMNS`; operators the GPU delegate
        does not take run on `fallback`, with copies between the partitions).
      coefficients: seconds per unit of each feature column.
      threads: CPU threads of the published figures (None if not stated).
      calibrated: arithmetics the published figures cover (`("fp32", "int8")`);
        others are costed by rule and the estimate says so.
      fallback: profile that runs what this device cannot, or None.
      calibration: where the fitted figures come from.
      validation: family-held-out error of this profile (the headline), or
        None (hand-made profile).
      model_validation: leave-one-architecture-out error (weaker: near-twins of
        a held-out model stay in the fit), or None.
      published_range_ms: smallest and largest published latency it was fitted
        to; estimates outside it are extrapolations and say so.
    """

    name: str
    description: str
    kind: str
    coefficients: Mapping[str, float]
    threads: int | None = None
    calibrated: tuple[str, ...] = ("fp32", "int8")
    fallback: str | None = None
    calibration: str = ""
    validation: Validation | None = None
    model_validation: Validation | None = None
    published_range_ms: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must be a non-empty string.")
        if self.kind not in ("cpu", "edgetpu", "gpu"):
            raise ValueError(f"`kind` must be 'cpu', 'edgetpu' or 'gpu', got {self.kind!r}.")
        cols = columns_for(self.kind)
        bad = sorted(set(self.coefficients) - set(cols))
        if bad:
            raise ValueError(f"`coefficients` has unknown columns {bad}; use {list(cols)}.")
        neg = {k: v for k, v in self.coefficients.items() if not v >= 0}
        if neg:
            raise ValueError(f"coefficients must be >= 0, got {neg}.")
        if self.kind in ("edgetpu", "gpu") and self.fallback is None:
            raise ValueError(f"an {self.kind!r} profile needs a `fallback` CPU profile.")
        object.__setattr__(
            self, "coefficients", MappingProxyType({c: float(self.coefficients.get(c, 0.0)) for c in cols})
        )

    def cost(self, features: Mapping[str, float]) -> float:
        """Seconds for the given feature columns."""
        return float(sum(self.coefficients.get(k, 0.0) * v for k, v in features.items()))


@dataclasses.dataclass(frozen=True)
class LatencyEstimate:
    """An estimated latency of a model on a profile; never a measurement.

    Attributes:
      profile: the profile's name.
      ms: the estimated latency in milliseconds.
      per_op_ms: the estimated time of each operator of the main subgraph, in
        execution order (control-flow operators include their subgraphs).
      unsupported_ops: operators the device cannot run, estimated on its
        fallback profile.
      label: how the number was obtained and how good the profile is, for display.
      notes: rules applied that the published figures do not validate.
      partitions: for a GPU profile, `(ops on the GPU, ops on the CPU)` of each
        run of consecutive delegated operators and the CPU operators after it.
      fragmented: True when the delegate splits the graph into more than
        `GPU_FRAGMENTED_PARTITIONS` GPU partitions.
    """

    profile: str
    ms: float
    per_op_ms: tuple[float, ...]
    unsupported_ops: tuple[str, ...]
    label: str = "estimated"
    notes: tuple[str, ...] = ()
    partitions: tuple[tuple[int, int], ...] = ()
    fragmented: bool = False

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "ms": self.ms,
            "estimated": True,
            "label": self.label,
            "unsupported_ops": list(self.unsupported_ops),
            "notes": list(self.notes),
            "partitions": [list(p) for p in self.partitions],
            "fragmented": self.fragmented,
        }
