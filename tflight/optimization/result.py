"""What `optimize` returns: every candidate with its figures, the winner, the honest verdict.

Measuring lives in `measure`, rendering of the page in `html`; this module
holds the result objects, their JSON form and the short text summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from typing import Any

from tflight.optimization.measure import Paired

__all__ = ["CandidateResult", "OptimizeResult"]


@dataclasses.dataclass
class CandidateResult:
    """One candidate as the search left it.

    Attributes:
      spec: name, technique, kind, storage and settings (`Spec.to_dict`).
      status: "measured", "skipped" (not built, `reason` says why) or "failed".
      reason: why it was skipped or failed, or why it does not count.
      size: raw `.tflite` bytes.
      estimated_ms: the device profile's latency estimate (estimated, not measured).
      estimate_label: how the estimate was made.
      host_ms: median latency measured on this host's LiteRT CPU runtime.
      validation: accuracy against the baseline on the validation split.
      device: the device rule's verdict (`eligible`, `reason`, `partitions`, `issues`).
      meets: within `max_drop` (by the bound), every budget and the device rule.
      layers: per layer: precision, output channels before/after, kernel sparsity.
      kept_float: `(layer, why)` pairs left float or skipped by the technique.
      notes: other facts about how it was built.
      seconds: wall time spent building and measuring it.
      train_seconds: of which training.
      cached: taken from the cache of an earlier, interrupted run.
      file: where its `.tflite` was written (winner and Pareto front), or None.
      pareto: on the validation-accuracy vs objective Pareto front.
    """

    spec: dict[str, Any]
    status: str
    reason: str = ""
    size: int | None = None
    estimated_ms: float | None = None
    estimate_label: str = ""
    host_ms: float | None = None
    validation: Paired | None = None
    device: dict[str, Any] = dataclasses.field(default_factory=dict)
    meets: bool = False
    layers: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    kept_float: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    seconds: float = 0.0
    train_seconds: float = 0.0
    cached: bool = False
    file: str | None = None
    pareto: bool = False

    @property
    def name(self) -> str:
        return self.spec["name"]

    def cost(self, objective: str) -> float:
        """What the objective minimises: estimated ms, or raw bytes (inf if not measured)."""
        value = self.estimated_ms if objective == "latency" else self.size
        return math.inf if value is None else float(value)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["validation"] = None if self.validation is None else self.validation.to_dict()
        d["kept_float"] = [list(p) for p in self.kept_float]
        d["figures"] = {"size": "measured (bytes of the .tflite file)",
                        "estimated_ms": "estimated (device profile)",
                        "host_ms": "measured (this host, LiteRT CPU, 1 thread)",
                        "validation": "measured in LiteRT, paired against the fp32 baseline"}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CandidateResult:
        d = {k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}}
        if d.get("validation") is not None:
            d["validation"] = Paired(**d["validation"])
        d["kept_float"] = [tuple(p) for p in d.get("kept_float", [])]
        return cls(**d)


@dataclasses.dataclass
class OptimizeResult:
    """The outcome of `optimize`.

    Attributes:
      device: the device name; `device_rule` what it requires.
      objective: "latency" (the profile's estimate) or "size" (raw bytes).
      max_drop_pt: the accuracy budget; `confidence` of its bound.
      size_budget: bytes the winner must not exceed, or None.
      latency_budget_ms: estimated ms the winner must not exceed, or None.
      baseline: the fp32 conversion of the source model.
      candidates: every candidate, in the order the search took them.
      winner: the candidate chosen (it meets every budget), or None.
      best_missed: when nothing meets the budgets, the closest candidate.
      met: whether `winner` exists. Never True for a model that breaks a budget.
      verdict: one sentence saying so, with the miss when missed.
      test: the chosen (or closest) candidate measured once on the test split.
      validation_source / test_source: where the splits came from.
      search_seconds / train_seconds: wall time of the search, and of training in it.
      output_dir: where the files are; `files` maps a role to its path.
      reverified: the chosen file re-read from disk and re-run against the source model.
      commands: the individual-tool commands that reproduce the chosen candidate.
      time_budget_s: the search's time budget, or None; `stopped_by_time` if it ran out.
      epochs: the fine-tuning epochs of the training candidates.
    """

    device: str
    device_rule: str
    objective: str
    max_drop_pt: float
    confidence: float
    size_budget: int | None
    latency_budget_ms: float | None
    baseline: CandidateResult
    candidates: list[CandidateResult]
    winner: CandidateResult | None
    best_missed: CandidateResult | None
    met: bool
    verdict: str
    test: Paired | None
    validation_source: str
    test_source: str
    search_seconds: float
    train_seconds: float
    output_dir: str | None = None
    files: dict[str, str] = dataclasses.field(default_factory=dict)
    reverified: dict[str, Any] = dataclasses.field(default_factory=dict)
    commands: list[str] = dataclasses.field(default_factory=list)
    time_budget_s: float | None = None
    stopped_by_time: bool = False
    epochs: int = 0

    @property
    def chosen(self) -> CandidateResult | None:
        return self.winner if self.winner is not None else self.best_missed

    def to_dict(self) -> dict[str, Any]:
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for key in ("baseline", "winner", "best_missed"):
            d[key] = None if d[key] is None else d[key].to_dict()
        d["candidates"] = [c.to_dict() for c in self.candidates]
        d["test"] = None if self.test is None else self.test.to_dict()
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_jsonable)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """A table of the candidates and the verdict, for a terminal."""
        b = self.baseline
        print_fn(f"device {self.device}, objective {self.objective}, max drop "
                 f"{self.max_drop_pt:g} pt (bound at {self.confidence:.0%}); baseline fp32 "
                 f"{b.size:,} bytes, {b.estimated_ms:.3f} ms estimated, validation accuracy "
                 f"{b.validation.accuracy:.2%}")
        header = (f"{'candidate':<26}{'size':>10}{'est. ms':>9}{'host ms':>9}{'val acc':>9}"
                  f"{'drop<=':>8}  verdict")
        print_fn(header)
        print_fn("-" * len(header))
        for c in self.candidates:
            if c.status != "measured":
                print_fn(f"{c.name:<26}{'':>45}  {c.status}: {c.reason}")
                continue
            mark = "WINNER" if c is self.winner else ("meets" if c.meets else c.reason)
            host = f"{c.host_ms:.3f}" if c.host_ms is not None else "-"
            print_fn(f"{c.name:<26}{c.size:>10,}{c.estimated_ms:>9.3f}{host:>9}"
                     f"{c.validation.accuracy:>9.2%}{c.validation.drop_bound_pt:>8.2f}  {mark}")
        print_fn(self.verdict)
        if self.test is not None:
            t = self.test
            print_fn(f"test ({self.test_source}): accuracy {t.accuracy:.2%} vs baseline "
                     f"{t.baseline_accuracy:.2%}, drop {t.drop_pt:+.2f} pt, bound "
                     f"{t.drop_bound_pt:.2f} pt at {t.confidence:.0%} ({t.losses} lost, "
                     f"{t.gains} gained of {t.samples}); measured once, after selection")
        print_fn(f"search {self.search_seconds:.0f} s, of which training "
                 f"{self.train_seconds:.0f} s")
        for role, path in self.files.items():
            print_fn(f"  {role}: {path}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)
