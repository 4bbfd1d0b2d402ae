"""Device profiles: estimated latency from a model's per-op work, validated on published figures.

A benchmark on the host tells the truth about the host only. On an AVX2 laptop
without VNNI an int8 model often runs *slower* than its float twin, while on an
ARM phone it runs about twice as fast. This module turns the work of every
operator of a `.tflite` graph into an **estimated** latency on a named device.

The cost model is linear in the work of each operator: per arithmetic
(fp32 or int8) a time per multiply-accumulate for each kind of operator
(k x k convolution, pointwise convolution and dense layers, depthwise
convolution) and a time per element for the light operators (elementwise,
pooling, resize, data movement), plus a time per byte moved and a fixed cost
per operator. Each device's coefficients are fitted with non-negative least
squares on the relative error to a table of **published** latencies of real
devices (`tflight/data/published_latency.csv`, each row with its source), with
the work of those models read from their `.tflite` graphs
(`tflight/data/model_work.json`, made by `benchmarks/device_models.py`).
Every profile carries its own validation: the error on models left out of the
fit (leave-one-architecture-out cross-validation), which every estimate
repeats in its label.

Arithmetic the tables do not cover is costed by rule and said so: fp16-weight
models run in fp32 on the CPU (weights are dequantized at load), hybrid
(dynamic-range) operators run their multiply-accumulates at the int8 rate plus
one fp32 pass per output element, int16x8 runs at the fp32 rates. Control flow
is costed through its subgraphs (a WHILE body once per trip, the dearer IF
branch). On the Edge TPU, operators run on the accelerator up to the first one
it does not support; that one and everything after it run on the Dev Board's
CPU (`cortex-a53`), as the Edge TPU compiler partitions a graph only once.

References:
  Williams, Waterman, Patterson. "Roofline: an insightful visual performance
    model for multicore architectures". CACM 2009.
  Lawson, Hanson. "Solving Least Squares Problems" (non-negative least
    squares), 1974.
  TensorFlow Lite hosted models and performance benchmarks (Pixel 3, Pixel 4);
    EfficientNet-Lite README (Pixel 4); Coral Edge TPU benchmarks and
    supported operations (coral.ai/docs/edgetpu/benchmarks, models-intro).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

from converters.opwork import GraphWork, OpRecord
from tflight.errors import BenchmarkError

if TYPE_CHECKING:
    from tflight.profile_fit import Validation

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
    "gpu_placement",
    "calibrate",  # noqa: F822 - in tflight.profile_fit, resolved by __getattr__
    "UNFITTED_DEVICES",
]


class OpKind(enum.StrEnum):
    """The kind of arithmetic an operator does, which sets its throughput."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"
    INT16X8 = "int16x8"
    HYBRID = "hybrid"


OpWork = OpRecord  # one operator's work; see `converters.opwork.OpRecord`


@dataclasses.dataclass(frozen=True)
class ModelWork:
    """The per-op work of a whole model: its main subgraph, control flow nested.

    Attributes:
      ops: the main subgraph's operators in execution order (WHILE/IF/CALL_ONCE
        records carry the operators of the subgraphs they run).
      subgraphs: number of subgraphs in the file.
      input_dtypes: dtypes of the model's inputs.
    """

    ops: tuple[OpRecord, ...]
    subgraphs: int = 1
    input_dtypes: tuple[str, ...] = ()

    def walk(self) -> list[tuple[OpRecord, int]]:
        """Every operator that runs, with how many times it runs per inference."""
        return GraphWork(self.ops, self.subgraphs, self.input_dtypes, ()).walk()

    @property
    def macs(self) -> int:
        return sum(o.macs * n for o, n in self.walk())

    @property
    def bytes(self) -> int:
        return sum((o.bytes + o.weight_bytes) * n for o, n in self.walk())

    def totals(self) -> dict[str, list[int]]:
        """Work summed per `"op_class/arith"`: `[ops, macs, elements, bytes, weight_bytes]`.

        Operators inside loops count once per trip. This is the form in which
        the work of the published models is cached (`tflight/data`).
        """
        out: dict[str, list[int]] = {}
        for o, n in self.walk():
            row = out.setdefault(f"{o.op_class}/{o.arith}", [0, 0, 0, 0, 0])
            for k, v in enumerate((1, o.macs, o.elements, o.bytes, o.weight_bytes)):
                row[k] += int(v) * n
        return dict(sorted(out.items()))

    def kinds(self) -> dict[str, int]:
        """MACs per arithmetic."""
        out: dict[str, int] = {}
        for o, n in self.walk():
            out[o.arith] = out.get(o.arith, 0) + o.macs * n
        return out


# --- the cost model --------------------------------------------------------

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


# --- the named profiles ----------------------------------------------------

# Devices whose figures are fitted together (shared coefficients, one speed
# factor per device and arithmetic); each pool is cross-validated as a whole.
_POOLS = {
    "arm-cpu": ("pixel3", "pixel4", "cortex-a53", "pixel1-1core"),
    "edgetpu": ("edgetpu",),
    "pixel3-gpu": ("pixel3-gpu",),
    "pixel4-gpu": ("pixel4-gpu",),
}

_DEVICES = {
    "pixel3": dict(
        description="Pixel 3 phone CPU (Snapdragon 845), 4 threads, LiteRT CPU kernels",
        kind="cpu", threads=4, fallback=None, pool="arm-cpu",
    ),
    "pixel4": dict(
        description="Pixel 4 phone CPU (Snapdragon 855), 4 threads, LiteRT CPU kernels",
        kind="cpu", threads=4, fallback=None, pool="arm-cpu",
    ),
    "cortex-a53": dict(
        description="Coral Dev Board CPU (quad Cortex-A53, the page's 'Embedded CPU'), int8 models",
        kind="cpu", threads=None, fallback=None, pool="arm-cpu",
    ),
    "edgetpu": dict(
        description="Coral Dev Board Edge TPU, CPU fallback on cortex-a53",
        kind="edgetpu", threads=None, fallback="cortex-a53", pool="edgetpu",
    ),
    "pixel1-1core": dict(
        description="Pixel 1 phone CPU, one large core, TF-Lite (MobileNetV2/V3 pages' figures)",
        kind="cpu", threads=1, fallback=None, pool="arm-cpu",
    ),
    "pixel3-gpu": dict(
        description="Pixel 3 GPU delegate (Adreno 630); ops it does not take run on pixel3",
        kind="gpu", threads=None, fallback="pixel3", pool="pixel3-gpu",
    ),
    "pixel4-gpu": dict(
        description="Pixel 4 GPU delegate (Adreno 640); ops it does not take run on pixel4",
        kind="gpu", threads=None, fallback="pixel4", pool="pixel4-gpu",
    ),
}

# Devices with published figures that no profile is fitted to, and the profile
# whose estimates are checked against them.
UNFITTED_DEVICES = {
    "pixel2-1core": "pixel1-1core",
    "pixel3-1core": "pixel1-1core",
    "iphone-xs": "pixel4",
    "edgetpu-usb": "edgetpu",
    "iphone-xs-gpu": "pixel4-gpu",
}


@functools.cache
def _build(name: str) -> DeviceProfile:
    from tflight import profile_fit

    return profile_fit.build_profile(name, _DEVICES, _POOLS)


class _LazyProfiles(Mapping[str, DeviceProfile]):
    """The named profiles, fitted on first use (about a second for the CPU pool)."""

    def __getitem__(self, name: str) -> DeviceProfile:
        if name not in _DEVICES:
            raise KeyError(name)
        return _build(name)

    def __iter__(self) -> Iterator[str]:
        return iter(_DEVICES)

    def __len__(self) -> int:
        return len(_DEVICES)

    def __repr__(self) -> str:
        return f"PROFILES({', '.join(_DEVICES)})"


PROFILES: Mapping[str, DeviceProfile] = _LazyProfiles()

# Names that moved to `tflight.profile_fit` / `tflight.profile_data`; still
# importable from here.
_MOVED = {
    "calibrate": "profile_fit", "cross_validate": "profile_fit", "Validation": "profile_fit",
    "published_rows": "profile_data", "published_latency_path": "profile_data",
    "model_work_path": "profile_data", "model_family": "profile_data",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"tflight.{_MOVED[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def get_profile(name: str | DeviceProfile) -> DeviceProfile:
    """Returns the profile named `name` (a `DeviceProfile` is returned as is).

    Raises:
      BenchmarkError: for an unknown name; the message lists the known ones.
    """
    if isinstance(name, DeviceProfile):
        return name
    if not isinstance(name, str) or name not in _DEVICES:
        raise BenchmarkError(
            f"unknown device profile {name!r}; known profiles: {', '.join(_DEVICES)}"
        )
    return PROFILES[name]


def model_work(model: str | Path | bytes) -> ModelWork:
    """Computes the per-op work of a `.tflite` model from its graph.

    The file should already have passed `converters.verify_tflite`: the
    flatbuffer is parsed in the calling process (by `converters.opwork`).

    Args:
      model: path to a `.tflite` file, or its bytes.

    Returns:
      A `ModelWork`: one `OpWork` per operator of the main subgraph, with the
      subgraphs run by WHILE/IF/CALL_ONCE nested in their operators.

    Raises:
      BenchmarkError: if the file cannot be read or parsed.
    """
    from converters.opwork import op_work

    try:
        buf = Path(model).read_bytes() if isinstance(model, (str, Path)) else bytes(model)
    except OSError as e:
        raise BenchmarkError(f"cannot read {model}: {e}; pass a .tflite path or bytes") from e
    try:
        g = op_work(buf)
    except ValueError as e:
        raise BenchmarkError(f"cannot parse the .tflite graph: {e}") from e
    return ModelWork(ops=g.ops, subgraphs=g.subgraphs, input_dtypes=g.input_dtypes)


def _op_seconds(o: OpRecord, prof: DeviceProfile, notes: set[str]) -> float:
    """Seconds of one CPU operator, its subgraphs included."""
    t = prof.cost(_cpu_features(o.op_class, o.arith, 1, o.macs, o.elements, o.bytes,
                                o.weight_bytes))
    if o.arith in _CALIBRATED_RULES:
        notes.add(_CALIBRATED_RULES[o.arith])
    elif o.arith in ("fp32", "int8") and o.arith not in prof.calibrated and o.op_class not in _FREE_CLASSES:
        notes.add(f"{o.arith} not calibrated on {prof.name} (costed at its "
                  f"{'/'.join(prof.calibrated)} rates)")
    if o.children:
        child = [sum(_op_seconds(c, prof, notes) for c in ops) for ops in o.children]
        if o.op_name == "IF":
            t += max(child)
            notes.add("IF costed as its dearer branch")
        else:
            t += o.trips * sum(child)
        if not o.trips_known:
            notes.add(f"{o.op_name}#{o.index}: loop trip count not in the graph; body costed once")
    return t


def estimate_latency(
    work: ModelWork | str | Path | bytes,
    profile: str | DeviceProfile,
    *,
    threads: int | None = None,
    gpu_fallback: Sequence[str] | None = None,
) -> LatencyEstimate:
    """Estimates the latency of a model on a device profile.

    Args:
      work: the model's `ModelWork`, or a `.tflite` path or bytes.
      profile: a profile name from `PROFILES`, or a `DeviceProfile`.
      threads: CPU threads; only the thread count of the published figures
        (`profile.threads`) is supported, since no other was published.
      gpu_fallback: for a GPU profile, the operators the GPU delegate refused
        on a real run, as `converters.gpu.GpuRun.fallback` names them
        (`"GATHER: Only support 1D indices"`; the name before the colon
        counts). Without it, `gpu_placement`'s rule decides.

    Returns:
      A `LatencyEstimate` whose label says "estimated", names the profile and
      repeats its held-out error.

    Raises:
      BenchmarkError: for an unknown profile, an unsupported thread count or
        an unreadable model.

    Example:
      >>> est = estimate_latency("mobilenet_int8.tflite", "pixel4")
      >>> print(f"{est.ms:.1f} ms ({est.label})")
    """
    prof = get_profile(profile)
    if threads is not None and threads != prof.threads:
        raise BenchmarkError(
            f"profile {prof.name!r} is fitted to figures published at "
            f"{prof.threads or 'an unstated number of'} thread(s); `threads={threads}` cannot be "
            "estimated: leave `threads` unset"
        )
    if not isinstance(work, ModelWork):
        work = model_work(work)
    notes: set[str] = set()
    unsupported: list[str] = []
    per_op: list[float] = []
    partitions: list[tuple[int, int]] = []
    if prof.kind == "edgetpu":
        cpu = get_profile(prof.fallback)
        on_tpu = True
        cum_w = 0.0
        last = len(work.ops) - 1
        for i, o in enumerate(work.ops):
            boundary = (o.op_name == "QUANTIZE" and o.arith == "int8" and i == 0) or (
                o.op_name == "DEQUANTIZE" and i == last and o.op_class != "constant"
            )
            ok = (o.op_name in EDGETPU_OPS and o.arith == "int8" and not o.dynamic
                  and not o.children) or o.op_class in ("reshape", "constant")
            if boundary:
                # Float input/output conversions run on the CPU next to the TPU graph.
                per_op.append(_op_seconds(o, cpu, notes) * 1e3)
                continue
            if on_tpu and not ok:
                on_tpu = False
            if on_tpu:
                w = o.weight_bytes
                off = max(0.0, cum_w + w - EDGETPU_SRAM_BYTES) - max(0.0, cum_w - EDGETPU_SRAM_BYTES)
                cum_w += w
                per_op.append(prof.cost(_tpu_features(o.op_class, 1, o.macs, o.elements, off)) * 1e3)
            else:
                unsupported.append(f"{o.op_name}#{o.index} ({o.arith})")
                per_op.append(_op_seconds(o, cpu, notes) * 1e3)
    elif prof.kind == "gpu":
        per_op, partitions = _gpu_per_op(work, prof, gpu_fallback, notes, unsupported)
    else:
        per_op = [_op_seconds(o, prof, notes) * 1e3 for o in work.ops]
    val = prof.validation
    label = f"estimated on {prof.name}"
    if val is not None:
        label += f"; {val.short()}"
    else:
        label += "; profile not validated"
    total = float(sum(per_op))
    lo_hi = prof.published_range_ms
    if lo_hi is not None and not lo_hi[0] <= total <= lo_hi[1]:
        label += (f"; outside the published range {lo_hi[0]:g}-{lo_hi[1]:g} ms it was fitted to "
                  "(extrapolated)")
    fragmented = sum(1 for g, _ in partitions if g) > GPU_FRAGMENTED_PARTITIONS
    if unsupported and prof.kind == "edgetpu":
        label += (f"; {len(unsupported)} op(s) from {unsupported[0].split(' ')[0]} on not "
                  f"supported by {prof.name}, estimated on {prof.fallback}")
    elif unsupported:
        label += (f"; {len(unsupported)} op(s) not taken by the GPU delegate, estimated on "
                  f"{prof.fallback} with the copies between partitions")
    if fragmented:
        label += (f"; FRAGMENTED: the delegate splits the graph into "
                  f"{sum(1 for g, _ in partitions if g)} GPU partitions")
    return LatencyEstimate(
        profile=prof.name,
        ms=total,
        per_op_ms=tuple(per_op),
        unsupported_ops=tuple(unsupported),
        label=label,
        notes=tuple(sorted(notes)),
        partitions=tuple(partitions),
        fragmented=fragmented,
    )


def gpu_placement(work: ModelWork, gpu_fallback: Sequence[str] | None = None) -> list[bool]:
    """Which operators of the main subgraph the GPU delegate takes (True) or leaves to the CPU.

    With `gpu_fallback` (the refused operators of a real run of LiteRT's GPU
    accelerator, `converters.gpu.GpuRun.fallback`), every operator of a
    refused name stays on the CPU. Without it, a rule: control flow, custom
    operators, operators on integer index arithmetic and operators with a
    dynamic shape stay on the CPU (the GPU delegate takes static float or
    dequantized graphs only); metadata-only and folded operators follow their
    neighbours and never split a partition.
    """
    refused = {f.split(":")[0].strip() for f in gpu_fallback or ()}
    out = []
    for o in work.ops:
        if gpu_fallback is not None:
            on = o.op_name not in refused
        else:
            on = not (o.children or o.op_name.startswith("CUSTOM") or o.arith == "int"
                      or o.dynamic)
        out.append(on or o.op_class in ("reshape", "constant"))
    return out


def _gpu_per_op(work: ModelWork, prof: DeviceProfile, gpu_fallback: Sequence[str] | None,
                notes: set[str], unsupported: list[str]) -> tuple[list[float], list[tuple[int, int]]]:
    """Per-op ms on a GPU profile and its partitions (GPU ops, CPU ops after them)."""
    cpu = get_profile(prof.fallback)
    placed = gpu_placement(work, gpu_fallback)
    notes.add("ops the GPU delegate leaves to the CPU costed on "
              f"{cpu.name}, each CPU<->GPU boundary as a copy of the op's activations at "
              f"{cpu.name}'s per-byte rate, twice (no published figure covers this rule)")
    if gpu_fallback is None:
        notes.add("GPU placement by rule (no GPU run given): control flow, custom, integer "
                  "index and dynamic-shape ops on the CPU")
    per_op: list[float] = []
    partitions: list[list[int]] = []
    prev: bool | None = None
    byte_rate = cpu.coefficients["fp32:act_bytes"]
    for o, on in zip(work.ops, placed, strict=True):
        free = o.op_class in ("reshape", "constant")
        if on:
            t = prof.cost(_gpu_features(o.op_class, 1, o.macs, o.elements, o.bytes))
            if not free and prev is not True:
                partitions.append([0, 0])
        else:
            unsupported.append(f"{o.op_name}#{o.index} ({o.arith})")
            t = _op_seconds(o, cpu, notes)
            if not partitions:
                partitions.append([0, 0])
        if not free and prev is not None and on != prev:
            t += 2 * byte_rate * o.bytes
        if not free:
            partitions[-1][0 if on else 1] += 1
            prev = on
        per_op.append(t * 1e3)
    return per_op, [tuple(p) for p in partitions]
