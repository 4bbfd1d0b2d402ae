"""Device profiles: estimated latency from a model's per-op work, validated on published figures.

A benchmark on the host tells the truth about the host only. On an AVX2 laptop
without VNNI an int8 model often runs *slower* than its float twin, while on an
ARM phone it runs about twice as fast. This module turns the work of every
operator of a `.tflite` graph into an **estimated** latency on a named device.

The cost model is linear in the work of each operator (`tflight.devices.costs`):
per arithmetic (fp32 or int8), a time per multiply-accumulate and a time per
output element for each kind of MAC operator (k x k convolution, pointwise
convolution, dense, depthwise: MACs / outputs is the reduction depth, so a
shallow layer costs more per MAC than a deep one), a time per element of the
light operators (elementwise, pooling, resize, data movement), a time per
activation byte and per weight byte, and a fixed cost per operator. The ARM
CPU profiles (pixel3, pixel4, cortex-a53, pixel1-1core) share these
coefficients up to one speed factor per device and arithmetic, fitted together
with non-negative least squares on the relative error to **published**
latencies of real devices (`tflight/devices/fit.py`; the table is
`tflight/devices/data/published_latency.csv`, each row with its source, and the work
of those models, read from their `.tflite` graphs, is cached in
`tflight/devices/data/model_work.json` by `benchmarks/device_models.py`). Every
profile carries its own validation: the error on families left out of the fit
(every size and precision of MobileNetV1, EfficientNet-Lite, ... removed from
every device at once), which every estimate repeats in its label.

Arithmetic the tables do not cover is costed by rule and said so: fp16-weight
models run in fp32 on the CPU (weights are dequantized at load), hybrid
(dynamic-range) operators run their multiply-accumulates at the int8 rate plus
one fp32 pass per output element, int16x8 runs at the fp32 rates. Control flow
is costed through its subgraphs (a WHILE body once per trip, the dearer IF
branch). On the Edge TPU, operators run on the accelerator up to the first one
it does not support; that one and everything after it run on the Dev Board's
CPU (`cortex-a53`), as the Edge TPU compiler partitions a graph only once.
On a GPU delegate profile (pixel3-gpu, pixel4-gpu), operators the delegate
does not take run on the phone's CPU profile, each CPU<->GPU boundary costs a
copy of the tensors that cross it, and a graph split into several GPU
partitions is flagged as fragmented.

References:
  Williams, Waterman, Patterson. "Roofline: an insightful visual performance
    model for multicore architectures". CACM 2009.
  Lawson, Hanson. "Solving Least Squares Problems" (non-negative least
    squares), 1974.
  TensorFlow Lite hosted models and performance benchmarks (Pixel 3, Pixel 4,
    iPhone XS, GPU delegate); EfficientNet-Lite README (Pixel 4); TF-Slim
    MobileNetV2/V3 README (Pixel 1/2/3, one large core); Coral Edge TPU
    benchmarks and supported operations (coral.ai/docs/edgetpu/benchmarks,
    models-intro).
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from converters.opwork import GraphWork, OpRecord
from tflight.devices.costs import (  # noqa: F401 - private names used by tflight.sensitivity
    _CALIBRATED_RULES,
    _FREE_CLASSES,
    _MAC_CLASSES,
    _cpu_features,
    _gpu_features,
    _tpu_features,
)
from tflight.devices.costs import CPU_COLUMNS as CPU_COLUMNS
from tflight.devices.costs import EDGETPU_OPS as EDGETPU_OPS
from tflight.devices.costs import EDGETPU_SRAM_BYTES as EDGETPU_SRAM_BYTES
from tflight.devices.costs import GPU_COLUMNS as GPU_COLUMNS
from tflight.devices.costs import GPU_FRAGMENTED_PARTITIONS as GPU_FRAGMENTED_PARTITIONS
from tflight.devices.costs import TPU_COLUMNS as TPU_COLUMNS
from tflight.devices.costs import DeviceProfile as DeviceProfile
from tflight.devices.costs import LatencyEstimate as LatencyEstimate
from tflight.devices.costs import columns_for as columns_for
from tflight.devices.costs import features_from_totals as features_from_totals
from tflight.devices.costs import work_columns as work_columns
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
    "gpu_placement",
    "calibrate",  # noqa: F822 - in tflight.devices.fit, resolved by __getattr__
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
    "pixel2-1thread": "pixel1-1core",
    "pixelxl-1thread": "pixel1-1core",
    "iphone8-1thread": "pixel1-1core",
    "edgetpu-usb": "edgetpu",
    "iphone-xs-gpu": "pixel4-gpu",
}


@functools.cache
def _build(name: str) -> DeviceProfile:
    from tflight.devices import fit as profile_fit

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

# Names that moved to `tflight.devices.fit` / `tflight.devices.published`; still
# importable from here.
_MOVED = {
    "calibrate": "fit", "cross_validate": "fit", "Validation": "fit",
    "published_rows": "published", "published_latency_path": "published",
    "model_work_path": "published", "model_family": "published",
}


def __getattr__(name: str):
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(f"tflight.devices.{_MOVED[name]}"), name)
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
