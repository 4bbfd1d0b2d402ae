"""Knowledge distillation: train a small student to imitate a large, frozen teacher.

`Distiller(teacher, student, ...)` is a Keras model that you `compile` and
`fit` like any other; `call` returns the student's output, and after training
`distiller.student` is exported on its own. One entry point serves both Keras
generations: a Keras 3 student gets a `keras.Model` subclass, a tf_keras
student (for example one that TF-MOT has pruned, QAT-wrapped or clustered)
gets a tf_keras `Model` subclass, so that distillation can run during the
compression fine-tune. The teacher may be of either generation.

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

import dataclasses
import functools
import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight import _io
from tflight._keras import is_keras3_model, is_tf_keras_model, keras, tf, tf_keras, tfmot
from tflight.distill.losses import (
    DistillationLoss,
    FeatureLoss,
    GroundTruthLoss,
    LossInputs,
    SoftTargetLoss,
    loss_from_config,
)
from tflight.errors import DistillationError

__all__ = [
    "Distiller",
    "TeacherCache",
    "DistillationResult",
    "distill",
    "load_distiller",
    "load_model",
]

_TFMOT_PREFIXES = ("prune_low_magnitude_", "quant_", "cluster_")
_EPS = 1e-7


# --------------------------------------------------------------------------- helpers


class _Hidden:
    """Holds an object out of sight of Keras' attribute tracking.

    A teacher of the other Keras generation is run as a plain TF function; it
    must not be tracked (its variables would count as the distiller's).
    """

    def __init__(self, value: Any) -> None:
        self.value = value


def _generation(model: Any) -> str | None:
    if is_keras3_model(model):
        return "keras3"
    if is_tf_keras_model(model):
        return "tf_keras"
    return None


def _module_for(generation: str):
    return keras if generation == "keras3" else tf_keras()


def _param_count(weights: Sequence[Any]) -> int:
    return int(sum(int(np.prod(w.shape)) for w in weights))


def _single_output(model: Any, role: str) -> None:
    outputs = getattr(model, "outputs", None)
    if outputs is not None and len(outputs) != 1:
        raise DistillationError(
            f"The {role} {model.name!r} has {len(outputs)} outputs; distillation needs a "
            "model with one output of class scores (logits)."
        )


def _inner(layer: Any) -> Any:
    # TF-MOT wrappers keep the original layer in `.layer`.
    return getattr(layer, "layer", layer)


def _outputs_probabilities(model: Any) -> bool:
    """True when the model's last layer applies a softmax (outputs are probabilities)."""
    layers = getattr(model, "layers", None)
    if not layers:
        return False
    last = _inner(layers[-1])
    if type(last).__name__ == "Softmax":
        return True
    act = getattr(last, "activation", None)
    name = getattr(act, "__name__", None) or getattr(act, "name", None)
    if name is None and act is not None:
        # QAT wraps the activation in an object that keeps the original.
        inner = getattr(act, "activation", None)
        name = getattr(inner, "__name__", None)
    return name == "softmax"


def _find_layer(model: Any, name: str, role: str) -> Any:
    by_name = {layer.name: layer for layer in model.layers}
    for candidate in (name, *(p + name for p in _TFMOT_PREFIXES)):
        if candidate in by_name:
            return by_name[candidate]
    names = sorted(by_name)
    shown = ", ".join(names[:20]) + (" ..." if len(names) > 20 else "")
    raise DistillationError(
        f"The {role} {model.name!r} has no layer named {name!r}; its layers are: {shown}."
    )


def _as_logits(outputs: tf.Tensor, probabilities: bool) -> tf.Tensor:
    outputs = tf.cast(outputs, tf.float32)
    if probabilities:
        # log-probabilities are logits up to a constant, which softmax ignores.
        return tf.math.log(tf.clip_by_value(outputs, _EPS, 1.0))
    return outputs


def _has_pruning(model: Any) -> bool:
    if not is_tf_keras_model(model):
        return False
    if not any(type(layer).__name__ == "PruneLowMagnitude" for layer in _all_layers(model)):
        return False
    return True


def _all_layers(model: Any) -> list[Any]:
    out = []
    for layer in getattr(model, "layers", []):
        out.append(layer)
        if hasattr(layer, "layers") and layer is not model:
            out.extend(_all_layers(layer))
    return out


# --------------------------------------------------------------------------- data classes


@dataclasses.dataclass(frozen=True)
class TeacherCache:
    """Teacher outputs computed once for a data set, to train on without the teacher.

    A large teacher costs a forward pass per batch per epoch; with the cache it
    runs once. The cache is only valid for exactly these inputs: with random
    data augmentation, run the teacher live instead.

    Attributes:
      x: the inputs.
      y: the labels, or None.
      teacher_logits: the teacher's outputs as logits, `(n, classes)`.
      teacher_features: the teacher's intermediate outputs by layer name, for
        the feature losses of the distiller that made the cache.
      seconds: how long the teacher took to compute it.
    """

    x: np.ndarray
    y: np.ndarray | None
    teacher_logits: np.ndarray
    teacher_features: dict[str, np.ndarray]
    seconds: float

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def targets(self) -> dict[str, Any]:
        """The `y` structure `Distiller.fit` understands: labels plus teacher outputs."""
        targets: dict[str, Any] = {
            "teacher_logits": self.teacher_logits,
            "teacher_features": dict(self.teacher_features),
        }
        if self.y is not None:
            targets["y"] = self.y
        return targets

    def dataset(
        self, batch_size: int = 32, *, shuffle: bool = True, seed: int | None = None
    ) -> tf.data.Dataset:
        """A `tf.data.Dataset` of `(x, targets)` batches to pass to `Distiller.fit`.

        Args:
          batch_size: examples per batch (the global batch under a strategy).
          shuffle: reshuffle the examples every epoch.
          seed: seed of the shuffle.
        """
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DistillationError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")
        ds = tf.data.Dataset.from_tensor_slices((self.x, self.targets()))
        if shuffle:
            ds = ds.shuffle(len(self), seed=seed, reshuffle_each_iteration=True)
        return ds.batch(batch_size).prefetch(tf.data.AUTOTUNE)


@dataclasses.dataclass(frozen=True)
class DistillationResult:
    """What `distill` returns: the trained student and how training went.

    Attributes:
      student: the trained student (the same object that was passed in).
      history: per-epoch metrics (`loss`, each loss term, `accuracy`, and the
        same with a `val_` prefix when validation data was given).
      epochs: epochs trained.
      seconds: wall time of training.
      cache_seconds: time spent computing the teacher cache (0 if not cached).
      cached: whether teacher outputs were cached.
      samples: training examples (None if unknown).
      validation_samples: examples of the validation data, or None.
    """

    student: Any
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    cache_seconds: float
    cached: bool
    samples: int | None = None
    validation_samples: int | None = None

    def summary(self, print_fn=print) -> None:
        """Prints a short report of the run, naming the data each figure comes from."""
        print_fn(
            f"Distilled {self.student.name!r} for {self.epochs} epoch(s) in {self.seconds:.1f} s"
            + (f" (teacher cached in {self.cache_seconds:.1f} s)" if self.cached else "")
        )
        last = {k: v[-1] for k, v in self.history.items() if v}
        train = {k: v for k, v in last.items() if not k.startswith("val_")}
        held = {k[4:]: v for k, v in last.items() if k.startswith("val_")}
        n = f"{self.samples} " if self.samples is not None else ""
        print_fn(f"  on the {n}training examples (last epoch, not held out):")
        for key, value in train.items():
            print_fn(f"    {key:<18} {value:.4f}")
        if held:
            m = f"{self.validation_samples} " if self.validation_samples is not None else ""
            print_fn(f"  on the {m}validation examples (not trained on):")
            for key, value in held.items():
                print_fn(f"    {key:<18} {value:.4f}")


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
            cls = _Keras3Distiller if generation == "keras3" else _tf_keras_distiller_class()
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
        if not isinstance(x, np.ndarray):
            raise DistillationError(
                f"cache_teacher needs `x` as a NumPy array, got {type(x).__name__}; "
                "for a tf.data pipeline run the teacher live instead."
            )
        if y is not None:
            y = np.asarray(y)
            if len(y) != len(x):
                raise DistillationError(
                    f"`x` has {len(x)} examples but `y` has {len(y)}; they must match."
                )
        if not isinstance(batch_size, int) or batch_size < 1:
            raise DistillationError(f"`batch_size` must be an integer >= 1, got {batch_size!r}.")

        forward = self._teacher_forward()
        start = time.perf_counter()
        logits, feats = [], [[] for _ in self._pairs]
        for i in range(0, len(x), batch_size):
            lo, fe = forward(tf.convert_to_tensor(x[i : i + batch_size]))
            logits.append(lo.numpy())
            for store, f in zip(feats, fe, strict=True):
                store.append(f.numpy())
        seconds = time.perf_counter() - start
        return TeacherCache(
            x=x,
            y=y,
            teacher_logits=np.concatenate(logits),
            teacher_features={
                t: np.concatenate(store) for (t, _), store in zip(self._pairs, feats, strict=True)
            },
            seconds=seconds,
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


def _resolve_losses(temperature, alpha, feature_layers, feature_weight, losses):
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


def _check_models(teacher: Any, student: Any, *, allow_smaller_teacher: bool) -> None:
    if _generation(teacher) is None:
        raise DistillationError(
            f"`teacher` must be a Keras 3 or tf_keras model, got {type(teacher).__name__}."
        )
    if teacher is student:
        raise DistillationError("`teacher` and `student` are the same model; pass two models.")
    if not getattr(student, "inputs", None) or not getattr(student, "outputs", None):
        raise DistillationError(
            f"The student {student.name!r} must be a Sequential or Functional model with a known "
            "input shape (start it with an Input layer)."
        )
    _single_output(teacher, "teacher")
    _single_output(student, "student")
    if not student.trainable_weights:
        raise DistillationError(
            f"The student {student.name!r} has no trainable weights (is `trainable` False?); "
            "distillation trains the student."
        )
    t_params = _param_count(teacher.weights)
    s_params = _param_count(student.trainable_weights)
    if t_params < s_params and not allow_smaller_teacher:
        raise DistillationError(
            f"The teacher {teacher.name!r} has {t_params:,} parameters, fewer than the "
            f"student {student.name!r}'s {s_params:,} trainable ones: are teacher and student "
            "swapped? The call is Distiller(teacher, student). Pass allow_smaller_teacher=True "
            "if this is intended."
        )
    s_in = tuple(student.inputs[0].shape)
    t_inputs = getattr(teacher, "inputs", None)
    if t_inputs:
        t_in = tuple(t_inputs[0].shape)
        if len(t_in) != len(s_in) or any(
            a is not None and b is not None and a != b
            for a, b in zip(t_in[1:], s_in[1:], strict=True)
        ):
            raise DistillationError(
                f"Teacher input shape {t_in} and student input shape {s_in} differ; both models "
                "must take the same inputs."
            )
    probe = np.zeros((1, *[d if d is not None else 1 for d in s_in[1:]]), dtype=np.float32)
    try:
        t_out = tuple(np.shape(teacher(probe, training=False)))
    except Exception as e:  # noqa: BLE001 - any failure means the teacher cannot take these inputs
        raise DistillationError(
            f"The teacher {teacher.name!r} cannot run on the student's input shape {s_in}: {e}"
        ) from e
    s_out = tuple(student.outputs[0].shape)
    if len(t_out) != len(s_out) or t_out[1:] != tuple(s_out[1:]):
        raise DistillationError(
            f"Teacher output shape {(None, *t_out[1:])} and student output shape {s_out} differ; "
            "both must output scores for the same classes."
        )


# --------------------------------------------------------------------------- generations


@keras.saving.register_keras_serializable(package="tflight", name="Distiller")
class _Keras3Distiller(Distiller, keras.Model):
    """The Keras 3 generation of `Distiller` (see there)."""

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
        if keras.backend.backend() != "tensorflow":
            raise DistillationError(
                f"The Keras 3 Distiller needs the TensorFlow backend, got {keras.backend.backend()!r}; "
                "set KERAS_BACKEND=tensorflow."
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

    def _apply(self, grads, weights) -> None:
        self.optimizer.apply(grads, weights)

    def compile(
        self, optimizer: Any = "adam", loss: Any = None, metrics: Any = None, **kwargs: Any
    ):
        kwargs.setdefault("jit_compile", False)
        return Distiller.compile(self, optimizer, loss, metrics, **kwargs)

    @property
    def trainable_weights(self) -> list[Any]:
        return (
            self._trained_weights() if hasattr(self, "projections") else super().trainable_weights
        )

    @property
    def trainable_variables(self) -> list[Any]:
        return self.trainable_weights

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None):
        return cls._from_config(config, keras)


@functools.cache
def _tf_keras_distiller_class() -> type:
    tfk = tf_keras()

    @tfk.saving.register_keras_serializable(package="tflight", name="Distiller")
    class _TfKerasDistiller(Distiller, tfk.Model):
        """The tf_keras generation of `Distiller` (see there)."""

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

        def _apply(self, grads, weights) -> None:
            self.optimizer.apply_gradients(zip(grads, weights, strict=True))

        @property
        def trainable_weights(self) -> list[Any]:
            if not hasattr(self, "projections"):
                return super().trainable_weights
            return self._trained_weights()

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
            with _io.tfmot_scope():
                return cls._from_config(config, tfk)

    _TfKerasDistiller.__name__ = "Distiller"
    _TfKerasDistiller.__qualname__ = "Distiller"
    return _TfKerasDistiller


_Keras3Distiller.__name__ = "Distiller"
_Keras3Distiller.__qualname__ = "Distiller"


# --------------------------------------------------------------------------- loading


def load_model(path: str | os.PathLike[str]) -> Any:
    """Loads a `.keras` or `.h5` model in the Keras generation that saved it.

    `.keras` files record their Keras version: 3.x loads in Keras 3, 2.x in
    tf_keras. `.h5` files load in tf_keras. TF-MOT wrappers (pruned,
    QAT-wrapped, clustered) are understood.

    Args:
      path: the model file.

    Returns:
      The model, uncompiled.

    Raises:
      DistillationError: the path is missing, has another extension, or the
        file cannot be read as a model.
    """
    return _io.load_model(path, error=DistillationError)


def load_distiller(path: str | os.PathLike[str]) -> Distiller:
    """Loads a `Distiller` saved with `distiller.save("....keras")`.

    The Keras generation is read from the file. Custom losses must be imported
    (defined) before loading. A distiller whose student is QAT-wrapped does not
    load back: TF-MOT's `QuantizeLayer` cannot reload from the `.keras` format
    (true of a plain QAT model too); keep such a run with `save_weights` /
    `load_weights` on a distiller built the same way.

    Raises:
      DistillationError: the file is missing, not a `.keras` file, or does not
        hold a distiller.
    """
    path = os.fspath(path)
    if not path.endswith(".keras"):
        raise DistillationError(f"A distiller is saved as a .keras file, got {path!r}.")
    if not os.path.isfile(path):
        raise DistillationError(f"Distiller file {path!r} does not exist.")
    generation = _io.model_file_generation(path, error=DistillationError)
    try:
        if generation == "keras3":
            model = keras.saving.load_model(path)
        else:
            _tf_keras_distiller_class()
            with _io.tfmot_scope():
                model = tf_keras().models.load_model(path)
    except DistillationError:
        raise
    except Exception as e:  # noqa: BLE001
        raise DistillationError(f"Could not load a distiller from {path!r}: {e}") from e
    if not isinstance(model, Distiller):
        raise DistillationError(f"{path!r} holds a {type(model).__name__}, not a Distiller.")
    return model


def _check_output_path(path: str | os.PathLike[str], student: Any = None) -> None:
    """Raises `DistillationError` unless `path` is a model suffix the student can be saved as."""
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".keras", ".h5"):
        raise DistillationError(f"Output path {path!r} must end in .keras or .h5.")
    if student is not None and ext == ".h5" and is_keras3_model(student):
        raise DistillationError(
            f"Output path {path!r}: a Keras 3 model is saved as .keras, not .h5."
        )


def _save_atomic(model: Any, path: str) -> None:
    """Saves `model` to `path` in one step (see `tflight._files.save_model`)."""
    from tflight._files import save_model

    save_model(model, path, error=DistillationError)


# --------------------------------------------------------------------------- one call


def distill(
    teacher: Any,
    student: Any,
    x: np.ndarray,
    y: np.ndarray | None = None,
    *,
    epochs: int = 5,
    batch_size: int = 32,
    temperature: float | None = None,
    alpha: float | None = None,
    feature_layers: Sequence[tuple[str, str]] | None = None,
    feature_weight: float | None = None,
    losses: Sequence[DistillationLoss] | None = None,
    optimizer: Any = None,
    learning_rate: float = 1e-3,
    cache: bool = True,
    validation_data: tuple[np.ndarray, np.ndarray] | None = None,
    callbacks: Sequence[Any] | None = None,
    seed: int | None = None,
) -> DistillationResult:
    """Distils `teacher` into `student` on arrays and returns the trained student.

    A shortcut over `Distiller`: builds it, compiles it with Adam, caches the
    teacher's outputs (unless `cache=False`) and fits.

    Args:
      teacher: the trained teacher.
      student: the student to train (trained in place).
      x: training inputs.
      y: training labels (sparse or one-hot), or None.
      epochs: epochs, >= 1.
      batch_size: batch size, >= 1.
      temperature, alpha, feature_layers, feature_weight, losses: as in
        `Distiller`.
      optimizer: an optimizer of the student's Keras generation; Adam with
        `learning_rate` when None.
      learning_rate: Adam's learning rate when `optimizer` is None.
      cache: run the teacher once over `x` instead of every epoch.
      validation_data: `(x_val, y_val)` evaluated after each epoch.
      callbacks: extra Keras callbacks (e.g. progress output).
      seed: seed of the shuffle.

    Returns:
      A `DistillationResult`.

    Raises:
      DistillationError: invalid arguments (see `Distiller`).
    """
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise DistillationError(f"`{name}` must be an integer >= 1, got {value!r}.")
    distiller = Distiller(
        teacher,
        student,
        temperature=temperature,
        alpha=alpha,
        feature_layers=feature_layers,
        feature_weight=feature_weight,
        losses=losses,
    )
    k = _module_for(_generation(student))
    distiller.compile(optimizer=optimizer or k.optimizers.Adam(learning_rate))
    cache_seconds = 0.0
    start = time.perf_counter()
    if cache:
        cached = distiller.cache_teacher(x, y)
        cache_seconds = cached.seconds
        history = distiller.fit(
            cached.dataset(batch_size, seed=seed),
            # The dataset shuffles itself every epoch; Keras would warn that it
            # ignores its own shuffle for a dataset.
            shuffle=False,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=list(callbacks or []),
            verbose=0,
        )
    else:
        history = distiller.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            validation_data=validation_data,
            callbacks=list(callbacks or []),
            verbose=0,
        )
    seconds = time.perf_counter() - start
    return DistillationResult(
        student=student,
        history={k_: [float(v) for v in vs] for k_, vs in history.history.items()},
        epochs=epochs,
        seconds=seconds,
        cache_seconds=cache_seconds,
        cached=cache,
        samples=len(x),
        validation_samples=None if validation_data is None else len(validation_data[0]),
    )
