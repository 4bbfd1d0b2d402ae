"""One call from a classifier and its data to a verified, checked `.tflite`.

`compress_to_tflite` is what `tflight compress` runs, offered to Python too:
it holds data out (or takes the user's validation data), picks the loss from
the model's last layer, builds the techniques of a `Recipe` with defaults that
make a good model — a pruning schedule that ramps from 0 to the target over
most of the fine-tune, and epochs scaled to the size of the data — fine-tunes,
converts in LiteRT, and then checks the result on the held-out data: the
`.tflite` must agree with the Keras model (`min_agreement`) and must not lose
more than `max_drop` accuracy points against the original model on the same
samples. Nothing is written here; `CompressedTflite.save` writes the file.

References:
  Zhu, Gupta. "To prune, or not to prune", 2017 (the ramped schedule).
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tflight.compress.checks import check_classifier_data, n_samples, rows, split_rows
from tflight.compress.gate import (
    DEFAULT_MAX_DROP,
    AccuracyCheck,
    check_drop,
    check_max_drop,
    top1_accuracy,
)
from tflight.errors import CompressionError

if TYPE_CHECKING:  # the pipeline imports TensorFlow: `tflight --help` must not
    from tflight.compress.pipeline import PipelineResult

__all__ = [
    "CompressedTflite",
    "Recipe",
    "auto_epochs",
    "compress_to_tflite",
    "ramped_schedule",
]


class Recipe(enum.StrEnum):
    """Techniques and combinations; the values are the CLI words."""

    PRUNE = "prune"
    QAT = "qat"
    CLUSTER = "cluster"
    PQAT = "pqat"
    CQAT = "cqat"
    PCQAT = "pcqat"

    @property
    def stages(self) -> tuple[str, ...]:
        """The techniques, in the order they are applied."""
        return {
            "prune": ("prune",),
            "qat": ("qat",),
            "cluster": ("cluster",),
            "pqat": ("prune", "qat"),
            "cqat": ("cluster", "qat"),
            "pcqat": ("prune", "cluster", "qat"),
        }[self.value]


# A fine-tune of about this many optimizer steps per stage lets a small model
# recover from pruning and learn its quantization ranges; fewer epochs on big
# data reach it, more on small data. Bounded so small data does not overfit
# for ever and big data still sees every sample.
_TARGET_STEPS = 600
_MIN_EPOCHS, _MAX_EPOCHS = 2, 20
# The ramp ends here (a share of the pruning stage), leaving the rest of the
# stage to recover at the final sparsity.
_RAMP_SHARE = 0.75


def auto_epochs(n_train: int, batch_size: int) -> int:
    """Epochs per stage for `n_train` samples: about `_TARGET_STEPS` steps, within bounds."""
    steps = max(1, math.ceil(n_train / batch_size))
    return int(min(_MAX_EPOCHS, max(_MIN_EPOCHS, math.ceil(_TARGET_STEPS / steps))))


def ramped_schedule(sparsity: float, *, steps: int) -> Any:
    """A `PolynomialDecay` from 0 to `sparsity`, reached after `_RAMP_SHARE` of `steps`.

    Args:
      sparsity: the final fraction of zeros.
      steps: the optimizer steps of the pruning stage (epochs * steps per epoch).
    """
    from tflight.compress.schedules import PolynomialDecay

    return PolynomialDecay(final=sparsity, end_step=max(1, round(_RAMP_SHARE * steps)))


@dataclasses.dataclass(frozen=True)
class CompressedTflite:
    """The outcome of `compress_to_tflite`: the model, its `.tflite`, and the figures.

    Attributes:
      recipe: the `Recipe` that ran.
      pipeline: the `PipelineResult` (the stripped Keras model and each stage).
      conversion: the verified `converters.ConversionResult`.
      mode: the conversion mode (`"int8"`, `"fp32"`, ...).
      agreement: the `AgreementReport` of the `.tflite` against the Keras
        model on the held-out data (measured).
      accuracy: the `AccuracyCheck`: original vs `.tflite` on the same held-out
        data (measured).
      sparsity: the `SparsityReport` of the result when pruning ran, else None.
      skipped: layers pruning left dense, with the reason.
      epochs: the epochs each stage trained for.
      trained_on: training samples; `held_out`: held-out samples.
      held_out_from: `"validation"` (the user's data) or `"holdout"` (a share
        of the training data, not trained on).
    """

    recipe: Recipe
    pipeline: PipelineResult
    conversion: Any
    mode: str
    agreement: Any
    accuracy: AccuracyCheck
    sparsity: Any
    skipped: dict[str, str]
    epochs: int
    trained_on: int
    held_out: int
    held_out_from: str

    @property
    def model(self) -> Any:
        """The stripped Keras model the `.tflite` was converted from."""
        return self.pipeline.model

    def save(self, path: str) -> Any:
        """Writes the `.tflite` atomically; returns its path."""
        return self.conversion.save(path)


def _ends_in_softmax(model: Any) -> bool:
    last = model.layers[-1]
    if type(last).__name__ == "Softmax":
        return True
    return getattr(getattr(last, "activation", None), "__name__", "") == "softmax"


def _advice(recipe: Recipe, sparsity: float) -> tuple[tuple[str, ...], str]:
    """The arguments worth changing when the budget is missed, and the same in words."""
    options = ["epochs", "learning_rate"]
    words = ["more epochs", "another learning rate"]
    if "prune" in recipe.stages:
        options += ["schedule", "sparsity"]
        words += ["the ramped sparsity schedule", f"a sparsity below {sparsity:g}"]
    if "cluster" in recipe.stages:
        options.append("clusters")
        words.append("more clusters")
    options.append("distillation")
    words.append("distillation from the original model (tflight distill) before compressing")
    return tuple(options), ", ".join(words)


def compress_to_tflite(
    model: Any,
    x: Any,
    y: Any,
    *,
    recipe: Recipe | str = Recipe.PQAT,
    validation_data: tuple[Any, Any] | None = None,
    holdout: float = 0.2,
    sparsity: float = 0.5,
    schedule: str = "ramp",
    clusters: int = 16,
    epochs: int | None = None,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    mode: str | None = None,
    min_agreement: float = 0.99,
    skip_unsupported: bool = False,
    keep_unsupported_float: bool = False,
    max_drop: float | None = DEFAULT_MAX_DROP,
    callbacks: Sequence[Any] = (),
    progress: Callable[[str], None] | None = None,
    seed: int = 0,
    names: tuple[str | None, str | None] = ("x", "validation_data"),
) -> CompressedTflite:
    """Compresses a one-output classifier, converts it, and checks it on held-out data.

    Args:
      model: a Keras 3 or tf_keras classifier with one output (left unchanged).
      x: training inputs: an array, or a list of arrays (one per model input).
      y: class ids (integers) for `x`.
      recipe: a `Recipe` or its word (`"prune"`, `"qat"`, `"cluster"`,
        `"pqat"`, `"cqat"`, `"pcqat"`).
      validation_data: `(x_val, y_val)` to measure on; default: hold out
        `holdout` of `x` (never trained on).
      holdout: share of `x` held out when `validation_data` is None.
      sparsity: the pruning target.
      schedule: `"ramp"` (polynomial decay from 0 to `sparsity` over the first
        three quarters of the pruning stage) or `"constant"` (the target from
        the first step).
      clusters: clusters per kernel.
      epochs: epochs per stage; None scales them to the data (about 600 steps
        per stage, 2 to 20 epochs).
      batch_size: the fine-tuning batch size.
      learning_rate: the Adam learning rate.
      mode: the conversion mode; default int8 with QAT, else fp32.
      min_agreement: the share of held-out samples on which a QAT `.tflite`
        must agree with its Keras model.
      skip_unsupported: leave layers TF-MOT cannot prune dense.
      keep_unsupported_float: leave layers TF-MOT cannot quantize in float.
      max_drop: accuracy points the `.tflite` may lose against `model` on the
        held-out data; None only measures.
      callbacks: further tf_keras callbacks for every stage (e.g. progress).
      progress: called with a line of text at each step, or None.
      seed: the seed of the hold-out split.
      names: what to call the training and the validation data in messages
        (e.g. the files they were read from).

    Returns:
      A `CompressedTflite`; nothing is written until its `save`.

    Raises:
      CompressionError: bad arguments or data (before any training); a
        `.tflite` that disagrees with its Keras model (`kind="agreement_low"`,
        `option="min_agreement"`); or, with `kind="budget_missed"`, a result
        that loses more than `max_drop` (the figures and the unsaved result
        are the error's fields, see `tflight.compress.gate`).
      UnsupportedLayerError: a layer a technique cannot handle.

    Example:
      >>> out = tflight.compress.compress_to_tflite(model, x, y, recipe="pqat")
      >>> out.accuracy.summary()
      >>> out.save("model.tflite")
    """
    import converters
    from tflight._keras import tf_keras
    from tflight.compress.agreement import check_agreement
    from tflight.compress.clustering import Cluster
    from tflight.compress.pruning import Prune
    from tflight.compress.quantization import QAT
    from tflight.compress.sparsity import sparsity_report

    try:
        recipe = Recipe(recipe)
    except ValueError as e:
        raise CompressionError(
            f"`recipe` must be one of {[r.value for r in Recipe]}, got {recipe!r}.",
            option="recipe",
            kind="bad_argument",
        ) from e
    if schedule not in ("ramp", "constant"):
        raise CompressionError(
            f"`schedule` must be 'ramp' or 'constant', got {schedule!r}.",
            option="schedule",
            kind="bad_argument",
        )
    if epochs is not None and (not isinstance(epochs, int) or epochs < 1):
        raise CompressionError(
            f"`epochs` must be a positive int or None, got {epochs!r}.",
            option="epochs",
            kind="bad_argument",
        )
    check_max_drop(max_drop, error=CompressionError)
    say = progress or (lambda _line: None)
    train_name, val_name = names
    check_classifier_data(model, x, train_name or "x")
    if validation_data is not None:
        x_val, y_val = validation_data
        check_classifier_data(model, x_val, val_name or "validation_data")
        held_from = "validation"
    else:
        x, y, x_val, y_val = split_rows(x, y, holdout, seed=seed)
        held_from = "holdout"
    if n_samples(x) < 2:
        raise CompressionError(
            f"{n_samples(x)} training example(s) are left after holding out {n_samples(x_val)}; "
            "give more data or separate validation data.",
            option="holdout" if held_from == "holdout" else "x",
            kind="too_few_samples",
        )
    n_train = n_samples(x)
    stage_epochs = epochs or auto_epochs(n_train, batch_size)
    steps = stage_epochs * math.ceil(n_train / batch_size)
    techniques = []
    for stage in recipe.stages:
        if stage == "prune":
            # Validate the target first: the schedule would name its own argument.
            Prune(sparsity=sparsity)
            target = ramped_schedule(sparsity, steps=steps) if schedule == "ramp" else sparsity
            techniques.append(
                Prune(sparsity=target, unsupported="skip" if skip_unsupported else "raise")
            )
        elif stage == "cluster":
            techniques.append(Cluster(n_clusters=clusters))
        else:
            techniques.append(QAT(unsupported="keep_float" if keep_unsupported_float else "raise"))
    k = tf_keras()
    loss = k.losses.SparseCategoricalCrossentropy(from_logits=not _ends_in_softmax(model))
    say(
        f"Fine-tuning on {n_train} examples of {train_name} ({stage_epochs} epoch(s) per stage); "
        f"measuring on {n_samples(x_val)} held-out samples"
        + (f" of {val_name}." if held_from == "validation" else " (not trained on).")
    )
    from tflight.compress.pipeline import Pipeline

    out = Pipeline(techniques).fit(
        model,
        x,
        y,
        compile={"optimizer": k.optimizers.Adam(learning_rate), "loss": loss,
                 "metrics": ["accuracy"]},
        epochs=stage_epochs,
        batch_size=batch_size,
        verbose=0,
        callbacks=list(callbacks),
    )
    qat = "qat" in recipe.stages
    mode = mode or ("int8" if qat else "fp32")
    say(f"Converting to {mode} and verifying in LiteRT ...")
    # A QAT model's int8 file is gated below by its agreement with the Keras
    # model (`min_agreement`) and by the accuracy budget, on the held-out
    # samples; the converter's own int8 marks (SNR 12 dB, top-1 85 %) would
    # refuse it first, by marks the caller cannot set here. The converter
    # still checks that the file runs and gives finite outputs.
    limits = ({mode: converters.Thresholds(min_snr_db=0.0, min_top1=0.0)}
              if qat and mode in ("int8", "int16x8") else None)
    result = converters.convert(
        out.model, mode, representative_data=rows(x, slice(0, 200)), sample_data=x_val,
        thresholds=limits,
    )
    report = sparsity_report(out.model) if "prune" in recipe.stages else None
    skipped = next((dict(r.skipped) for r in out.reports if r.technique == "prune"), {})
    agreement = check_agreement(out.model, result, x_val, y=y_val, min_agreement=0.0)
    original = top1_accuracy(model, x_val, y_val)
    options, words = _advice(recipe, sparsity)

    def outcome(accuracy: AccuracyCheck) -> CompressedTflite:
        return CompressedTflite(
            recipe=recipe, pipeline=out, conversion=result, mode=mode, agreement=agreement,
            accuracy=accuracy, sparsity=report, skipped=skipped, epochs=stage_epochs,
            trained_on=n_train, held_out=n_samples(x_val), held_out_from=held_from,
        )

    measured = AccuracyCheck(
        original=original, accuracy=agreement.tflite_accuracy, samples=agreement.samples,
        max_drop=max_drop, result="LiteRT .tflite",
    )
    if qat and agreement.agreement < min_agreement:
        raise CompressionError(
            f"The {mode} .tflite agrees with the QAT Keras model on {agreement.agreement:.2%} "
            f"of {agreement.samples} held-out samples, below min_agreement "
            f"{min_agreement:.2%}.",
            option="min_agreement",
            kind="agreement_low",
            fix="keep unsupported layers float, convert in 'dynamic' mode without QAT, or "
            "fine-tune longer",
            agreement=agreement.agreement,
            samples=agreement.samples,
            min_agreement=min_agreement,
            mode=mode,
            result=outcome(measured),
        )
    check_drop(
        original, agreement.tflite_accuracy, agreement.samples,
        max_drop=max_drop, error=CompressionError, advice=options, fix=words,
        result="LiteRT .tflite", payload=outcome(measured),
    )
    return outcome(measured)
