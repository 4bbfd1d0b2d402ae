"""Distillation losses, written once in `tf` ops and shared by both Keras generations.

Every loss is a frozen dataclass that validates its arguments when it is built
and computes a *per-example* loss from a `LossInputs` bundle. The `Distiller`
weighs the losses, averages them over the global batch (so that training under
`tf.distribute` sums replica gradients correctly) and reports each one as a
metric.

A custom loss is a subclass of `DistillationLoss` that implements
`per_example(inputs)`; subclasses register themselves by class name so that a
saved `Distiller` that uses them loads again once the class is imported.

References:
  Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
  2015, https://arxiv.org/abs/1503.02531 (soft targets, T² scaling).
  Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
  https://arxiv.org/abs/1412.6550 (feature hints with a learned regressor).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from tflight._keras import tf
from tflight.errors import DistillationError

__all__ = [
    "LossInputs",
    "DistillationLoss",
    "SoftTargetLoss",
    "HardTargetLoss",
    "GroundTruthLoss",
    "FeatureLoss",
    "loss_from_config",
]

_REGISTRY: dict[str, type[DistillationLoss]] = {}


@dataclasses.dataclass(frozen=True)
class LossInputs:
    """What a distillation loss sees for one batch (all `tf.Tensor`s).

    Attributes:
      y: ground-truth labels (sparse integers or one-hot), or None when the
        data has no labels.
      teacher_logits: the teacher's logits, `(batch, classes)`.
      student_logits: the student's logits, same shape.
      features: for each `(teacher_layer, student_layer)` pair that a loss
        asked for through `feature_pairs`, the pair `(teacher_output,
        student_output)`, the student's output already projected to the
        teacher's width when the widths differ.
    """

    y: Any
    teacher_logits: Any
    student_logits: Any
    features: dict = dataclasses.field(default_factory=dict)


def _check_weight(owner: str, weight: float) -> None:
    if isinstance(weight, bool) or not isinstance(weight, (int, float)):
        raise DistillationError(f"{owner}: `weight` must be a number >= 0, got {weight!r}.")
    if not math.isfinite(weight) or weight < 0:
        raise DistillationError(f"{owner}: `weight` must be finite and >= 0, got {weight!r}.")


@dataclasses.dataclass(frozen=True)
class DistillationLoss:
    """Base class of distillation losses: subclass it to add your own.

    A subclass is a frozen dataclass (decorate it with
    `@dataclasses.dataclass(frozen=True)`) whose fields are its configuration,
    and implements `per_example`, returning a loss of shape `(batch,)` in `tf`
    ops. The `Distiller` multiplies it by `weight`, averages it over the global
    batch and reports it under `name`.

    Args:
      weight: the loss's weight in the total, finite and >= 0.

    Example:
      >>> @dataclasses.dataclass(frozen=True)
      ... class LogitMSE(DistillationLoss):
      ...     name: ClassVar[str] = "logit_mse"
      ...     def per_example(self, inputs):
      ...         d = inputs.teacher_logits - inputs.student_logits
      ...         return tf.reduce_mean(tf.square(d), axis=-1)
      >>> Distiller(teacher, student, losses=[SoftTargetLoss(), LogitMSE(weight=0.5)])
    """

    weight: float = dataclasses.field(default=1.0, kw_only=True)

    name: ClassVar[str] = "distillation"
    needs_labels: ClassVar[bool] = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        _REGISTRY[cls.__name__] = cls

    def __post_init__(self) -> None:
        _check_weight(type(self).__name__, self.weight)

    @property
    def feature_pairs(self) -> tuple[tuple[str, str], ...]:
        """`(teacher_layer, student_layer)` pairs whose outputs this loss needs."""
        return ()

    def per_example(self, inputs: LossInputs) -> tf.Tensor:
        """Returns the loss of each example, shape `(batch,)`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement `per_example(inputs)` returning a "
            "(batch,) tensor."
        )

    def get_config(self) -> dict[str, Any]:
        """Returns a JSON-serializable description (class name and fields)."""
        return {"class_name": type(self).__name__, "config": dataclasses.asdict(self)}


def loss_from_config(config: dict[str, Any]) -> DistillationLoss:
    """Rebuilds a loss from `DistillationLoss.get_config()`.

    Raises:
      DistillationError: the class is unknown (a custom loss whose module has
        not been imported) or the configuration is invalid.
    """
    name = config.get("class_name") if isinstance(config, dict) else None
    cls = _REGISTRY.get(name) if isinstance(name, str) else None
    if cls is None:
        raise DistillationError(
            f"Unknown distillation loss {name!r}; known: {sorted(_REGISTRY)}. "
            "Import the module that defines a custom loss before loading."
        )
    fields = dict(config.get("config", {}))
    try:
        return cls(**fields)
    except TypeError as e:
        raise DistillationError(f"Invalid configuration for {name}: {e}") from e


def _log_softmax(logits: tf.Tensor) -> tf.Tensor:
    return tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)


@dataclasses.dataclass(frozen=True)
class SoftTargetLoss(DistillationLoss):
    """KL divergence between temperature-softened teacher and student outputs.

    `T² · KL(softmax(t/T) ‖ softmax(s/T))`. Multiplying by T² keeps the size of
    the gradients roughly independent of the temperature, so that the soft and
    the hard terms can be weighed against each other as T changes (Hinton et
    al., section 2).

    Args:
      temperature: T > 0; higher values expose more of the teacher's "dark
        knowledge" about wrong classes.
      weight: weight of this term, >= 0.

    References:
      Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
      2015, https://arxiv.org/abs/1503.02531
    """

    temperature: float = 4.0
    weight: float = dataclasses.field(default=0.9, kw_only=True)

    name: ClassVar[str] = "soft"

    def __post_init__(self) -> None:
        super().__post_init__()
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise DistillationError(
                f"SoftTargetLoss: `temperature` must be a finite number > 0, got {t!r}; "
                "typical values are 2-10."
            )

    def per_example(self, inputs: LossInputs) -> tf.Tensor:
        t = float(self.temperature)
        log_p = _log_softmax(inputs.teacher_logits / t)
        log_q = _log_softmax(inputs.student_logits / t)
        kl = tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
        return kl * (t * t)


@dataclasses.dataclass(frozen=True)
class HardTargetLoss(DistillationLoss):
    """Cross-entropy of the student against the teacher's argmax as labels.

    Args:
      weight: weight of this term, >= 0.

    References:
      Hinton, Vinyals and Dean, 2015, https://arxiv.org/abs/1503.02531
    """

    weight: float = dataclasses.field(default=1.0, kw_only=True)

    name: ClassVar[str] = "hard"

    def per_example(self, inputs: LossInputs) -> tf.Tensor:
        labels = tf.argmax(inputs.teacher_logits, axis=-1)
        return tf.nn.sparse_softmax_cross_entropy_with_logits(
            labels=labels, logits=tf.cast(inputs.student_logits, tf.float32)
        )


@dataclasses.dataclass(frozen=True)
class GroundTruthLoss(DistillationLoss):
    """Ordinary cross-entropy of the student against the true labels.

    Labels may be sparse integers `(batch,)` / `(batch, 1)` or one-hot
    `(batch, classes)`.

    Args:
      weight: weight of this term, >= 0.
    """

    weight: float = dataclasses.field(default=0.1, kw_only=True)

    name: ClassVar[str] = "ground_truth"
    needs_labels: ClassVar[bool] = True

    def per_example(self, inputs: LossInputs) -> tf.Tensor:
        if inputs.y is None:
            raise DistillationError(
                "GroundTruthLoss needs labels, but the data has none: pass `y` to fit "
                "(or data as (x, y)), or set its weight to 0 / drop it from `losses`."
            )
        logits = tf.cast(inputs.student_logits, tf.float32)
        y = inputs.y
        if (
            y.shape.rank == logits.shape.rank
            and y.shape[-1] == logits.shape[-1]
            and y.shape[-1] != 1
        ):
            return tf.nn.softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.float32), logits=logits
            )
        y = tf.reshape(tf.cast(y, tf.int64), [-1])
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)


@dataclasses.dataclass(frozen=True)
class FeatureLoss(DistillationLoss):
    """Mean squared error between named intermediate layers of teacher and student.

    When the student layer is narrower or wider than the teacher layer (last
    axis), the `Distiller` adds a learned linear projection of the student's
    features to the teacher's width (a FitNets "regressor"); it is trained with
    the student and is not part of the exported student. Other axes must match.

    A layer name may be given as in the original model: for a TF-MOT-wrapped
    student, `"conv"` also finds `"prune_low_magnitude_conv"`, `"quant_conv"`
    or `"cluster_conv"`.

    Args:
      teacher_layer: name of the teacher layer.
      student_layer: name of the student layer.
      weight: weight of this term, >= 0.

    References:
      Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
      https://arxiv.org/abs/1412.6550
    """

    teacher_layer: str = ""
    student_layer: str = ""
    weight: float = dataclasses.field(default=1.0, kw_only=True)

    name: ClassVar[str] = "feature"

    def __post_init__(self) -> None:
        super().__post_init__()
        for field in ("teacher_layer", "student_layer"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise DistillationError(
                    f"FeatureLoss: `{field}` must be a layer name, got {value!r}."
                )

    @property
    def feature_pairs(self) -> tuple[tuple[str, str], ...]:
        return ((self.teacher_layer, self.student_layer),)

    def per_example(self, inputs: LossInputs) -> tf.Tensor:
        t, s = inputs.features[(self.teacher_layer, self.student_layer)]
        t = tf.cast(t, tf.float32)
        s = tf.cast(s, tf.float32)
        sq = tf.square(t - s)
        return tf.reduce_mean(tf.reshape(sq, [tf.shape(sq)[0], -1]), axis=-1)


def _resolve_losses(
    temperature: float | None,
    alpha: float | None,
    feature_layers: Any,
    feature_weight: float | None,
    losses: Any,
) -> tuple[DistillationLoss, ...]:
    """The distiller's losses: `losses` as given, or the defaults built from the four shortcuts.

    Raises:
      DistillationError: both forms given, an empty or foreign `losses`, an
        `alpha` outside [0, 1], a malformed feature pair, or all weights 0.
    """
    if losses is not None:
        given = [
            n
            for n, v in (
                ("temperature", temperature),
                ("alpha", alpha),
                ("feature_layers", feature_layers),
                ("feature_weight", feature_weight),
            )
            if v is not None
        ]
        if given:
            raise DistillationError(
                f"Pass either `losses=[...]` or {', '.join(given)}, not both: with `losses` the "
                "list is complete (add SoftTargetLoss(temperature=...) etc. to it)."
            )
        losses = list(losses)
        if not losses:
            raise DistillationError("`losses` is empty; give at least one DistillationLoss.")
        for loss in losses:
            if not isinstance(loss, DistillationLoss):
                raise DistillationError(
                    f"`losses` must hold DistillationLoss objects, got {type(loss).__name__}."
                )
    else:
        temperature = 4.0 if temperature is None else temperature
        alpha = 0.1 if alpha is None else alpha
        feature_weight = 1.0 if feature_weight is None else feature_weight
        if (
            isinstance(alpha, bool)
            or not isinstance(alpha, (int, float))
            or not math.isfinite(alpha)
            or not 0.0 <= alpha <= 1.0
        ):
            raise DistillationError(
                f"`alpha` (weight of the ground-truth loss) must be in [0, 1], got {alpha!r}; "
                "the soft-target loss gets 1 - alpha."
            )
        losses = [SoftTargetLoss(temperature=temperature, weight=1.0 - alpha)]
        if alpha > 0:
            losses.append(GroundTruthLoss(weight=alpha))
        for pair in feature_layers or ():
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise DistillationError(
                    "`feature_layers` must be (teacher_layer, student_layer) name pairs, got "
                    f"{pair!r}."
                )
            losses.append(FeatureLoss(pair[0], pair[1], weight=feature_weight))
    if sum(loss.weight for loss in losses) <= 0:
        raise DistillationError(
            "All loss weights are 0; at least one loss needs a weight > 0 to train the student."
        )
    return tuple(losses)
