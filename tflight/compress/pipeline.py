"""Pipelines: techniques applied in order, each fine-tuned and stripped before the next.

A `Pipeline` is a list of techniques (`tflight.Prune`, `tflight.QAT`,
`tflight.Cluster`, see `tflight.compress.technique`) applied in order, in the
spirit of optax's `chain`. Prune → QAT becomes sparsity-preserving QAT (PQAT),
Cluster → QAT cluster-preserving QAT (CQAT), and Prune → Cluster → QAT the full
PCQAT. Everything that can be checked (arguments, data, which layers each stage
wraps) is checked before the first epoch.

References:
  Han, Mao, Dally. "Deep Compression: Compressing Deep Neural Networks with
  Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
  TensorFlow Model Optimization, "Collaborative optimization" guide.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from tflight.compress.checks import check_data, check_finite, per_stage
from tflight.compress.compile import compile_model, fresh_optimizer
from tflight.compress.masks import (
    check_refills,
    measure_refills,
    pruned_masks,
    rezero,
    zeros_by_layer,
)
from tflight.compress.models import own, prepare
from tflight.compress.report import CompressionReport, attach_report
from tflight.compress.report import compression_report as report
from tflight.compress.technique import Selector, Technique
from tflight.compress.training import fit, freeze
from tflight.errors import CompressionError

__all__ = [
    "Pipeline",
    "PipelineResult",
    "StageResult",
    "report",  # the report of a pipeline's model, kept here for `tflight.compose.report`
]

@dataclasses.dataclass(frozen=True)
class StageResult:
    """One fine-tuned stage of a pipeline."""

    technique: str
    preserve: frozenset[str]
    history: dict[str, list[float]]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """The outcome of `Pipeline.fit`.

    Attributes:
      model: the stripped model, ready for `converters.convert`.
      stages: one `StageResult` per technique, in order.
      reports: one `CompressionReport` per technique, in order: what each
        stage wrapped, kept float and skipped.
    """

    model: Any
    stages: tuple[StageResult, ...]
    reports: tuple[CompressionReport, ...] = ()

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints one line per stage with its last training loss, then the layer reports."""
        for i, stage in enumerate(self.stages, 1):
            loss = stage.history.get("loss", [float("nan")])[-1]
            keep = f" preserving {', '.join(sorted(stage.preserve))}" if stage.preserve else ""
            print_fn(f"{i}. {stage.technique}{keep}: final loss {loss:.4f}")
        for rep in self.reports:
            rep.summary(print_fn)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Techniques applied in order, each fine-tuned and stripped before the next.

    Later techniques preserve what earlier ones produced: after `Prune`, a
    `Cluster` keeps the zeros and `QAT` uses TF-MOT's prune-preserving scheme;
    after `Cluster`, `QAT` keeps the centroids. This gives PQAT
    (`[Prune, QAT]`), CQAT (`[Cluster, QAT]`) and PCQAT (`[Prune, Cluster, QAT]`).

    Args:
      techniques: the technique objects, applied first to last.

    Example:
      >>> pipe = tflight.Pipeline([tflight.Prune(sparsity=0.5), tflight.QAT()])
      >>> out = pipe.fit(model, x, y, epochs=2, compile={"optimizer": "adam",
      ...                "loss": "sparse_categorical_crossentropy"})
      >>> converters.convert(out.model, "int8", representative_data=x[:100])

    References:
      TensorFlow Model Optimization, "Collaborative optimization" (PQAT, CQAT,
      PCQAT), 2021.
    """

    techniques: tuple[Any, ...]

    def __post_init__(self) -> None:
        techniques = tuple(self.techniques)
        object.__setattr__(self, "techniques", techniques)
        if not techniques:
            raise CompressionError("Pipeline needs at least one technique, got an empty list.")
        for t in techniques:
            if not isinstance(t, Technique):
                raise CompressionError(
                    f"Pipeline items must be techniques (tflight.Prune, tflight.QAT, "
                    f"tflight.Cluster), got {t!r}."
                )
        names = [type(t).__name__ for t in techniques]
        if "QAT" in names and names.index("QAT") != len(names) - 1:
            raise CompressionError(
                f"QAT must be the last technique of a pipeline (its fake-quant wrappers are "
                f"what the converter reads), got the order {names}."
            )
        if len(set(names)) != len(names):
            raise CompressionError(f"Each technique may appear once in a pipeline, got {names}.")

    def fit(
        self,
        model: Any,
        x: Any = None,
        y: Any = None,
        *,
        compile: dict[str, Any],
        epochs: int | Sequence[int] = 1,
        train: Selector = None,
        **fit_kwargs: Any,
    ) -> PipelineResult:
        """Applies, fine-tunes and strips each technique in turn.

        Args:
          model: a Keras 3 or tf_keras model (left unchanged).
          x: training inputs, as for `Model.fit`.
          y: training targets, as for `Model.fit`.
          compile: `Model.compile` keyword arguments used for every stage.
          epochs: epochs per stage, one number for all or one per technique.
          train: if given, only these layers are trained (parameter-efficient
            fine-tuning, see `tflight.freeze`).
          **fit_kwargs: further `Model.fit` arguments (`batch_size`, `verbose`,
            `validation_data`, `callbacks`, ...).

        Returns:
          A `PipelineResult` whose `model` is stripped and ready to convert.

        Raises:
          CompressionError: bad arguments or a technique failed.
          UnsupportedLayerError: a technique cannot handle a layer.
        """
        stage_epochs = per_stage(epochs, len(self.techniques))
        if not isinstance(compile, dict) or "loss" not in compile:
            raise CompressionError(
                "Pipeline.fit needs `compile` with at least a loss, e.g. "
                f"compile={{'optimizer': 'adam', 'loss': ...}}, got {compile!r}."
            )
        # Everything that can be checked is checked before the first epoch.
        base, flat = prepare(model, what="Pipeline")
        own(base)
        preserve_at: list[frozenset[str]] = []
        done: set[str] = set()
        plans = []
        for technique in self.techniques:
            preserve_at.append(frozenset(done))
            plans.append(technique.plan(base, preserve=frozenset(done)))
            done |= technique.provides
        # Cluster-preserving QAT rebuilds every clustered layer; one it keeps
        # float (MultiHeadAttention, ...) cannot be rebuilt clustered: leave it unclustered.
        qat_float = {
            name: "kept float by the QAT stage that follows"
            for p in plans
            if p is not None and p.technique == "qat"
            for name, _ in p.kept_float
        }
        check_data(base, x, y, compile)
        pruned_zeros: dict[str, float] = {}
        current = base
        stages = []
        reports = []
        user_callbacks = list(fit_kwargs.pop("callbacks", None) or [])
        fit_kwargs.setdefault("verbose", 0)
        for technique, n_epochs, preserve in zip(
            self.techniques, stage_epochs, preserve_at, strict=True
        ):
            if "clusters" in technique.provides and qat_float:
                wrapped = technique.apply(
                    current, preserve=preserve, compile=None, exclude=qat_float
                )
            else:
                wrapped = technique.apply(current, preserve=preserve, compile=None)
            rep = report(wrapped)
            if rep is not None and flat.inlined and not rep.inlined:
                rep = dataclasses.replace(rep, inlined=flat.inlined)
            if train is not None:
                freeze(wrapped, train=train)
            compile_model(wrapped, fresh_optimizer(compile))
            masks = pruned_masks(wrapped, pruned_zeros) if pruned_zeros else []
            history = fit(
                wrapped, x, y, epochs=n_epochs, callbacks=list(user_callbacks), **fit_kwargs
            )
            check_finite(wrapped, history.history, stage=_label(technique))
            if masks:
                # Counted and checked before the repair, so that the check can fire.
                refills = measure_refills(masks)
                kept_sparse = set(rep.wrapped) if rep is not None else set()
                check_refills(refills, kept_sparse, technique, preserve)
                rezero(masks)
                if rep is not None:
                    rep = dataclasses.replace(rep, rezeroed=tuple(
                        (r.layer, r.refilled, r.pruned) for r in refills if r.refilled))
            current = own(technique.strip(wrapped))
            if "sparsity" in technique.provides:
                pruned_zeros = zeros_by_layer(current)
            if rep is not None:
                reports.append(rep)
                attach_report(current, rep)
            stages.append(
                StageResult(
                    technique=_label(technique),
                    preserve=preserve,
                    history={k: [float(v) for v in vs] for k, vs in history.history.items()},
                )
            )
        return PipelineResult(model=current, stages=tuple(stages), reports=tuple(reports))


def _label(technique: Any) -> str:
    """`Prune(sparsity=0.5)`: the class and the arguments that differ from the defaults."""
    if not dataclasses.is_dataclass(technique):
        return repr(technique)

    def short(value: Any) -> str:
        if isinstance(value, type):
            return value.__name__
        if isinstance(value, str):  # includes str enums
            return repr(str(value.value if hasattr(value, "value") else value))
        return repr(value)

    args = [
        f"{f.name}={short(getattr(technique, f.name))}"
        for f in dataclasses.fields(technique)
        if getattr(technique, f.name) != f.default
    ]
    return f"{type(technique).__name__}({', '.join(args)})"

