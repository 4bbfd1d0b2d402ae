"""A mixed-precision search under an accuracy budget, on top of `tflight.precision`.

The smallest (or, by a device profile's latency estimate, fastest) per-layer
mix of float, fp16, int16x8, int8 and int4 weights whose accuracy drop on the
user's validation data stays within a budget. Every candidate is built by
litert-quantizer and run in LiteRT; the result is verified on samples the
search never saw.

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
from tflight.precision import (
    OTHER_OPS,
    Precision,
    QuantizedModel,
    SensitivityReport,
    Verification,
    _Builder,
    _check_disjoint,
    _describe,
    _Evaluator,
    _FloatModel,
    _labels,
    _latency_ms,
    _precisions,
    _sensitivity,
    _split,
    _verify,
)

__all__ = ["Objective", "SearchStep", "SearchResult", "search"]


class Objective(enum.StrEnum):
    """What `search` minimises: raw file size, or a device profile's latency estimate."""

    SIZE = "size"
    LATENCY = "latency"


@dataclasses.dataclass(frozen=True)
class SearchStep:
    """One configuration the search evaluated."""

    assignment: Mapping[str, Precision]
    accuracy_drop_pt: float
    cost: float
    accepted: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "assignment": {k: v.value for k, v in self.assignment.items()},
            "accuracy_drop_pt": self.accuracy_drop_pt,
            "cost": self.cost,
            "accepted": self.accepted,
        }


@dataclasses.dataclass(frozen=True)
class SearchResult:
    """The model a mixed-precision search chose, verified on held-out data.

    Attributes:
      model: the chosen `QuantizedModel` (its `verification` is on held-out samples).
      objective: what was minimised.
      profile: the device profile of the latency estimate.
      estimated_latency_ms: the profile's estimate for the chosen model (an estimate,
        not a measurement).
      float_estimated_latency_ms: the same estimate for the float model.
      max_drop_pt: the budget.
      search_drop_pt: the drop on the search samples.
      search_samples: how many samples the search evaluated on.
      evaluations: models built and run during the search.
      seconds: wall time of sensitivity + search + verification.
      sensitivity: the per-layer sensitivity the search started from.
      steps: every configuration evaluated.
      source: what the float model came from.
      calibration: how calibration samples were chosen.
      met_budget: whether the search samples met the budget.
    """

    model: QuantizedModel
    objective: Objective
    profile: str
    estimated_latency_ms: float
    float_estimated_latency_ms: float
    max_drop_pt: float
    search_drop_pt: float
    search_samples: int
    evaluations: int
    seconds: float
    sensitivity: SensitivityReport
    steps: tuple[SearchStep, ...]
    source: str
    calibration: str
    met_budget: bool = True

    @property
    def assignment(self) -> Mapping[str, Precision]:
        return self.model.assignment

    @property
    def verification(self) -> Verification:
        assert self.model.verification is not None
        return self.model.verification

    def save(self, path: str | os.PathLike[str]) -> None:
        """Writes the chosen `.tflite` atomically."""
        self.model.save(path)

    def to_dict(self) -> dict[str, Any]:
        return {
            "objective": self.objective.value,
            "max_drop_pt": self.max_drop_pt,
            "met_budget": self.met_budget,
            "search_drop_pt": self.search_drop_pt,
            "search_samples": self.search_samples,
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
        print_fn(f"Mixed-precision search ({self.objective.value}) of {self.source}: budget "
                 f"{self.max_drop_pt:g} pt {status}; {self.evaluations} models evaluated in "
                 f"{self.seconds:.1f} s")
        print_fn(f"{'layer':<28} precision")
        for name, p in m.assignment.items():
            print_fn(f"{name[:28]:<28} {p.value}")
        print_fn(f"size {m.size:,} B ({m.size_ratio:.2f}x smaller than float {m.float_size:,} B), "
                 f"gzip {m.gzip_size:,} B")
        print_fn(f"latency on {self.profile}: {self.estimated_latency_ms:.4f} ms vs float "
                 f"{self.float_estimated_latency_ms:.4f} ms (estimated, not measured)")
        print_fn(f"search: drop {self.search_drop_pt:+.2f} pt on {self.search_samples} samples")
        print_fn(f"verified: {self.verification.short()}")


def search(
    model: Any,
    x: Any,
    y: Any = None,
    *,
    max_drop: float = 0.5,
    calibration_data: Any = None,
    test_data: tuple[Any, Any] | Any = None,
    objective: Objective | str = "size",
    profile: str = "pixel4",
    choices: Sequence[Precision | str] | None = None,
    seed: int = 0,
) -> SearchResult:
    """Finds the smallest (or fastest) per-layer precision mix within an accuracy budget.

    First every layer's sensitivity is measured (`sensitivity`, at every
    choice). The search then starts with each layer at its cheapest choice and,
    while the accuracy drop on the search samples exceeds `max_drop`, moves the
    layer whose measured error falls most per unit of cost to a more precise
    choice (cost: bytes, or the profile's latency estimate); once within
    budget, it tries each layer one more time at cheaper choices and keeps
    what stays within budget. Every configuration is built by litert-quantizer
    and run in LiteRT. The result is verified on held-out samples.

    Args:
      model: as for `sensitivity` (a QAT Keras model contributes its trained
        float weights; its activation ranges come from calibration).
      x: validation inputs. Without `test_data`, half of them (after the
        calibration hold-out) are kept for verification.
      y: labels for `x` (recommended: without them the drop is the top-1
        disagreement with the float model).
      max_drop: the budget, in accuracy points.
      calibration_data: as for `sensitivity`.
      test_data: separate `(x, y)` (or `x`) to verify the result on.
      objective: `"size"` (raw bytes) or `"latency"` (the profile's estimate).
      profile: the device profile for latency estimates (`tflight.profiles.PROFILES`).
      choices: the precisions a layer may take (default: all of `Precision`).
      seed: shuffles `x` before splitting.

    Returns:
      A `SearchResult`.

    Raises:
      PrecisionBudgetError: no configuration met the budget; `best` holds the
        `SearchResult` of the configuration with the smallest drop found.
      PrecisionError: bad model or data (see `sensitivity`).

    Example:
      >>> result = search("model_fp32.tflite", x_val, y_val, max_drop=0.5,
      ...                 calibration_data=x_train[:300])
      >>> result.summary(); result.save("model_mixed.tflite")
    """
    start = time.perf_counter()
    if not isinstance(max_drop, (int, float)) or not math.isfinite(max_drop) or max_drop < 0:
        raise PrecisionError(f"`max_drop` must be a number of points >= 0, got {max_drop!r}.")
    try:
        objective = Objective(objective)
    except ValueError:
        raise PrecisionError(
            f"`objective` must be one of {[o.value for o in Objective]}, got {objective!r}."
        ) from None
    from tflight.errors import BenchmarkError
    from tflight.profiles import get_profile

    try:
        get_profile(profile)
    except BenchmarkError as e:
        raise PrecisionError(str(e)) from e
    ps = _precisions(choices if choices is not None else list(Precision), "choices")
    fm = _FloatModel(model, sample=None)
    if test_data is None:
        calibration, [(xs, ys), (xt, yt)], how = _split(
            fm, x, y, calibration_data, parts=2, seed=seed)
        test_name = "held-out validation samples (not used by the search or calibration)"
    else:
        calibration, [(xs, ys)], how = _split(fm, x, y, calibration_data, parts=1, seed=seed)
        tx, ty = test_data if isinstance(test_data, tuple) else (test_data, None)
        xt = fm.check(tx, "`test_data`")
        yt = _labels(ty, len(xt), "`test_data` labels")
        _check_disjoint(calibration, xt, "`test_data`")
        test_name = "the test data"
    builder = _Builder(fm, calibration)
    ev = _Evaluator(fm, xs, ys)
    report = _sensitivity(fm, builder, ev, ps, ps[-1], f"the search samples ({how})")

    def cost(content: bytes) -> float:
        return float(len(content)) if objective is Objective.SIZE else _latency_ms(content, profile)

    groups = [layer.name for layer in fm.layers] + ([OTHER_OPS] if fm.n_other_ops else [])
    options: dict[str, dict[Precision, tuple[float, float]]] = {}
    for g in groups:
        opts = {}
        for e in report.entries:
            if e.layer == g and e.supported:
                content = (builder.build({}, e.precision) if g == OTHER_OPS
                           else builder.build({g: e.precision}, Precision.FLOAT))
                noise = 0.0 if math.isinf(e.snr_db) else 10 ** (-e.snr_db / 10)
                opts[e.precision] = (noise, cost(content))
        if not opts:
            opts[Precision.FLOAT] = (0.0, cost(fm.content))
        options[g] = opts

    steps: list[SearchStep] = []

    def evaluate(assign: dict[str, Precision]) -> tuple[float, float, bytes]:
        layers = {g: p for g, p in assign.items() if g != OTHER_OPS}
        try:
            content = builder.build(layers, assign.get(OTHER_OPS, Precision.FLOAT))
        except PrecisionError:
            content = b""
        drop = ev.drop_pt(ev(content)) if content else math.inf
        c = cost(content) if content else math.inf
        steps.append(SearchStep(dict(assign), drop, c, drop <= max_drop + 1e-9))
        return drop, c, content

    assign = {g: min(o, key=lambda p, o=o: (o[p][1], o[p][0])) for g, o in options.items()}
    drop, c, content = evaluate(assign)
    best = (drop, c, dict(assign), content)
    while drop > max_drop + 1e-9:
        moves = []
        for g, opts in options.items():
            noise0, cost0 = opts[assign[g]]
            for p, (noise, cst) in opts.items():
                if noise < noise0:
                    gain = noise0 - noise
                    extra = cst - cost0
                    score = math.inf if extra <= 0 else gain / extra
                    moves.append((score, gain, g, p))
        if not moves:
            break
        _, _, g, p = max(moves)
        assign[g] = p
        drop, c, content = evaluate(assign)
        if (drop, c) < (best[0], best[1]):
            best = (drop, c, dict(assign), content)
    met = drop <= max_drop + 1e-9
    if met:
        # One pass back down: the greedy climb may have overshot.
        for g in sorted(options, key=lambda g: -options[g][assign[g]][1]):
            for p in sorted(options[g], key=lambda p, g=g: options[g][p][1]):
                if options[g][p][1] >= options[g][assign[g]][1] or p is assign[g]:
                    continue
                trial = dict(assign)
                trial[g] = p
                d2, c2, content2 = evaluate(trial)
                if d2 <= max_drop + 1e-9 and c2 < c:
                    assign, drop, c, content = trial, d2, c2, content2
                    break
    else:
        drop, c, assign, content = best
    full = dict(assign)
    verification = _verify(fm, content, xt, yt, test_name)
    chosen = QuantizedModel(content, full, len(fm.content), verification)
    result = SearchResult(
        model=chosen,
        objective=objective,
        profile=profile,
        estimated_latency_ms=_latency_ms(content, profile),
        float_estimated_latency_ms=_latency_ms(fm.content, profile),
        max_drop_pt=float(max_drop),
        search_drop_pt=drop,
        search_samples=len(xs),
        evaluations=len(steps) + len(report.entries),
        seconds=time.perf_counter() - start,
        sensitivity=report,
        steps=tuple(steps),
        source=fm.source,
        calibration=how,
        met_budget=met,
    )
    if not met:
        raise PrecisionBudgetError(
            f"No configuration of {fm.source} among {[p.value for p in ps]} stays within "
            f"{max_drop:g} accuracy points: the best found loses {drop:.2f} pt on "
            f"{len(xs)} search samples ({_describe({k: v for k, v in assign.items() if k != OTHER_OPS}, assign.get(OTHER_OPS, Precision.FLOAT))}). "
            "Raise --max-drop, allow more precise choices (float, fp16), or start from a "
            "QAT model.",
            best=result,
        )
    return result
