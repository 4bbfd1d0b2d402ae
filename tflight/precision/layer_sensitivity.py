"""Per-layer sensitivity to quantization, measured in LiteRT: `precision_sensitivity`.

Two views of every layer (op with weights, plus the group of other ops), each
run in LiteRT on the user's data and compared with the float model's output
(SNR, cosine similarity, KL divergence and, with labels, the accuracy drop):
the layer quantized alone (every other layer float: what quantizing it costs),
and the layer kept float in an otherwise quantized model (what keeping it float
gains). The search (`tflight.precision.search`) orders its moves by them.

References:
  Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks with
  Mixed-Precision", ICCV 2019 (per-layer sensitivity drives bit allocation).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tflight.errors import PrecisionError
from tflight.precision.choices import (
    _OTHER_CHOICES,
    OTHER_OPS,
    Precision,
    _other_for,
    _precisions,
)
from tflight.precision.data import _split
from tflight.precision.model import _FloatModel, _not_as_requested
from tflight.precision.recipes import _Builder
from tflight.precision.scoring import _Evaluator, _Score

__all__ = ["LayerSensitivity", "PrecisionSensitivity", "precision_sensitivity"]


@dataclasses.dataclass(frozen=True)
class LayerSensitivity:
    """How far the model's output moves when only this layer is quantized.

    Attributes:
      layer: the layer's name (`OTHER_OPS` for the group of ops without weights).
      op: its TFLite op (`"-"` for the group).
      params: weight elements.
      precision: the precision measured.
      snr_db: output signal-to-noise ratio against the float model (higher is better).
      cosine: mean cosine similarity of the outputs.
      kl: mean KL divergence of the softmax of the outputs from the float model's.
      accuracy_drop_pt: accuracy drop in points with labels, else top-1
        disagreement with the float model in points.
      size: bytes of the model with only this layer quantized.
      supported: False if litert-quantizer left the layer unchanged at this precision.
      kept_float_snr_db: the other view, on the entry at the report's
        reference precision only (for `OTHER_OPS`: at the precision of the
        other ops that goes with it; NaN elsewhere): output SNR of the model
        with every layer at the reference precision except this one, kept float.
      kept_float_drop_pt: the accuracy drop (or disagreement) of that model.
    """

    layer: str
    op: str
    params: int
    precision: Precision
    snr_db: float
    cosine: float
    kl: float
    accuracy_drop_pt: float
    size: int
    supported: bool
    kept_float_snr_db: float = math.nan
    kept_float_drop_pt: float = math.nan
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precision"] = self.precision.value
        for k in ("snr_db", "cosine", "kl", "accuracy_drop_pt", "kept_float_snr_db",
                  "kept_float_drop_pt"):
            if not math.isfinite(d[k]):
                d[k] = None
        return d


@dataclasses.dataclass(frozen=True)
class PrecisionSensitivity:
    """Per-layer sensitivity of a float model, most sensitive layer first.

    Two views, both measured in LiteRT on `samples` samples of `data`:

    - "alone" (`snr_db`, `accuracy_drop_pt` of every entry): this layer
      quantized, every other layer float -- what quantizing it costs;
    - "kept float" (`kept_float_snr_db`, `kept_float_drop_pt` of the
      `reference` entries): every layer at `reference` precision except this
      one, kept float -- what keeping it float gains over `quantized_snr_db`,
      the model with every layer at `reference`.

    `ranking` orders by the "alone" SNR at `reference` (lowest first, ties by
    the drop); `ranking_kept_float` by the SNR gained by keeping the layer
    float (largest first).

    Attributes:
      entries: every (layer, precision) measured.
      ranking: layer names, most sensitive first.
      reference: the precision the ranking uses.
      float_accuracy: the float model's accuracy on the data (None without labels).
      samples: number of samples measured on.
      data: a description of those samples.
      seconds: wall time.
      ranking_kept_float: layer names by SNR gained when kept float, largest first.
      quantized_snr_db: output SNR with every layer at `reference` (the base
        of the "kept float" view).
      quantized_drop_pt: the accuracy drop (or disagreement) of that model.
      output: the model output the metrics use.
    """

    entries: tuple[LayerSensitivity, ...]
    ranking: tuple[str, ...]
    reference: Precision
    float_accuracy: float | None
    samples: int
    data: str
    seconds: float
    method: str = "one layer quantized at a time, all others float (measured in LiteRT)"
    ranking_kept_float: tuple[str, ...] = ()
    quantized_snr_db: float = math.nan
    quantized_drop_pt: float = math.nan
    output: str = ""
    kept_float_method: str = (
        "one layer kept float, all others at the reference precision (measured in LiteRT)")

    def get(self, layer: str, precision: Precision | str) -> LayerSensitivity:
        p = Precision(precision)
        for e in self.entries:
            if e.layer == layer and e.precision is p:
                return e
        raise KeyError((layer, p.value))

    def to_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "kept_float_method": self.kept_float_method,
            "reference": self.reference.value,
            "output": self.output,
            "ranking": list(self.ranking),
            "ranking_kept_float": list(self.ranking_kept_float),
            "quantized_snr_db": _finite(self.quantized_snr_db),
            "quantized_drop_pt": _finite(self.quantized_drop_pt),
            "float_accuracy": self.float_accuracy,
            "samples": self.samples,
            "data": self.data,
            "seconds": self.seconds,
            "entries": [e.to_dict() for e in self.entries],
        }

    def table(self) -> list[str]:
        precisions = list(dict.fromkeys(e.precision for e in self.entries))
        head = f"{'rank':>4}  {'layer':<28} {'op':<18} {'params':>8}"
        for p in precisions:
            head += f"  {p.value + ' alone':>20}"
        head += f"  {'kept float':>20}"
        lines = [head, "-" * len(head)]
        for i, name in enumerate(self.ranking, 1):
            first = next(e for e in self.entries if e.layer == name)
            row = f"{i:>4}  {name[:28]:<28} {first.op[:18]:<18} {first.params:>8,}"
            for p in precisions:
                try:
                    e = self.get(name, p)
                except KeyError:
                    row += f"  {'-':>20}"
                    continue
                if not e.supported:
                    row += f"  {'n/a':>20}"
                else:
                    row += f"  {_cell(e.snr_db, e.accuracy_drop_pt):>20}"
            kept = "-"
            for e in self.entries:
                if e.layer == name and not math.isnan(e.kept_float_snr_db):
                    kept = _cell(e.kept_float_snr_db, e.kept_float_drop_pt)
            row += f"  {kept:>20}"
            lines.append(row)
        return lines

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        acc = "" if self.float_accuracy is None else f", float accuracy {self.float_accuracy:.2%}"
        out = f", output {self.output!r}" if self.output else ""
        print_fn(f"Sensitivity, {self.samples} samples of {self.data}{acc}{out}")
        print_fn(f"'<precision> alone': {self.method}; 'kept float': {self.kept_float_method} "
                 f"({self.reference.value}; all at {self.reference.value}: "
                 f"{_cell(self.quantized_snr_db, self.quantized_drop_pt)})")
        print_fn("cells: output SNR vs float / " + (
            "accuracy points lost" if self.float_accuracy is not None
            else "top-1 disagreement with the float model, in points"))
        for line in self.table():
            print_fn(line)


def _finite(v: float) -> float | None:
    return v if math.isfinite(v) else None


def _cell(snr_db: float, drop_pt: float) -> str:
    if math.isnan(snr_db):
        return "n/a"
    snr = "inf" if math.isinf(snr_db) else f"{snr_db:.1f}"
    drop = "n/a" if not math.isfinite(drop_pt) else format(drop_pt, "+.2f")
    return f"{snr} dB/{drop}pt"


def _sensitivity(
    fm: _FloatModel,
    builder: _Builder,
    ev: _Evaluator,
    precisions: Sequence[Precision],
    reference: Precision,
    data: str,
) -> PrecisionSensitivity:
    start = time.perf_counter()
    entries = []
    groups = [(layer.name, layer.op, layer.params) for layer in fm.layers]
    if fm.n_other_ops:
        groups.append((OTHER_OPS, "-", 0))
    for name, op, params in groups:
        for p in precisions:
            if name == OTHER_OPS and p not in _OTHER_CHOICES:
                continue
            try:
                content = (builder.build({}, p) if name == OTHER_OPS
                           else builder.build({name: p}, Precision.FLOAT))
            except PrecisionError as e:
                # litert-quantizer refuses this layer at this precision (e.g. a
                # dimension not divisible by the block size): not a choice for it.
                content = fm.content
                s = None
                error = (str(e) if e.kind == "quantizer_failed"
                         else f"litert-quantizer refused it: {e}")
            else:
                s = ev(content)
                error = getattr(ev, "last_error", None) if s is None else None
            if p is Precision.FLOAT:
                changed = True
            elif name == OTHER_OPS:
                changed = content != fm.content
            else:
                changed = content != fm.content and name not in _not_as_requested(
                    content, fm.layers, {name: p})
            nan = math.nan
            entries.append(
                LayerSensitivity(
                    layer=name,
                    op=op,
                    params=params,
                    precision=p,
                    snr_db=nan if s is None else s.snr_db,
                    cosine=nan if s is None else s.cosine,
                    kl=nan if s is None else s.kl,
                    accuracy_drop_pt=nan if s is None else ev.drop_pt(s),
                    size=len(content),
                    supported=s is not None and changed,
                    error=error,
                )
            )

    # The other view: every layer at `reference` (where it applies), one kept float.
    nan = math.nan
    base_snr = base_drop = nan
    gained: dict[str, float] = {}
    if reference is not Precision.FLOAT:
        quantized = {e.layer: reference for e in entries
                     if e.precision is reference and e.supported and e.layer != OTHER_OPS}
        other = _other_for(reference)

        def score(layers: Mapping[str, Precision], o: Precision) -> _Score | None:
            try:
                return ev(builder.build(layers, o))
            except PrecisionError:
                return None

        base = score(quantized, other)
        if base is not None:
            base_snr, base_drop = base.snr_db, ev.drop_pt(base)
        for i, e in enumerate(entries):
            # The ops without weights are measured at the precision that goes with `reference`.
            at = other if e.layer == OTHER_OPS else reference
            if e.precision is not at or not e.supported:
                continue
            if e.layer == OTHER_OPS:
                s = score(quantized, Precision.FLOAT)
            else:
                s = score({k: v for k, v in quantized.items() if k != e.layer}, other)
            if s is None:
                continue
            entries[i] = dataclasses.replace(
                e, kept_float_snr_db=s.snr_db, kept_float_drop_pt=ev.drop_pt(s))
            gained[e.layer] = _noise(base_snr) - _noise(s.snr_db)

    def key(name: str) -> tuple[float, float]:
        ref = [e for e in entries if e.layer == name and e.precision is reference and e.supported]
        if not ref:  # fall back to the worst measured precision of this layer
            ref = [e for e in entries if e.layer == name and e.supported]
        if not ref:
            return (math.inf, 0.0)
        worst = min(ref, key=lambda e: e.snr_db)
        return (worst.snr_db, -worst.accuracy_drop_pt)

    ranking = tuple(sorted(dict.fromkeys(e.layer for e in entries), key=key))
    kept = tuple(sorted(gained, key=lambda n: -gained[n]))
    return PrecisionSensitivity(
        entries=tuple(entries),
        ranking=ranking,
        reference=reference,
        float_accuracy=ev.float_score.accuracy,
        samples=ev.n,
        data=data,
        seconds=time.perf_counter() - start,
        ranking_kept_float=kept + tuple(n for n in ranking if n not in gained),
        quantized_snr_db=base_snr,
        quantized_drop_pt=base_drop,
        output=fm.output_names[ev.output],
    )


def _noise(snr_db: float) -> float:
    """Relative output noise power of an SNR in dB (0 for identical outputs)."""
    if math.isnan(snr_db):
        return math.nan
    return 0.0 if math.isinf(snr_db) else 10 ** (-snr_db / 10)


def precision_sensitivity(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    calibration_data: Any = None,
    precisions: Sequence[Precision | str] = ("int8", "int4"),
    reference: Precision | str | None = None,
    output: int | str | None = None,
    seed: int = 0,
) -> PrecisionSensitivity:
    """Measures each layer's sensitivity to quantization, most sensitive first.

    Two views of every layer (op with weights, plus the group of other ops),
    each run in LiteRT on `x` and compared with the float model's output (SNR,
    cosine, KL and, with labels, the accuracy drop): the layer quantized alone
    with the rest of the model float, at each of `precisions`; and the layer
    kept float with every other layer at `reference` precision.

    Multi-input models take `x` as a list of arrays in input order or a dict
    by input name (as `converters.TFLiteModel.predict`). For multi-output
    models every metric is measured on one output, `output` (the first by
    default), and `y` labels that output; the report names it.

    Args:
      model: a float `.tflite` path or bytes, a `.keras`/`.h5` path, or a Keras
        model (a QAT model contributes its trained float weights).
      x: validation inputs, shape `(n, ...)` like the model's input (a list or
        dict of arrays for multi-input models).
      y: optional integer or one-hot labels for `x`.
      calibration_data: inputs for the activation ranges of static precisions,
        like `x`; must not share samples with `x`. None: a quarter of `x`
        (≤ 500) is held out for it.
      precisions: the precisions to measure per layer.
      reference: the precision the ranking and the "kept float" view use
        (default: the lowest-bit one of `precisions`).
      output: the output (name or index) the metrics use; None: the first.
      seed: shuffles `x` before the hold-out.

    Returns:
      A `PrecisionSensitivity`.

    Raises:
      PrecisionError: the model cannot be read by litert-quantizer, or the
        data has the wrong shape or dtype, or overlaps the calibration data.

    Example:
      >>> report = precision_sensitivity("model_fp32.tflite", x_val, y_val,
      ...                                calibration_data=x_train[:200])
      >>> report.summary()
    """
    ps = _precisions(precisions, "precisions")
    ref = Precision(reference) if reference is not None else ps[-1]
    fm = _FloatModel(model, sample=None)
    out = fm.output_index(output)
    calibration, [(xv, yv)], how = _split(fm, x, y, calibration_data, parts=1, seed=seed)
    builder = _Builder(fm, calibration)
    ev = _Evaluator(fm, xv, yv, output=out)
    return _sensitivity(fm, builder, ev, ps, ref, f"the validation data ({how})")
