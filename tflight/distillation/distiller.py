"""Knowledge distillation: train a small student to imitate a large, frozen teacher.

`Distiller(teacher, student, ...)` is a Keras model that you `compile` and
`fit` like any other; `call` returns the student's output, and after training
`distiller.student` is exported on its own. One entry point serves both Keras
generations: a Keras 3 student gets a `keras.Model` subclass, a tf_keras
student (for example one that TF-MOT has pruned, QAT-wrapped or clustered)
gets a tf_keras `Model` subclass, so that distillation can run during the
compression fine-tune. The teacher may be of either generation. Both
subclasses are made by `_distiller_class` from the one body of `Distiller`
(losses, training and test steps, caching, serialization); what differs
between the generations (the base `Model`, how the optimizer applies
gradients, which weights count as trainable) is decided there.

Next to it: `losses`, `models` (checks of the two models), `cache`, `result`,
`saving` (`load_distiller`) and `run` (`distill`, the one-call shortcut).

What the trainer adds over `keras.distillation.Distiller`: learned projections
for feature distillation between layers of different widths, teacher outputs
cached once for a data set (`Distiller.cache_teacher`), TF-MOT students (the
pruning callback is supplied), both Keras generations, and training under
`tf.distribute` strategies (losses are averaged over the global batch).

References:
  Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
  2015, https://arxiv.org/abs/1503.02531
  Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
  https://arxiv.org/abs/1412.6550
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight import _io
from tflight._keras import keras, tf, tfmot
from tflight.distillation.cache import TeacherCache, _cache_teacher
from tflight.distillation.losses import (
    DistillationLoss,
    LossInputs,
    _resolve_losses,
    loss_from_config,
)
from tflight.distillation.models import (
    _as_logits,
    _check_models,
    _find_layer,
    _generation,
    _has_pruning,
    _module_for,
    _outputs_probabilities,
    load_model,
)
from tflight.errors import DistillationError

__all__ = ["Distiller", "load_model"]


class _Hidden:
    """Holds an object out of sight of Keras' attribute tracking.

    A teacher of the other Keras generation is run as a plain TF function; it
    must not be tracked (its variables would count as the distiller's).
    """

    def __init__(self, value: Any) -> None:
        self.value = value


# --------------------------------------------------------------------------- the trainer


class Distiller:
    """Trains a student to imitate a frozen teacher: a Keras model to compile and fit.

    `Distiller(teacher, student)` returns a `keras.Model` for a Keras 3 student
    and a tf_keras `Model` for a tf_keras student (e.g. pruned, QAT-wrapped or
    clustered with TF-MOT); `isinstance(d, Distiller)` holds for both. The
    teacher may be of either generation (of the other one, it runs as a TF
    function and is not saved with the distiller). `call` returns the
    student's output; after `fit`, export `distiller.student` on its own.

    The teacher is frozen without being modified: it runs with
    `training=False` and its weights are left out of the distiller's
    trainable weights, so the user's teacher object (including its
    `trainable` flag) is untouched.

    Both models must output class scores of the same shape. Logits are
    expected; a model whose last layer applies a softmax is detected and its
    log-probabilities are used as logits.

    Roles are checked: a teacher with fewer parameters than the student's
    trainable parameters is refused, as a likely swap of the two arguments
    (pass `allow_smaller_teacher=True` for deliberate self-distillation with a
    smaller teacher).

    A pruned student needs TF-MOT's `UpdatePruningStep` callback; `fit` adds
    it when it is missing.

    Losses: by default `alpha` · ground-truth cross-entropy + (1 - `alpha`) ·
    soft-target KL at `temperature`, plus one `FeatureLoss(weight=
    feature_weight)` for each `(teacher_layer, student_layer)` in
    `feature_layers`. Or pass `losses=[...]` (any `DistillationLoss`s,
    including your own) instead of those four arguments; not both.

    Args:
      teacher: the trained teacher model (Keras 3 or tf_keras).
      student: the student to train (Sequential or Functional; Keras 3 or
        tf_keras, TF-MOT-wrapped allowed).
      temperature: softening temperature of the soft-target loss, > 0
        (default 4.0).
      alpha: weight of the ground-truth loss in [0, 1]; the soft-target loss
        gets `1 - alpha` (default 0.1).
      feature_layers: `(teacher_layer, student_layer)` name pairs for feature
        distillation; a learned projection is added when widths differ.
      feature_weight: weight of each feature loss, >= 0 (default 1.0).
      losses: the full list of losses, instead of the arguments above.
      allow_smaller_teacher: accept a teacher with fewer parameters than the
        student.
      name: the model's name.

    Raises:
      DistillationError: models of the wrong kind, mismatched input or output
        shapes, swapped roles, a temperature <= 0, weights out of range, or an
        unknown feature layer.

    Example:
      >>> distiller = tflight.Distiller(teacher, student, temperature=4.0, alpha=0.1)
      >>> distiller.compile(optimizer="adam")
      >>> distiller.fit(x_train, y_train, epochs=10)
      >>> small = distiller.student  # export this one

    References:
      Hinton, Vinyals and Dean, "Distilling the Knowledge in a Neural Network",
      2015, https://arxiv.org/abs/1503.02531
      Romero et al., "FitNets: Hints for Thin Deep Nets", ICLR 2015,
      https://arxiv.org/abs/1412.6550
    """

    def __new__(cls, *args: Any, **kwargs: Any):
        if cls is Distiller:
            student = kwargs.get("student", args[1] if len(args) > 1 else None)
            generation = _generation(student)
            if generation is None:
                raise DistillationError(
                    f"`student` must be a Keras 3 or tf_keras model, got {type(student).__name__}."
                )
            cls = _distiller_class(generation)
        return super(Distiller, cls).__new__(cls, *args, **kwargs)  # noqa: UP008 - cls is rebound

    # The generation subclasses call this from their __init__.
    def _setup(
        self,
        teacher: Any,
        student: Any,
        *,
        temperature: float | None,
        alpha: float | None,
        feature_layers: Sequence[tuple[str, str]] | None,
        feature_weight: float | None,
        losses: Sequence[DistillationLoss] | None,
        allow_smaller_teacher: bool,
    ) -> None:
        self._generation = _generation(student)
        self._allow_smaller_teacher = bool(allow_smaller_teacher)
        self._distill_losses = _resolve_losses(
            temperature, alpha, feature_layers, feature_weight, losses
        )
        _check_models(teacher, student, allow_smaller_teacher=self._allow_smaller_teacher)

        self._teacher_generation = _generation(teacher)
        if self._teacher_generation == self._generation:
            self.teacher = teacher
        else:
            self._hidden_teacher = _Hidden(teacher)
        self.student = student
        self._teacher_probabilities = _outputs_probabilities(teacher)
        self._student_probabilities = _outputs_probabilities(student)

        # Feature extractors and projections.
        pairs: list[tuple[str, str]] = []
        for loss in self._distill_losses:
            for pair in loss.feature_pairs:
                if pair not in pairs:
                    pairs.append(tuple(pair))
        self._pairs = tuple(pairs)
        self._teacher_runner = _Hidden(teacher)
        self._student_runner = _Hidden(student)
        projections = []
        projection_of: dict[tuple[str, str], int] = {}
        if pairs:
            t_mod = _module_for(self._teacher_generation)
            t_layers = [_find_layer(teacher, t, "teacher") for t, _ in pairs]
            s_layers = [_find_layer(student, s, "student") for _, s in pairs]
            self._teacher_runner = _Hidden(
                t_mod.Model(
                    teacher.inputs, [teacher.outputs[0], *[layer.output for layer in t_layers]]
                )
            )
            self._student_runner = _Hidden(
                self._k.Model(
                    student.inputs, [student.outputs[0], *[layer.output for layer in s_layers]]
                )
            )
            for pair, tl, sl in zip(pairs, t_layers, s_layers, strict=True):
                t_shape = tuple(tl.output.shape)
                s_shape = tuple(sl.output.shape)
                if t_shape[1:] == s_shape[1:]:
                    continue
                if len(t_shape) != len(s_shape) or t_shape[1:-1] != s_shape[1:-1]:
                    raise DistillationError(
                        f"Feature pair {pair}: teacher output shape {t_shape} and student output "
                        f"shape {s_shape} differ in more than the last (channel) axis; only the "
                        "width can be projected. Pick layers with the same spatial size."
                    )
                proj = self._k.layers.Dense(
                    t_shape[-1], use_bias=False, name=f"projection_{len(projections)}"
                )
                proj.build(s_shape)
                projection_of[pair] = len(projections)
                projections.append(proj)
        self.projections = projections
        self._projection_of = _Hidden(projection_of)

        # Metrics: one tracker per loss term, the total, and student accuracy.
        names = []
        for loss in self._distill_losses:
            name = loss.name
            i = 2
            while name in names or name in ("loss", "accuracy"):
                name = f"{loss.name}_{i}"
                i += 1
            names.append(name)
        self._loss_names = tuple(names)
        mean = self._k.metrics.Mean
        self._distill_trackers = [
            mean(name="loss"),
            *[mean(name=n) for n in names],
            mean(name="accuracy"),
        ]

    # ------------------------------------------------------------------ properties

    @property
    def losses_config(self) -> tuple[DistillationLoss, ...]:
        """The distillation losses in use."""
        return self._distill_losses

    @property
    def _k(self) -> Any:
        return _module_for(self._generation)

    @property
    def metrics(self) -> list[Any]:
        return list(self._distill_trackers)

    def _teacher_model(self) -> Any:
        return self.teacher if hasattr(self, "teacher") else self._hidden_teacher.value

    def _trained_weights(self) -> list[Any]:
        weights = list(self.student.trainable_weights)
        for proj in self.projections:
            weights.extend(proj.trainable_weights)
        return weights

    # ------------------------------------------------------------------ core

    def _run(self, runner: _Hidden, x: Any, training: bool, probabilities: bool):
        out = runner.value(x, training=training)
        if self._pairs:
            out = list(out)
            return _as_logits(out[0], probabilities), out[1:]
        return _as_logits(out, probabilities), []

    def _teacher_targets(self, x: Any, y: Any):
        """Returns (labels, teacher logits, teacher features by layer name)."""
        if isinstance(y, dict) and "teacher_logits" in y:
            feats = y.get("teacher_features", {}) or {}
            missing = [t for t, _ in self._pairs if t not in feats]
            if missing:
                raise DistillationError(
                    f"The cached teacher outputs have no features for layer(s) {missing}; "
                    "build the cache with this distiller's `cache_teacher`."
                )
            return y.get("y"), tf.cast(y["teacher_logits"], tf.float32), dict(feats)
        logits, feats = self._run(self._teacher_runner, x, False, self._teacher_probabilities)
        logits = tf.stop_gradient(logits)
        return (
            y,
            logits,
            {t: tf.stop_gradient(f) for (t, _), f in zip(self._pairs, feats, strict=True)},
        )

    def _compute(self, x: Any, y: Any, sample_weight: Any, training: bool):
        y, t_logits, t_feats = self._teacher_targets(x, y)
        s_logits, s_feats = self._run(
            self._student_runner, x, training, self._student_probabilities
        )
        features = {}
        for pair, s_feat in zip(self._pairs, s_feats, strict=True):
            idx = self._projection_of.value.get(pair)
            if idx is not None:
                s_feat = self.projections[idx](s_feat)
            features[pair] = (t_feats[pair[0]], s_feat)
        inputs = LossInputs(
            y=y, teacher_logits=t_logits, student_logits=s_logits, features=features
        )
        scaled_total = tf.constant(0.0)
        means = []
        for loss in self._distill_losses:
            if loss.needs_labels and y is None:
                raise DistillationError(
                    f"{type(loss).__name__} needs labels, but the data has none: pass `y` to fit "
                    "(or data as (x, y)), or leave that loss out (alpha=0)."
                )
            per_example = tf.cast(loss.per_example(inputs), tf.float32)
            # Averaged over the global batch: replicas' gradients are summed.
            scaled_total += loss.weight * tf.nn.compute_average_loss(
                per_example, sample_weight=sample_weight
            )
            means.append(tf.reduce_mean(per_example))
        reg = list(self.student.losses)
        if reg:
            scaled_total += tf.nn.scale_regularization_loss(tf.add_n(reg))
        total = tf.add_n([w.weight * m for w, m in zip(self._distill_losses, means, strict=True)])
        return scaled_total, total, means, y, s_logits

    def _update_metrics(self, total, means, y, s_logits) -> dict[str, Any]:
        self._distill_trackers[0].update_state(total)
        for tracker, value in zip(self._distill_trackers[1:-1], means, strict=True):
            tracker.update_state(value)
        if y is not None:
            labels = y
            if y.shape.rank == s_logits.shape.rank and y.shape[-1] == s_logits.shape[-1] != 1:
                labels = tf.argmax(y, axis=-1)
            labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
            hit = tf.cast(tf.equal(tf.argmax(s_logits, axis=-1), labels), tf.float32)
            self._distill_trackers[-1].update_state(tf.reduce_mean(hit))
        return {t.name: t.result() for t in self._distill_trackers}

    def _unpack(self, data: Any):
        return self._k.utils.unpack_x_y_sample_weight(data)

    def train_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = self._unpack(data)
        weights = self._trained_weights()
        with tf.GradientTape() as tape:
            scaled, total, means, y, s_logits = self._compute(x, y, sample_weight, True)
        grads = tape.gradient(scaled, weights)
        self._apply(grads, weights)
        return self._update_metrics(total, means, y, s_logits)

    def test_step(self, data: Any) -> dict[str, Any]:
        x, y, sample_weight = self._unpack(data)
        _, total, means, y, s_logits = self._compute(x, y, sample_weight, False)
        return self._update_metrics(total, means, y, s_logits)

    def call(self, inputs: Any, training: Any = None) -> Any:
        return self.student(inputs, training=training)

    def compile(
        self, optimizer: Any = "adam", loss: Any = None, metrics: Any = None, **kwargs: Any
    ):
        """Configures the optimizer; the losses are the distiller's own.

        Raises:
          DistillationError: `loss` or `metrics` were given (set losses with
            `Distiller(losses=...)`; loss terms and accuracy are reported).
        """
        if loss is not None:
            raise DistillationError(
                "Distiller.compile does not take `loss`: the distillation losses are set with "
                "Distiller(..., temperature=, alpha=, feature_layers=) or Distiller(..., losses=[...])."
            )
        if metrics:
            raise DistillationError(
                "Distiller.compile does not take `metrics`: it reports each loss term and the "
                "student's accuracy; evaluate `distiller.student` for other metrics."
            )
        return super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config: dict[str, Any]) -> None:
        # The base class skips models that override `compile`; ours takes the
        # same arguments, so the saved optimizer can be restored.
        config = self._k.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, *args: Any, callbacks: Any = None, **kwargs: Any):
        """Trains the student (see `keras.Model.fit`).

        Adds TF-MOT's `UpdatePruningStep` when the student is pruned and the
        callback is missing: without it the pruning wrappers fail at run time.
        """
        callbacks = list(callbacks or [])
        if _has_pruning(self.student):
            update = tfmot().sparsity.keras.UpdatePruningStep
            if not any(isinstance(cb, update) for cb in callbacks):
                callbacks.append(update())
        return super().fit(*args, callbacks=callbacks, **kwargs)

    # ------------------------------------------------------------------ cache

    def cache_teacher(
        self, x: np.ndarray, y: np.ndarray | None = None, *, batch_size: int = 256
    ) -> TeacherCache:
        """Runs the teacher once over `x` and keeps its outputs for training.

        Pass `cache.dataset(batch_size)` (or `x=cache.x, y=cache.targets()`) to
        `fit`: the teacher is then not run during training.

        Args:
          x: inputs, a NumPy array.
          y: labels, or None for unlabelled data.
          batch_size: batch size of the teacher's forward pass.

        Returns:
          A `TeacherCache`.

        Raises:
          DistillationError: `x` is not an array, or `y` has a different length.
        """
        return _cache_teacher(
            self._teacher_forward(), [t for t, _ in self._pairs], x, y, batch_size
        )

    def _teacher_forward(self):
        # One traced function per distiller: repeated caches reuse it.
        holder = getattr(self, "_forward_fn", None)
        if holder is None:

            @tf.function(reduce_retracing=True)
            def forward(batch):
                return self._run(self._teacher_runner, batch, False, self._teacher_probabilities)

            holder = self._forward_fn = _Hidden(forward)
        return holder.value

    # ------------------------------------------------------------------ serialization

    def get_config(self) -> dict[str, Any]:
        if not hasattr(self, "teacher"):
            raise DistillationError(
                f"This distiller's teacher is a {self._teacher_generation} model and its student a "
                f"{self._generation} model; only a distiller whose teacher and student are of the "
                "same Keras generation can be serialized. Save `distiller.student` on its own, or "
                "convert the teacher (e.g. tflight.to_tf_keras)."
            )
        serialize = self._k.saving.serialize_keras_object
        return {
            "name": self.name,
            "teacher": serialize(self.teacher),
            "student": serialize(self.student),
            "losses": [loss.get_config() for loss in self._distill_losses],
            "allow_smaller_teacher": self._allow_smaller_teacher,
        }

    @classmethod
    def _from_config(cls, config: dict[str, Any], module: Any):
        config = dict(config)
        deserialize = module.saving.deserialize_keras_object
        teacher = deserialize(config.pop("teacher"))
        student = deserialize(config.pop("student"))
        losses = [loss_from_config(c) for c in config.pop("losses")]
        return cls(
            teacher,
            student,
            losses=losses,
            allow_smaller_teacher=config.get("allow_smaller_teacher", False),
            name=config.get("name", "distiller"),
        )


# --------------------------------------------------------------------------- generations


@functools.cache
def _distiller_class(generation: str) -> type:
    """The `Distiller` of one Keras generation ("keras3" or "tf_keras"), made once.

    One class body for both: the generation picks the base `Model`, the
    serialization registry and the few calls that differ between Keras 3 and
    tf_keras (how the optimizer applies gradients, the frozen teacher's
    weights, TF-MOT's objects when loading).
    """
    k = _module_for(generation)
    keras3 = generation == "keras3"

    @k.saving.register_keras_serializable(package="tflight", name="Distiller")
    class _GenerationDistiller(Distiller, k.Model):
        __doc__ = f"The {generation} generation of `Distiller` (see there)."

        def __init__(
            self,
            teacher: Any,
            student: Any,
            *,
            temperature: float | None = None,
            alpha: float | None = None,
            feature_layers: Sequence[tuple[str, str]] | None = None,
            feature_weight: float | None = None,
            losses: Sequence[DistillationLoss] | None = None,
            allow_smaller_teacher: bool = False,
            name: str = "distiller",
            **kwargs: Any,
        ) -> None:
            if keras3 and keras.backend.backend() != "tensorflow":
                raise DistillationError(
                    "The Keras 3 Distiller needs the TensorFlow backend, got "
                    f"{keras.backend.backend()!r}; set KERAS_BACKEND=tensorflow."
                )
            super().__init__(name=name, **kwargs)
            self._setup(
                teacher,
                student,
                temperature=temperature,
                alpha=alpha,
                feature_layers=feature_layers,
                feature_weight=feature_weight,
                losses=losses,
                allow_smaller_teacher=allow_smaller_teacher,
            )
            self.built = True

        def _apply(self, grads: list[Any], weights: list[Any]) -> None:
            if keras3:
                self.optimizer.apply(grads, weights)
            else:
                self.optimizer.apply_gradients(zip(grads, weights, strict=True))

        def compile(
            self, optimizer: Any = "adam", loss: Any = None, metrics: Any = None, **kwargs: Any
        ):
            if keras3:
                kwargs.setdefault("jit_compile", False)
            return Distiller.compile(self, optimizer, loss, metrics, **kwargs)

        @property
        def trainable_weights(self) -> list[Any]:
            if not hasattr(self, "projections"):
                return super().trainable_weights
            return self._trained_weights()

        @property
        def trainable_variables(self) -> list[Any]:
            return self.trainable_weights

        if not keras3:

            @property
            def non_trainable_weights(self) -> list[Any]:
                if not hasattr(self, "projections"):
                    return super().non_trainable_weights
                # The frozen teacher's weights count as non-trainable here, so that
                # `weights` (and weight saving) still covers every variable.
                trained = {id(w) for w in self._trained_weights()}
                seen: set[int] = set()
                out = []
                for w in super().trainable_weights + super().non_trainable_weights:
                    if id(w) not in trained and id(w) not in seen:
                        seen.add(id(w))
                        out.append(w)
                return out

        @classmethod
        def from_config(cls, config: dict[str, Any], custom_objects: Any = None):
            # TF-MOT's wrappers must be known to tf_keras while the student loads.
            with contextlib.nullcontext() if keras3 else _io.tfmot_scope():
                return cls._from_config(config, k)

    _GenerationDistiller.__name__ = "Distiller"
    _GenerationDistiller.__qualname__ = "Distiller"
    return _GenerationDistiller


# A saved Keras 3 distiller loads with plain `keras.saving.load_model` once this
# module is imported (tf_keras's class is made, and registered, on first use).
_distiller_class("keras3")


# --------------------------------------------------------------------------- saving the student


