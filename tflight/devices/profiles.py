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

import csv
import dataclasses
import enum
import functools
import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType

import numpy as np

from converters.opwork import GraphWork, OpRecord
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

_MAC_CLASS = {"conv": "conv", "pointwise": "pointwise", "dense": "pointwise",
              "depthwise": "depthwise"}
_LIGHT_CLASSES = {"elementwise", "pool", "resize", "movement"}
_FREE_CLASSES = {"reshape", "constant", "control"}

CPU_COLUMNS = tuple(
    f"{a}:{c}" for a in ("fp32", "int8") for c in ("conv", "pointwise", "depthwise", "light")
) + ("bytes", "ops")
TPU_COLUMNS = ("tpu:macs", "tpu:light", "tpu:offchip_bytes", "ops")

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
    out = {"bytes": nbytes + wbytes, "ops": n}
    if op_class in _MAC_CLASS:
        out[f"{rate}:{_MAC_CLASS[op_class]}"] = macs
        if arith == "hybrid":
            out["fp32:light"] = elements
    else:
        out[f"{rate}:light"] = elements
    return out


def _tpu_features(op_class: str, n: float, macs: float, elements: float,
                  offchip: float) -> dict[str, float]:
    if op_class in _FREE_CLASSES or n == 0:
        return {}
    out = {"ops": n, "tpu:offchip_bytes": offchip}
    if op_class in _MAC_CLASS:
        out["tpu:macs"] = macs
    else:
        out["tpu:light"] = elements
    return out


def features_from_totals(totals: Mapping[str, Sequence[float]], kind: str) -> dict[str, float]:
    """Feature columns of a model from its cached totals (see `ModelWork.totals`).

    For the Edge TPU every operator is taken to run on the accelerator (true of
    the published models); user models go through `estimate_latency`, which
    applies the partition rule operator by operator.
    """
    out: dict[str, float] = {}
    wtotal = 0.0
    for key, (n, macs, elements, nbytes, wbytes) in totals.items():
        op_class, arith = key.split("/")
        if kind == "edgetpu":
            f = _tpu_features(op_class, n, macs, elements, 0.0)
            wtotal += wbytes if op_class not in _FREE_CLASSES else 0
        else:
            f = _cpu_features(op_class, arith, n, macs, elements, nbytes, wbytes)
        for k, v in f.items():
            out[k] = out.get(k, 0.0) + float(v)
    if kind == "edgetpu":
        out["tpu:offchip_bytes"] = max(0.0, wtotal - EDGETPU_SRAM_BYTES)
    return out


@dataclasses.dataclass(frozen=True)
class Validation:
    """Held-out error of a profile: each model predicted by a fit without it.

    Attributes:
      method: how models were held out.
      rows: published figures (model, precision) the profile was fitted to.
      median_abs_err_pct: median |estimate / published - 1| on held-out rows, in %.
      worst_abs_err_pct: the largest such error, in %.
      rank_corr: Spearman rank correlation of held-out estimates and published
        figures (None with fewer than 3 rows).
      int8_speedup_median_abs_err_pct: median error of the estimated fp32/int8
        speed-up over architectures published in both precisions (None if none).
      predictions: `(model, precision, published_ms, heldout_estimate_ms)`.
    """

    method: str
    rows: int
    median_abs_err_pct: float
    worst_abs_err_pct: float
    rank_corr: float | None
    int8_speedup_median_abs_err_pct: float | None
    predictions: tuple[tuple[str, str, float, float], ...] = ()

    def short(self) -> str:
        return (f"held-out error median {self.median_abs_err_pct:.0f}%, worst "
                f"{self.worst_abs_err_pct:.0f}% over {self.rows} published figures")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["predictions"] = [list(p) for p in self.predictions]
        return d


@dataclasses.dataclass(frozen=True)
class DeviceProfile:
    """Fitted cost coefficients of one device.

    Attributes:
      name: the CLI word, e.g. `"pixel4"`.
      description: what device it stands for.
      kind: `"cpu"` (coefficients over `CPU_COLUMNS`) or `"edgetpu"` (over
        `TPU_COLUMNS`; operators after the first unsupported one run on
        `fallback`).
      coefficients: seconds per unit of each feature column.
      threads: CPU threads of the published figures (None if not stated).
      calibrated: arithmetics the published figures cover (`("fp32", "int8")`);
        others are costed by rule and the estimate says so.
      fallback: profile that runs what this device cannot, or None.
      calibration: where the fitted figures come from.
      validation: held-out error of this profile, or None (hand-made profile).
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
    published_range_ms: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("`name` must be a non-empty string.")
        if self.kind not in ("cpu", "edgetpu"):
            raise ValueError(f"`kind` must be 'cpu' or 'edgetpu', got {self.kind!r}.")
        cols = CPU_COLUMNS if self.kind == "cpu" else TPU_COLUMNS
        bad = sorted(set(self.coefficients) - set(cols))
        if bad:
            raise ValueError(f"`coefficients` has unknown columns {bad}; use {list(cols)}.")
        neg = {k: v for k, v in self.coefficients.items() if not v >= 0}
        if neg:
            raise ValueError(f"coefficients must be >= 0, got {neg}.")
        if self.kind == "edgetpu" and self.fallback is None:
            raise ValueError("an 'edgetpu' profile needs a `fallback` CPU profile.")
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
    """

    profile: str
    ms: float
    per_op_ms: tuple[float, ...]
    unsupported_ops: tuple[str, ...]
    label: str = "estimated"
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "profile": self.profile,
            "ms": self.ms,
            "estimated": True,
            "label": self.label,
            "unsupported_ops": list(self.unsupported_ops),
            "notes": list(self.notes),
        }


# --- published figures and fitting -----------------------------------------


def published_latency_path() -> Path:
    """Path of the published latency table the profiles are fitted to."""
    return Path(__file__).with_name("data") / "published_latency.csv"


def model_work_path() -> Path:
    """Path of the cached work of the published models."""
    return Path(__file__).with_name("data") / "model_work.json"


@dataclasses.dataclass(frozen=True)
class _Row:
    device: str
    model: str
    precision: str
    ms: float
    source: str
    totals: Mapping[str, Sequence[float]]


@functools.cache
def published_rows() -> tuple[_Row, ...]:
    """The published figures joined with the cached work of their models."""
    work = json.loads(model_work_path().read_text())["models"]
    rows = []
    with open(published_latency_path(), newline="") as f:
        for r in csv.DictReader(line for line in f if not line.startswith("#")):
            key = f"{r['model']}/{r['precision']}"
            if key not in work:
                raise BenchmarkError(
                    f"{model_work_path()} has no work for {key}; run "
                    "`python benchmarks/device_models.py` to rebuild it"
                )
            rows.append(_Row(r["device"], r["model"], r["precision"], float(r["ms"]),
                             r["source"], work[key]["totals"]))
    return tuple(rows)


# Strength of the pull of each coefficient towards the device's flat rate (all
# multiply-accumulates and light elements at the median time per MAC of the
# device's figures). Fixed a priori, not tuned on held-out error.
_RIDGE = 0.1


def calibrate(
    samples: Sequence[tuple[Mapping[str, Sequence[float]], float]],
    *,
    name: str,
    description: str,
    kind: str = "cpu",
    threads: int | None = None,
    fallback: str | None = None,
    calibration: str = "",
) -> DeviceProfile:
    """Fits a profile's coefficients to published latencies.

    Minimizes the squared relative error ``sum((estimate / published - 1)^2)``
    over the samples with non-negative coefficients (Lawson-Hanson NNLS), plus
    a small ridge pulling every multiply-accumulate and element coefficient
    towards one flat rate (the median time per MAC of the samples), so that an
    operator kind the samples barely exercise keeps a sensible cost. An
    arithmetic absent from the samples copies the other's coefficients and is
    marked as not calibrated.

    Args:
      samples: `(totals, ms)` pairs: the work of a model (`ModelWork.totals()`)
        and its published latency in milliseconds.
      name: profile name.
      description: what the device is.
      kind: `"cpu"` or `"edgetpu"`.
      threads: threads of the published figures.
      fallback: profile for unsupported operators (required for `"edgetpu"`).
      calibration: where the figures come from.

    Returns:
      A `DeviceProfile` (without `validation`; see `cross_validate`).

    Raises:
      ValueError: with fewer than 2 samples or a non-positive latency.
    """
    from scipy.optimize import nnls

    if len(samples) < 2:
        raise ValueError(f"need at least 2 published figures to fit, got {len(samples)}.")
    if any(not ms > 0 for _, ms in samples):
        raise ValueError("published latencies must be > 0 ms.")
    cols = CPU_COLUMNS if kind == "cpu" else TPU_COLUMNS
    feats = [features_from_totals(t, kind) for t, _ in samples]
    y = np.array([ms * 1e-3 for _, ms in samples])
    x = np.array([[f.get(c, 0.0) for c in cols] for f in feats])
    mac_cols = [i for i, c in enumerate(cols) if c not in ("bytes", "ops", "tpu:offchip_bytes")]
    total_macs = x[:, mac_cols].sum(axis=1)
    flat = float(np.median(y / np.maximum(total_macs, 1.0)))
    # Column scales: the flat rate for work columns, a typical share of the
    # latency for bytes and ops, so the ridge and the solver see unit-sized terms.
    scale = np.empty(len(cols))
    for j in range(len(cols)):
        if j in mac_cols:
            scale[j] = flat
        else:
            col = x[:, j]
            scale[j] = float(np.median(y[col > 0] / col[col > 0])) if np.any(col > 0) else 1.0
    a = (x * scale) / y[:, None]
    b = np.ones(len(y))
    reg_rows, reg_b = [], []
    for j in mac_cols:
        r = np.zeros(len(cols))
        r[j] = np.sqrt(_RIDGE)
        reg_rows.append(r)
        reg_b.append(np.sqrt(_RIDGE))
    a_aug = np.vstack([a, *reg_rows]) if reg_rows else a
    b_aug = np.concatenate([b, reg_b])
    u, _ = nnls(a_aug, b_aug, maxiter=50 * len(cols))
    coef = dict(zip(cols, (u * scale).tolist(), strict=True))
    calibrated: tuple[str, ...] = ("int8",) if kind == "edgetpu" else ()
    if kind == "cpu":
        seen = {a_ for a_ in ("fp32", "int8") if any(x[:, cols.index(f"{a_}:pointwise")] > 0)
                or any(x[:, cols.index(f"{a_}:depthwise")] > 0)}
        calibrated = tuple(sorted(seen))
        for missing, have in (("fp32", "int8"), ("int8", "fp32")):
            if missing not in seen and have in seen:
                for c in ("conv", "pointwise", "depthwise", "light"):
                    coef[f"{missing}:{c}"] = coef[f"{have}:{c}"]
    return DeviceProfile(
        name=name,
        description=description,
        kind=kind,
        coefficients=coef,
        threads=threads,
        calibrated=calibrated,
        fallback=fallback,
        calibration=calibration,
        published_range_ms=(float(y.min() * 1e3), float(y.max() * 1e3)),
    )


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def model_family(model: str) -> str:
    """The architecture family of a published model (`mobilenet_v1_0.50_160` -> `mobilenet_v1`)."""
    for prefix in ("mobilenet_v1", "mobilenet_v2", "nasnet", "efficientnet_lite", "vgg",
                   "resnet50", "resnet152", "resnet_v2"):
        if model.startswith(prefix):
            return prefix
    return model


def cross_validate(
    rows: Sequence[_Row], fit: Callable[[Sequence[_Row]], DeviceProfile], *, by: str = "architecture"
) -> Validation:
    """Cross-validation in which every prediction comes from a fit without its model.

    Args:
      rows: the published figures of one device.
      fit: `fit(rows) -> DeviceProfile`.
      by: `"architecture"`: each model (fp32 and int8 together) is held out
        in turn; `"family"`: each family (all MobileNetV1 sizes, all
        EfficientNet-Lites, ...) is held out in turn, a stricter test.
    """
    if by not in ("architecture", "family"):
        raise ValueError(f"`by` must be 'architecture' or 'family', got {by!r}.")
    key = (lambda r: r.model) if by == "architecture" else (lambda r: model_family(r.model))
    preds: list[tuple[str, str, float, float]] = []
    for m in sorted({key(r) for r in rows}):
        train = [r for r in rows if key(r) != m]
        test = [r for r in rows if key(r) == m]
        if len(train) < 2:
            continue
        prof = fit(train)
        for r in test:
            est = prof.cost(features_from_totals(r.totals, prof.kind)) * 1e3
            preds.append((r.model, r.precision, r.ms, est))
    errs = [abs(p / t - 1) * 100 for _, _, t, p in preds]
    speed = []
    pairs = {(m, prec): (t, p) for m, prec, t, p in preds}
    for (m, prec), (t, p) in pairs.items():
        if prec == "int8" and (m, "fp32") in pairs:
            tf, pf = pairs[(m, "fp32")]
            speed.append(abs((pf / p) / (tf / t) - 1) * 100)
    return Validation(
        method=(
            "leave-one-architecture-out (fp32 and int8 of a model held out together)"
            if by == "architecture"
            else "leave-one-family-out (every size and precision of a family held out together)"
        ),
        rows=len(preds),
        median_abs_err_pct=float(np.median(errs)),
        worst_abs_err_pct=float(np.max(errs)),
        rank_corr=_spearman([p[2] for p in preds], [p[3] for p in preds]),
        int8_speedup_median_abs_err_pct=float(np.median(speed)) if speed else None,
        predictions=tuple(preds),
    )


_DEVICES = {
    "pixel3": dict(
        description="Pixel 3 phone CPU (Snapdragon 845), 4 threads, LiteRT CPU kernels",
        kind="cpu", threads=4, fallback=None,
    ),
    "pixel4": dict(
        description="Pixel 4 phone CPU (Snapdragon 855), 4 threads, LiteRT CPU kernels",
        kind="cpu", threads=4, fallback=None,
    ),
    "cortex-a53": dict(
        description="Coral Dev Board CPU (quad Cortex-A53, the page's 'Embedded CPU'), int8 models",
        kind="cpu", threads=None, fallback=None,
    ),
    "edgetpu": dict(
        description="Coral Dev Board Edge TPU, CPU fallback on cortex-a53",
        kind="edgetpu", threads=None, fallback="cortex-a53",
    ),
}


def _fit_device(name: str, rows: Sequence[_Row]) -> DeviceProfile:
    spec = _DEVICES[name]
    sources = sorted({r.source for r in rows})
    return calibrate(
        [(r.totals, r.ms) for r in rows],
        name=name,
        description=spec["description"],
        kind=spec["kind"],
        threads=spec["threads"],
        fallback=spec["fallback"],
        calibration=f"{len(rows)} published figures ({', '.join(sources)}; "
        f"see {published_latency_path().name})",
    )


@functools.cache
def _build(name: str) -> DeviceProfile:
    rows = [r for r in published_rows() if r.device == name]
    prof = _fit_device(name, rows)
    val = cross_validate(rows, lambda train: _fit_device(name, train))
    return dataclasses.replace(prof, validation=val)


class _LazyProfiles(Mapping[str, DeviceProfile]):
    """The named profiles, fitted on first use (a fraction of a second)."""

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
) -> LatencyEstimate:
    """Estimates the latency of a model on a device profile.

    Args:
      work: the model's `ModelWork`, or a `.tflite` path or bytes.
      profile: a profile name from `PROFILES`, or a `DeviceProfile`.
      threads: CPU threads; only the thread count of the published figures
        (`profile.threads`) is supported, since no other was published.

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
    if unsupported:
        label += (f"; {len(unsupported)} op(s) from {unsupported[0].split(' ')[0]} on not "
                  f"supported by {prof.name}, estimated on {prof.fallback}")
    return LatencyEstimate(
        profile=prof.name,
        ms=total,
        per_op_ms=tuple(per_op),
        unsupported_ops=tuple(unsupported),
        label=label,
        notes=tuple(sorted(notes)),
    )
