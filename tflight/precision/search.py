"""A mixed-precision search under an accuracy budget, on top of `tflight.precision`.

The smallest (or, by a device profile's latency estimate, fastest) per-layer
mix of float, fp16, int16x8, int8 and int4 weights whose accuracy drop stays
within a budget **on new data**, not only on the samples measured: a candidate
is accepted only if a one-sided upper confidence bound on its drop (exact
binomial bound on the paired losses, see
`tflight.precision.stats.drop_bound_pt`) is within the budget. A budget the search samples cannot resolve (too few of
them for the bound to reach it even with no loss) is refused with the number
of samples needed. Every candidate is built by litert-quantizer and run in
LiteRT; the result is re-checked on samples the search never saw.

References:
  Wang et al., "HAQ: Hardware-Aware Automated Quantization with Mixed
  Precision", CVPR 2019 (a hardware cost model in the search).
  Dong et al., "HAWQ: Hessian AWare Quantization of Neural Networks with
  Mixed-Precision", ICCV 2019 (sensitivity-ordered bit allocation).
"""

from __future__ import annotations

import dataclasses
import enum
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from tflight.errors import PrecisionBudgetError, PrecisionError
from tflight.precision.choices import OTHER_OPS, Precision, _describe, _precisions
from tflight.precision.data import _check_disjoint, _labels, _n, _n_calibration, _pair, _split
from tflight.precision.layer_sensitivity import PrecisionSensitivity, _noise, _sensitivity
from tflight.precision.model import _FloatModel
from tflight.precision.recipes import QuantizedModel, _Builder
from tflight.precision.scoring import Verification, _Evaluator, _latency_ms, _verify
from tflight.precision.stats import DEFAULT_CONFIDENCE, samples_needed

__all__ = ["Objective", "Guide", "SearchStep", "SearchResult", "search"]


class Objective(enum.StrEnum):
    """What `search` minimises: raw file size, or a device profile's latency estimate."""

    SIZE = "size"
    LATENCY = "latency"


class Guide(enum.StrEnum):
    """Which sensitivity view orders the search's moves.

    - `alone`: a layer's error when it is quantized and every other layer is float.
    - `kept-float`: the error removed by keeping the layer float while every
      other layer is quantized (the "alone" error at each precision is scaled
      to match it), which sees interactions between layers.
    """

    ALONE = "alone"
    KEPT_FLOAT = "kept-float"


@dataclasses.dataclass(frozen=True)
class SearchStep:
    """One configuration the search evaluated (drops on the search samples)."""

    assignment: Mapping[str, Precision]
    accuracy_drop_pt: float
    drop_bound_pt: float
    cost: float
    accepted: bool
    snr_db: float = math.nan
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "error": self.error,
            "assignment": {k: v.value for k, v in self.assignment.items()},
            "accuracy_drop_pt": self.accuracy_drop_pt,
            "drop_bound_pt": self.drop_bound_pt,
            "snr_db": self.snr_db if math.isfinite(self.snr_db) else None,
            "cost": self.cost,
            "accepted": self.accepted,
        }


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The model a mixed-precision search chose, with how sure its budget claim is.

    Attributes:
      model: the chosen `QuantizedModel` (its `verification` is the re-check on
        held-out samples).
      objective: what was minimised.
      profile: the device profile of the latency estimate.
      estimated_latency_ms: the profile's estimate for the chosen model (an estimate,
        not a measurement).
      float_estimated_latency_ms: the same estimate for the float model.
      max_drop_pt: the budget.
      confidence: the confidence level of the claim.
      search_drop_pt: the drop measured on the search samples (point estimate).
      search_drop_bound_pt: the one-sided upper bound on the drop on new data
        at `confidence`, from the search samples; the budget is met if it is
        within `max_drop_pt`.
      search_losses: search samples the float model gets right and the chosen
        one wrong (without labels: whose top-1 changed).
      search_gains: search samples the float model gets wrong and the chosen one right.
      search_samples: how many samples the search evaluated on.
      samples_needed: the fewest search samples that can resolve the budget at
        `confidence` (with no loss at all).
      guide: the sensitivity view that ordered the search.
      evaluations: models built and run during the search.
      seconds: wall time of sensitivity + search + verification.
      sensitivity: the per-layer sensitivity the search started from.
      steps: every configuration evaluated.
      source: what the float model came from.
      calibration: how calibration samples were chosen.
      met_budget: whether `search_drop_bound_pt <= max_drop_pt`.
      output: the model output measured.
      guide_fit: how well each sensitivity view predicted the output error of
        the configurations the search evaluated: Spearman rank correlation
        between the view's additive noise estimate and the measured output
        noise (higher is better; NaN with fewer than 3 configurations).
    """

    model: QuantizedModel
    objective: Objective
    profile: str
    estimated_latency_ms: float
    float_estimated_latency_ms: float
    max_drop_pt: float
    confidence: float
    search_drop_pt: float
    search_drop_bound_pt: float
    search_losses: int
    search_gains: int
    search_samples: int
    samples_needed: int
    guide: Guide
    evaluations: int
    seconds: float
    sensitivity: PrecisionSensitivity
    steps: tuple[SearchStep, ...]
    source: str
    calibration: str
    met_budget: bool = True
    output: str = ""
    guide_fit: Mapping[str, float] = dataclasses.field(default_factory=dict)

    @property
    def assignment(self) -> Mapping[str, Precision]:
        return self.model.assignment

    @property
    def verification(self) -> Verification:
        assert self.model.verification is not None
        return self.model.verification

    @property
    def recheck_met_budget(self) -> bool:
        """Whether the held-out re-check's own bound is within the budget too.

        The search's bound is from the samples it chose on; the re-check's
        is from samples it never saw. A re-check without a bound (NaN) is not
        counted as a miss.
        """
        return not self.verification.drop_bound_pt > self.max_drop_pt + 1e-9

    @property
    def claim(self) -> str:
        """The budget claim in one sentence: what is bounded, how sure, on how many samples."""
        what = ("accuracy drop" if self.sensitivity.float_accuracy is not None
                else "top-1 disagreement with the float model")
        return (f"{what} on new data <= {self.search_drop_bound_pt:.2f} pt with "
                f"{self.confidence:.0%} confidence (one-sided exact binomial bound from "
                f"{self.search_losses} lost of {self.search_samples} search samples; measured "
                f"drop {self.search_drop_pt:+.2f} pt)")

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the chosen `.tflite` atomically."""
        self.model.save(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.value,
            "max_drop_pt": self.max_drop_pt,
            "confidence": self.confidence,
            "met_budget": self.met_budget,
            "claim": self.claim,
            "search_drop_pt": self.search_drop_pt,
            "search_drop_bound_pt": self.search_drop_bound_pt,
            "search_losses": self.search_losses,
            "search_gains": self.search_gains,
            "search_samples": self.search_samples,
            "samples_needed": self.samples_needed,
            "guide": self.guide.value,
            "guide_fit": {k: (v if math.isfinite(v) else None) for k, v in self.guide_fit.items()},
            "output": self.output,
            "model": self.model.to_dict(),
            "estimated_latency_ms": {
                "profile": self.profile,
                "searched": self.estimated_latency_ms,
                "float": self.float_estimated_latency_ms,
                "estimated": True,
            },
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "source": self.source,
            "calibration": self.calibration,
            "sensitivity": self.sensitivity.to_dict(),
            "steps": [s.to_dict() for s in self.steps],
        }

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        m = self.model
        status = "met" if self.met_budget else "NOT met (best configuration found)"
        if self.met_budget and not self.recheck_met_budget:
            status = "met on the search samples but NOT by the held-out re-check"
        print_fn(f"Mixed-precision search ({self.objective.value}, guided by the "
                 f"'{self.guide.value}' sensitivity) of {self.source}: budget "
                 f"{self.max_drop_pt:g} pt {status}; {self.evaluations} models evaluated in "
                 f"{self.seconds:.1f} s")
        print_fn(f"claim: {self.claim}")
        if self.guide_fit:
            fit = ", ".join(f"{k} {v:+.2f}" if math.isfinite(v) else f"{k} n/a (too few)"
                            for k, v in self.guide_fit.items())
            print_fn(f"sensitivity views vs measured error of the {len(self.steps)} configurations "
                     f"searched (Spearman): {fit}")
        print_fn(f"{'layer':<28} precision")
        for name, p in m.assignment.items():
            print_fn(f"{name[:28]:<28} {p.value}")
        print_fn(f"size {m.size:,} B ({m.size_ratio:.2f}x smaller than float {m.float_size:,} B), "
                 f"gzip {m.gzip_size:,} B")
        print_fn(f"latency on {self.profile}: {self.estimated_latency_ms:.4f} ms vs float "
                 f"{self.float_estimated_latency_ms:.4f} ms (estimated, not measured)")
        print_fn(f"verified: {self.verification.short()}")
        v = self.verification
        if not self.recheck_met_budget:
            print_fn(f"WARNING: the re-check's bound on new data ({v.drop_bound_pt:.2f} pt, "
                     f"{v.losses} lost of {v.samples} held-out samples) exceeds the budget "
                     f"{self.max_drop_pt:g} pt that the search's bound "
                     f"({self.search_drop_bound_pt:.2f} pt) met; more validation data or a "
                     "looser budget is needed to claim it")


def _view_noise(report: PrecisionSensitivity, guide: Guide) -> dict[str, dict[Precision, float]]:
    """Estimated output noise per layer and precision under one sensitivity view.

    "alone": the relative noise power 10^(-SNR/10) measured with the layer
    quantized alone. "kept-float": the same curve, scaled per layer so that at
    the reference precision it equals the noise removed by keeping the layer
    float in the otherwise quantized model.
    """
    base = _noise(report.quantized_snr_db)
    out: dict[str, dict[Precision, float]] = {}
    for e in report.entries:
        if e.supported:
            out.setdefault(e.layer, {})[e.precision] = _noise(e.snr_db)
    if guide is Guide.KEPT_FLOAT and math.isfinite(base):
        for e in report.entries:
            if not e.supported or math.isnan(e.kept_float_snr_db):
                continue
            gained = max(base - _noise(e.kept_float_snr_db), 0.0)
            alone = _noise(e.snr_db)
            scale = gained / alone if alone > 0 else 1.0
            out[e.layer] = {p: v * scale for p, v in out[e.layer].items()}
    return out


def _fit(view: Mapping[str, Mapping[Precision, float]], steps: Sequence[SearchStep]) -> float:
    """Spearman correlation of a view's additive noise estimate with the measured noise."""
    from scipy.stats import spearmanr

    pred, meas = [], []
    for st in steps:
        if math.isnan(st.snr_db):
            continue
        est = sum(view.get(g, {}).get(p, 0.0) for g, p in st.assignment.items())
        pred.append(est)
        meas.append(_noise(st.snr_db))
    if len(pred) < 3 or len(set(pred)) < 2 or len(set(meas)) < 2:
        return math.nan
    return float(spearmanr(pred, meas).statistic)


def _search_sizes(n: int, *, separate_calibration: bool, separate_test: bool) -> int:
    """Search samples `search` keeps from `n` validation samples."""
    rest = n if separate_calibration else n - _n_calibration(n)
    return rest if separate_test else rest // 2


def _validation_needed(need: int, *, separate_calibration: bool, separate_test: bool) -> int:
    n = need
    while _search_sizes(n, separate_calibration=separate_calibration,
                        separate_test=separate_test) < need:
        n += 1
    return n


def _class_ids(fm: Any, out: int, y: Any, what: str) -> Any:
    """Labels as class ids checked against the width of the model's output `out`.

    Out-of-range ids, negative ids and one-hot rows of the wrong width are
    refused (`tflight._io.class_ids`); None stays None.
    """
    if y is None:
        return None
    import numpy as np

    from tflight._io import class_ids

    shape = tuple(int(d) for d in fm.runtime.output_details[out]["shape"])
    classes = shape[1] if len(shape) == 2 and shape[1] > 1 else None
    y = np.asarray(y)
    n = len(y) if y.ndim >= 1 else 0
    return class_ids(y, n, classes=classes, what=what, error=PrecisionError)


def search(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    max_drop: float = 0.5,
    confidence: float = DEFAULT_CONFIDENCE,
    calibration_data: Any = None,
    test_data: tuple[Any, Any] | Any = None,
    objective: Objective | str = "size",
    profile: str = "pixel4",
    choices: Sequence[Precision | str] | None = None,
    guide: Guide | str = "alone",
    output: int | str | None = None,
    seed: int = 0,
) -> SearchResult:
    """Finds the smallest (or fastest) per-layer precision mix within an accuracy budget.

    First every layer's sensitivity is measured both ways (`precision_sensitivity`: the
    layer quantized alone at every choice, and the layer kept float in an
    otherwise quantized model). The search then starts with each layer at its
    cheapest choice and, while the bound on the drop exceeds `max_drop`, moves
    the layer whose estimated error (`guide`) falls most per unit of cost to a
    more precise choice (cost: bytes, or the profile's latency estimate); once
    within budget, it tries each layer once more at cheaper choices and keeps
    what stays within budget. Every configuration is built by
    litert-quantizer and run in LiteRT.

    The budget is a claim about new data: a configuration is accepted only if
    the one-sided upper bound on its drop at `confidence`
    (`tflight.precision.stats.drop_bound_pt`, from the paired losses on the
    search samples) is within `max_drop`. With n search samples that bound is never
    below 1 - (1 - confidence)^(1/n), so a budget below it is refused up front
    with the number of validation samples needed. The chosen model is then
    re-checked on held-out samples (`result.verification`).

    Args:
      model: as for `precision_sensitivity` (a QAT Keras model contributes its trained
        float weights; its activation ranges come from calibration).
      x: validation inputs (a list or dict of arrays for multi-input models).
        Without `test_data`, half of them (after the calibration hold-out)
        are kept for the re-check.
      y: labels for `x` (recommended: without them the drop is the top-1
        disagreement with the float model).
      max_drop: the budget, in accuracy points.
      confidence: confidence level of the bound (0.5 to 0.999).
      calibration_data: as for `precision_sensitivity`.
      test_data: separate `(x, y)` (or `x`) for the re-check.
      objective: `"size"` (raw bytes) or `"latency"` (the profile's estimate).
      profile: the device profile for latency estimates (`tflight.devices.profiles.PROFILES`).
      choices: the precisions a layer may take (default: all of `Precision`).
      guide: the sensitivity view ordering the moves (`Guide`). "alone" by
        default: on the benchmark's CNN and transformer its additive estimate
        ranked the measured error of the searched configurations at least as
        well as "kept-float" (Spearman 0.97 vs 0.97 and 1.00 vs 0.92;
        `SearchResult.guide_fit` reports it for every search).
      output: the output (name or index) the metrics use; None: the first.
      seed: shuffles `x` before splitting.

    Returns:
      A `SearchResult`.

    Raises:
      PrecisionBudgetError: no configuration met the budget; `best` holds the
        `SearchResult` of the configuration with the smallest bound found.
      PrecisionError: bad model or data (see `precision_sensitivity`), or too few
        samples to resolve the budget at this confidence.

    Example:
      >>> result = search("model_fp32.tflite", x_val, y_val, max_drop=0.5,
      ...                 calibration_data=x_train[:300])
      >>> result.summary(); result.save("model_mixed.tflite")
    """
    start = time.perf_counter()
    if (not isinstance(max_drop, (int, float)) or isinstance(max_drop, bool)
            or not math.isfinite(max_drop) or max_drop < 0):
        raise PrecisionError(f"`max_drop` must be a number of points >= 0, got {max_drop!r}.",
                             option="max_drop", kind="bad_value")
    if (not isinstance(confidence, (int, float)) or isinstance(confidence, bool)
            or not 0.5 <= confidence <= 0.999):
        raise PrecisionError(f"`confidence` must be between 0.5 and 0.999, got {confidence!r}.",
                             option="confidence", kind="bad_value")
    try:
        objective = Objective(objective)
    except ValueError:
        raise PrecisionError(
            f"`objective` must be one of {[o.value for o in Objective]}, got {objective!r}.",
            option="objective", kind="bad_value",
        ) from None
    try:
        guide = Guide(guide)
    except ValueError:
        raise PrecisionError(
            f"`guide` must be one of {[g.value for g in Guide]}, got {guide!r}.",
            option="guide", kind="bad_value",
        ) from None
    from tflight.devices.profiles import get_profile
    from tflight.errors import BenchmarkError

    try:
        get_profile(profile)
    except BenchmarkError as e:
        raise PrecisionError(str(e), option="profile", fix=e.fix,
                             kind=e.kind or "unknown_profile") from e
    ps = _precisions(choices if choices is not None else list(Precision), "choices")
    fm = _FloatModel(model, sample=None)
    out = fm.output_index(output)
    y = _class_ids(fm, out, y, "the labels `y`")
    if test_data is None:
        calibration, [(xs, ys), (xt, yt)], how = _split(
            fm, x, y, calibration_data, parts=2, seed=seed)
        test_name = "held-out validation samples (not used by the search or calibration)"
    else:
        calibration, [(xs, ys)], how = _split(fm, x, y, calibration_data, parts=1, seed=seed)
        tx, ty = _pair(test_data)
        xt = fm.check(tx, "`test_data`", "test_data")
        yt = _labels(_class_ids(fm, out, ty, "`test_data` labels"), _n(xt), "`test_data` labels",
                     "test_data")
        _check_disjoint(calibration, xt, "`test_data`")
        test_name = "the test data"
    need = samples_needed(float(max_drop), float(confidence))
    if need is None or _n(xs) < need:
        sep = {"separate_calibration": calibration_data is not None,
               "separate_test": test_data is not None}
        if need is None:
            more = ("a budget of 0 points cannot be bounded from samples; allow a drop > 0")
        else:
            total = _validation_needed(need, **sep)
            more = (f"more validation samples needed: the bound reaches {max_drop:g} pt at "
                    f"{confidence:.0%} confidence only from {need} search samples (with none "
                    f"lost), i.e. about {total} validation samples as passed")
        parts = [] if sep["separate_calibration"] else ["a calibration hold-out"]
        if not sep["separate_test"]:
            parts.append("half kept for the re-check")
        kept = f" after {' and '.join(parts)}" if parts else ""
        reason = (f"The search has {_n(xs)} samples{kept}: too few to claim a {max_drop:g} pt "
                  f"budget on new data; {more}.")
        fix = "Or raise max_drop, lower confidence, pass test_data / calibration_data separately."
        raise PrecisionError(f"{reason} {fix}", option="max_drop", fix=fix,
                             kind="budget_unresolvable", reason=reason, samples=_n(xs),
                             samples_needed=need)
    builder = _Builder(fm, calibration)
    ev = _Evaluator(fm, xs, ys, output=out, confidence=float(confidence))
    report = _sensitivity(fm, builder, ev, ps, ps[-1], f"the search samples ({how})")

    def cost(content: bytes) -> float:
        return float(len(content)) if objective is Objective.SIZE else _latency_ms(content, profile)

    groups = [layer.name for layer in fm.layers] + ([OTHER_OPS] if fm.n_other_ops else [])
    views = {g: _view_noise(report, g) for g in (Guide.ALONE, Guide.KEPT_FLOAT)}
    options: dict[str, dict[Precision, tuple[float, float]]] = {}
    for g in groups:
        opts = {}
        for p, noise in views[guide].get(g, {}).items():
            content = (builder.build({}, p) if g == OTHER_OPS
                       else builder.build({g: p}, Precision.FLOAT))
            opts[p] = (noise, cost(content))
        if not opts:
            opts[Precision.FLOAT] = (0.0, cost(fm.content))
        options[g] = opts

    steps: list[SearchStep] = []

    def evaluate(assign: dict[str, Precision]) -> tuple[float, float, float, bytes, Any]:
        layers = {g: p for g, p in assign.items() if g != OTHER_OPS}
        error = None
        try:
            content = builder.build(layers, assign.get(OTHER_OPS, Precision.FLOAT))
        except PrecisionError as e:
            content = b""
            error = (str(e) if e.kind == "quantizer_failed"
                     else f"litert-quantizer refused it: {e}")
        s = ev(content) if content else None
        if content and s is None:
            error = getattr(ev, "last_error", None)
        bound, drop = ev.bound_pt(s), ev.drop_pt(s)
        c = cost(content) if content else math.inf
        steps.append(SearchStep(dict(assign), drop, bound, c, bound <= max_drop + 1e-9,
                                math.nan if s is None else s.snr_db, error))
        return bound, drop, c, content, s

    assign = {g: min(o, key=lambda p, o=o: (o[p][1], o[p][0])) for g, o in options.items()}
    bound, drop, c, content, s = evaluate(assign)
    best = (bound, c, drop, dict(assign), content, s)
    while bound > max_drop + 1e-9:
        moves = []
        for g, opts in options.items():
            noise0, cost0 = opts[assign[g]]
            for p, (noise, cst) in opts.items():
                if noise < noise0:
                    gain = noise0 - noise
                    extra = cst - cost0
                    score = math.inf if extra <= 0 else gain / extra
                    moves.append((score, gain, -cst, g, p))
        if not moves:
            break
        *_, g, p = max(moves)
        assign[g] = p
        bound, drop, c, content, s = evaluate(assign)
        if (bound, c) < (best[0], best[1]):
            best = (bound, c, drop, dict(assign), content, s)
    met = bound <= max_drop + 1e-9
    if met:
        # One pass back down: the greedy climb may have overshot.
        for g in sorted(options, key=lambda g: -options[g][assign[g]][1]):
            for p in sorted(options[g], key=lambda p, g=g: options[g][p][1]):
                if options[g][p][1] >= options[g][assign[g]][1] or p is assign[g]:
                    continue
                trial = dict(assign)
                trial[g] = p
                b2, d2, c2, content2, s2 = evaluate(trial)
                if b2 <= max_drop + 1e-9 and c2 < c:
                    assign, bound, drop, c, content, s = trial, b2, d2, c2, content2, s2
                    break
    else:
        bound, c, drop, assign, content, s = best
    verification = _verify(fm, content, xt, yt, test_name, output=out,
                           confidence=float(confidence))
    chosen = QuantizedModel(content, dict(assign), len(fm.content), verification)
    result = SearchResult(
        model=chosen,
        objective=objective,
        profile=profile,
        estimated_latency_ms=_latency_ms(content, profile),
        float_estimated_latency_ms=_latency_ms(fm.content, profile),
        max_drop_pt=float(max_drop),
        confidence=float(confidence),
        search_drop_pt=drop,
        search_drop_bound_pt=bound,
        search_losses=s.losses if s is not None else _n(xs),
        search_gains=s.gains if s is not None else 0,
        search_samples=_n(xs),
        samples_needed=need,
        guide=guide,
        evaluations=len(steps) + len(report.entries),
        seconds=time.perf_counter() - start,
        sensitivity=report,
        steps=tuple(steps),
        source=fm.source,
        calibration=how,
        met_budget=met,
        output=fm.output_names[out],
        guide_fit={v.value: _fit(views[v], steps) for v in views},
    )
    if not met:
        layers = {k: v for k, v in assign.items() if k != OTHER_OPS}
        reason = (
            f"No configuration of {fm.source} among {[p.value for p in ps]} stays within "
            f"{max_drop:g} accuracy points at {confidence:.0%} confidence: the best found loses "
            f"{drop:.2f} pt on {_n(xs)} search samples (bound on new data {bound:.2f} pt; "
            f"{_describe(layers, assign.get(OTHER_OPS, Precision.FLOAT))}).")
        fix = ("Raise max_drop, allow more precise `choices` (float, fp16), or start from a "
               "QAT model.")
        raise PrecisionBudgetError(f"{reason} {fix}", best=result, option="max_drop", fix=fix,
                                   reason=reason)
    return result
