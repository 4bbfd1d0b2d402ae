"""Checking a converted model against its source.

The `.tflite` model is run in LiteRT on sample inputs and its outputs are
compared with the source model's: float conversions must agree nearly exactly,
quantized ones by signal-to-noise ratio and, for classifier-shaped outputs
(`(batch, classes)`), by top-1 agreement. Thresholds are per mode and can be
overridden.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from converters.errors import ValidationError
from converters.modes import Mode

__all__ = [
    "Thresholds",
    "OutputComparison",
    "ValidationReport",
    "default_thresholds",
    "compare_outputs",
]


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """Pass marks for a converted model.

    Attributes:
      min_snr_db: lowest signal-to-noise ratio, in dB, of every output
        (10·log10 of the reference power over the error power).
      min_top1: lowest share of samples whose argmax agrees with the source
        model's, for outputs of shape `(batch, classes)` with `classes >= 2`.
      max_abs_error: largest absolute difference allowed anywhere, or None.
    """

    min_snr_db: float = 0.0
    min_top1: float = 0.0
    max_abs_error: float | None = None

    def __post_init__(self) -> None:
        if not math.isfinite(self.min_snr_db):
            raise ValueError(f"`min_snr_db` must be a finite number, got {self.min_snr_db!r}.")
        if not 0.0 <= self.min_top1 <= 1.0:
            raise ValueError(f"`min_top1` must be in [0, 1], got {self.min_top1!r}.")
        if self.max_abs_error is not None and not self.max_abs_error >= 0:
            raise ValueError(
                f"`max_abs_error` must be >= 0 or None, got {self.max_abs_error!r}."
            )


_DEFAULTS = {
    Mode.FP32: Thresholds(min_snr_db=60.0, min_top1=0.97),
    Mode.FP16: Thresholds(min_snr_db=30.0, min_top1=0.95),
    Mode.DYNAMIC: Thresholds(min_snr_db=15.0, min_top1=0.85),
    Mode.INT8: Thresholds(min_snr_db=12.0, min_top1=0.85),
    Mode.INT16X8: Thresholds(min_snr_db=25.0, min_top1=0.9),
}


def default_thresholds(mode: Mode | str) -> Thresholds:
    """The default pass marks for `mode`."""
    return _DEFAULTS[Mode(mode)]


@dataclasses.dataclass(frozen=True)
class OutputComparison:
    """How one output of the converted model compares with the source's."""

    name: str
    snr_db: float
    max_abs_error: float
    mean_abs_error: float
    top1: float | None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ValidationReport:
    """The outcome of comparing a converted model with its source.

    Attributes:
      mode: the conversion mode.
      samples: number of samples compared.
      sample_source: where the samples came from: `"validation_data"` (given
        by the caller), `"held-out representative_data"` (representative
        samples not used for calibration), `"representative_data"` (no mode
        was calibrated, or too few samples to hold any out: then
        `"in-sample representative_data"`), or `"random"`.
      thresholds: the pass marks applied.
      outputs: one comparison per output.
      failures: what failed, one sentence each (empty if passed).
    """

    mode: Mode
    samples: int
    sample_source: str
    thresholds: Thresholds
    outputs: tuple[OutputComparison, ...]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.failures

    @property
    def snr_db(self) -> float:
        """The lowest SNR over the outputs."""
        return min(o.snr_db for o in self.outputs)

    @property
    def top1(self) -> float | None:
        """The lowest top-1 agreement over classifier-shaped outputs, or None."""
        vals = [o.top1 for o in self.outputs if o.top1 is not None]
        return min(vals) if vals else None

    def short(self) -> str:
        """A one-cell description: `ok (SNR 41.2 dB, top-1 100.0%)` or `FAILED (...)`."""
        parts = [f"SNR {_fmt_db(self.snr_db)}"]
        if self.top1 is not None:
            parts.append(f"top-1 {self.top1:.1%}")
        return f"{'ok' if self.passed else 'FAILED'} ({', '.join(parts)})"

    def summary(self, print_fn: Any = None) -> str:
        lines = [
            f"Validation of {self.mode.value} on {self.samples} {self.sample_source} samples: "
            f"{'passed' if self.passed else 'FAILED'}"
        ]
        for o in self.outputs:
            top1 = "" if o.top1 is None else f", top-1 agreement {o.top1:.1%}"
            lines.append(
                f"  {o.name}: SNR {_fmt_db(o.snr_db)}, max |error| {o.max_abs_error:.3g}"
                f", mean |error| {o.mean_abs_error:.3g}{top1}"
            )
        lines.extend(f"  - {f}" for f in self.failures)
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "passed": self.passed,
            "samples": self.samples,
            "sample_source": self.sample_source,
            "thresholds": dataclasses.asdict(self.thresholds),
            "outputs": [o.to_dict() for o in self.outputs],
            "failures": list(self.failures),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ValidationReport:
        """The inverse of `to_dict`."""
        return cls(
            mode=Mode(d["mode"]),
            samples=int(d["samples"]),
            sample_source=str(d["sample_source"]),
            thresholds=Thresholds(**d["thresholds"]),
            outputs=tuple(
                OutputComparison(
                    name=o["name"],
                    snr_db=float(o["snr_db"]),
                    max_abs_error=float(o["max_abs_error"]),
                    mean_abs_error=float(o["mean_abs_error"]),
                    top1=None if o["top1"] is None else float(o["top1"]),
                )
                for o in d["outputs"]
            ),
            failures=tuple(d["failures"]),
        )

    def finding(self) -> str:
        """One sentence: what disagreed and by how much (no advice)."""
        return (
            f"The {self.mode.value} model disagrees with the source model on "
            f"{self.samples} {self.sample_source} samples: " + "; ".join(self.failures) + "."
        )

    def raise_if_failed(self) -> None:
        """Raises `ValidationError` naming each threshold missed and by how much."""
        if self.failures:
            advice = (
                f" Loosen `thresholds` (e.g. {{{self.mode.value!r}: Thresholds(min_snr_db=...)}}), "
                "give calibration data closer to real inputs, or pass validate=False to skip "
                "the check."
            )
            fix = None
            if self.mode is Mode.INT8:
                fix = (
                    "convert(..., selective=True) keeps float just the ops that lose the "
                    "signal (a selective int8 model, labelled as such)"
                )
                advice += (
                    f" Or {fix}. Mode 'dynamic' keeps activations in float and often agrees "
                    "where int8 does not (e.g. a model whose quantization-aware training kept "
                    "layers float)."
                )
            e = ValidationError(self.finding() + advice, fix=fix)
            e.report = self
            e.finding = self.finding()
            e.mode = self.mode.value
            raise e


def _fmt_db(x: float) -> str:
    return "inf dB" if math.isinf(x) else f"{x:.1f} dB"


def _snr_db(ref: np.ndarray, got: np.ndarray) -> float:
    signal = float(np.mean(np.square(ref, dtype=np.float64)))
    noise = float(np.mean(np.square(ref.astype(np.float64) - got.astype(np.float64))))
    if noise == 0.0:
        return math.inf
    if signal == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal / noise)


def compare_outputs(
    reference: Mapping[str, np.ndarray],
    converted: Mapping[str, np.ndarray],
    *,
    mode: Mode,
    thresholds: Thresholds,
    sample_source: str,
) -> ValidationReport:
    """Compares outputs keyed by name and applies `thresholds`."""
    comps = []
    failures = []
    samples = 0
    for name, ref in reference.items():
        ref = np.asarray(ref, np.float32)
        got = np.asarray(converted[name], np.float32)
        samples = ref.shape[0] if ref.ndim else 1
        if ref.shape != got.shape:
            failures.append(
                f"output {name!r} has shape {got.shape}, the source model's is {ref.shape}"
            )
            continue
        diff = np.abs(ref - got)
        top1 = None
        if ref.ndim == 2 and ref.shape[1] >= 2:
            top1 = float(np.mean(np.argmax(ref, 1) == np.argmax(got, 1)))
        comp = OutputComparison(
            name=name,
            snr_db=_snr_db(ref, got),
            max_abs_error=float(diff.max()) if diff.size else 0.0,
            mean_abs_error=float(diff.mean()) if diff.size else 0.0,
            top1=top1,
        )
        comps.append(comp)
        if not np.all(np.isfinite(got)):
            failures.append(f"output {name!r} contains NaN or infinite values")
        if comp.snr_db < thresholds.min_snr_db:
            failures.append(
                f"output {name!r}: SNR {_fmt_db(comp.snr_db)} is below the required "
                f"{thresholds.min_snr_db:.1f} dB (short by {thresholds.min_snr_db - comp.snr_db:.1f} dB)"
            )
        if top1 is not None and top1 < thresholds.min_top1:
            failures.append(
                f"output {name!r}: top-1 agreement {top1:.1%} is below the required "
                f"{thresholds.min_top1:.1%} (short by {(thresholds.min_top1 - top1) * 100:.1f} points)"
            )
        if thresholds.max_abs_error is not None and comp.max_abs_error > thresholds.max_abs_error:
            failures.append(
                f"output {name!r}: max |error| {comp.max_abs_error:.3g} exceeds "
                f"{thresholds.max_abs_error:.3g} (by {comp.max_abs_error - thresholds.max_abs_error:.3g})"
            )
    return ValidationReport(
        mode=mode,
        samples=samples,
        sample_source=sample_source,
        thresholds=thresholds,
        outputs=tuple(comps),
        failures=tuple(failures),
    )
