"""Scoring a quantized variant against its float model, in LiteRT on the user's samples.

`_Evaluator` runs the float model once on a set of samples and then scores
each variant on the same samples: output SNR, cosine similarity, KL divergence
of the softmax, top-1 agreement and (with labels) accuracy, plus the paired
losses and gains that `stats.drop_bound_pt` turns into a bound. `_verify` is
the final check of a chosen model, reported as a `Verification`.
"""

from __future__ import annotations

import dataclasses
import gzip
import math
from typing import Any

import numpy as np

from tflight.errors import PrecisionError
from tflight.precision.data import Data, _n
from tflight.precision.model import _FloatModel
from tflight.precision.stats import DEFAULT_CONFIDENCE, drop_bound_pt

__all__ = ["Verification"]


def _probs(z: np.ndarray) -> np.ndarray:
    z = z.reshape(len(z), -1).astype(np.float64)
    if np.all(z >= 0) and np.allclose(z.sum(-1), 1.0, atol=1e-3):
        return np.clip(z, 1e-12, 1.0)
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return np.clip(e / e.sum(-1, keepdims=True), 1e-12, 1.0)


@dataclasses.dataclass(frozen=True)
class _Score:
    snr_db: float
    cosine: float
    kl: float
    agreement: float
    accuracy: float | None
    losses: int  # samples the float model gets right and this one wrong (no labels: top-1 changed)
    gains: int  # samples the float model gets wrong and this one right (no labels: 0)


class _Evaluator:
    """Scores variants of one float model on fixed samples (the float output computed once)."""

    def __init__(self, fm: _FloatModel, x: Data, y: np.ndarray | None, *, output: int = 0,
                 confidence: float = DEFAULT_CONFIDENCE) -> None:
        self.x, self.y = x, y
        self.output = output
        self.confidence = confidence
        self.last_error: str | None = None
        self.errors: dict[int, str] = {}
        self.ref = self._run_trusted(fm.content)
        self.ref_top = self.ref.reshape(len(self.ref), -1).argmax(-1)
        self.float_right = None if y is None else self.ref_top == y
        self.float_score = self._score(self.ref)

    @property
    def n(self) -> int:
        return _n(self.x)

    def _run_trusted(self, content: bytes) -> np.ndarray:
        from converters.runtime import TFLiteModel

        # Bytes from the float model we verified, or made from it by litert-quantizer.
        x = self.x if len(self.x) > 1 else self.x[0]
        out = TFLiteModel(content, _trusted=True).predict(x, batch_size=64)
        return np.asarray(out[self.output] if isinstance(out, list) else out, np.float32)

    def _score(self, got: np.ndarray) -> _Score:
        ref = self.ref.reshape(len(self.ref), -1).astype(np.float64)
        g = got.reshape(len(got), -1).astype(np.float64)
        noise = float(np.sum((ref - g) ** 2))
        signal = float(np.sum(ref**2))
        snr = math.inf if noise == 0 else 10 * math.log10(max(signal, 1e-30) / noise)
        num = np.sum(ref * g, -1)
        den = np.linalg.norm(ref, axis=-1) * np.linalg.norm(g, axis=-1)
        cos = float(np.mean(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))
        p, q = _probs(ref), _probs(g)
        kl = float(np.mean(np.sum(p * (np.log(p) - np.log(q)), -1)))
        top = g.argmax(-1)
        same = top == self.ref_top
        agreement = float(np.mean(same))
        if self.y is None:
            acc, losses, gains = None, int(np.sum(~same)), 0
        else:
            right = top == self.y
            acc = float(np.mean(right))
            losses = int(np.sum(self.float_right & ~right))
            gains = int(np.sum(~self.float_right & right))
        return _Score(snr, cos, max(kl, 0.0), agreement, acc, losses, gains)

    def __call__(self, content: bytes) -> _Score | None:
        """Scores a variant; None if LiteRT's default CPU path cannot run it.

        A None is never a silent NaN: LiteRT's message is kept in
        `last_error` (and `errors`, by variant), and the sensitivity entry or
        search step that got None carries it in its `error` field.
        """
        self.last_error = None
        try:
            return self._score(self._run_trusted(content))
        except (RuntimeError, ValueError) as e:
            # e.g. "failed to create XNNPACK runtime" for some mixes of int4 and float ops.
            text = " ".join(str(e).split())[:300] or type(e).__name__
            self.last_error = f"LiteRT could not run this variant: {type(e).__name__}: {text}"
            self.errors[hash(content)] = self.last_error
            return None

    def drop_pt(self, s: _Score | None) -> float:
        """Accuracy drop in points (with labels), else top-1 disagreement with the float model."""
        if s is None:
            return math.inf
        if s.accuracy is not None and self.float_score.accuracy is not None:
            return 100.0 * (self.float_score.accuracy - s.accuracy)
        return 100.0 * (1.0 - s.agreement)

    def bound_pt(self, s: _Score | None) -> float:
        """`drop_bound_pt` of a variant on these samples at this confidence."""
        if s is None:
            return math.inf
        return drop_bound_pt(s.losses, self.n, self.confidence)


def _gzip_size(content: bytes) -> int:
    """Bytes of `content` after gzip -9."""
    return len(gzip.compress(content, compresslevel=9, mtime=0))


def _latency_ms(content: bytes, profile: str) -> float:
    """A device profile's latency estimate of a variant, in ms (an estimate, not a run)."""
    from tflight.devices.profiles import estimate_latency

    return float(estimate_latency(content, profile).ms)


@dataclasses.dataclass(frozen=True)
class Verification:
    """A quantized model run in LiteRT against the float model on held-out samples.

    Attributes:
      data: what the samples are.
      samples: how many.
      float_accuracy: the float model's accuracy (None without labels).
      accuracy: the quantized model's accuracy (None without labels).
      accuracy_drop_pt: float minus quantized accuracy in points (without
        labels: top-1 disagreement in points).
      agreement: top-1 agreement with the float model.
      snr_db: output SNR against the float model.
      losses: samples the float model gets right and the quantized one wrong
        (without labels: samples whose top-1 changed).
      gains: samples the float model gets wrong and the quantized one right.
      drop_bound_pt: one-sided upper bound on the drop on new data at
        `confidence` (see `drop_bound_pt`), from these samples.
      confidence: the bound's confidence level.
      output: the model output measured.
    """

    data: str
    samples: int
    float_accuracy: float | None
    accuracy: float | None
    accuracy_drop_pt: float
    agreement: float
    snr_db: float
    losses: int = 0
    gains: int = 0
    drop_bound_pt: float = math.nan
    confidence: float = DEFAULT_CONFIDENCE
    output: str = ""

    def short(self) -> str:
        acc = "" if self.accuracy is None else (
            f"accuracy {self.accuracy:.2%} vs float {self.float_accuracy:.2%} "
            f"(drop {self.accuracy_drop_pt:+.2f} pt), "
        )
        snr = "inf" if math.isinf(self.snr_db) else f"{self.snr_db:.1f}"
        out = f" (output {self.output!r})" if self.output else ""
        return (f"{acc}top-1 agreement {self.agreement:.1%}, SNR {snr} dB; "
                f"{self.losses} lost / {self.gains} gained samples, drop <= "
                f"{self.drop_bound_pt:.2f} pt at {self.confidence:.0%} confidence; "
                f"measured in LiteRT on {self.samples} samples of {self.data}{out}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if math.isinf(self.snr_db):
            d["snr_db"] = None
        return d


def _verify(fm: _FloatModel, content: bytes, x: Data, y: np.ndarray | None,
            data: str, *, output: int = 0,
            confidence: float = DEFAULT_CONFIDENCE) -> Verification:
    import converters
    from converters.errors import ConversionError

    try:  # the full check of converters, in a child process first
        converters.TFLiteModel(content)
    except ConversionError as e:
        raise PrecisionError(f"the quantized model does not run in LiteRT: {e}",
                             kind="quantized_model_fails") from e
    ev = _Evaluator(fm, x, y, output=output, confidence=confidence)
    s = ev(content)
    if s is None:
        raise PrecisionError("the quantized model does not run on LiteRT's default CPU path.",
                             kind="quantized_model_fails")
    return Verification(
        data=data,
        samples=ev.n,
        float_accuracy=ev.float_score.accuracy,
        accuracy=s.accuracy,
        accuracy_drop_pt=ev.drop_pt(s),
        agreement=s.agreement,
        snr_db=s.snr_db,
        losses=s.losses,
        gains=s.gains,
        drop_bound_pt=ev.bound_pt(s),
        confidence=confidence,
        output=fm.output_names[output],
    )
