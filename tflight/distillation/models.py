"""What the distiller needs to know about the teacher and the student.

Which Keras generation each model is (`_generation`, and `_module_for` the
`keras` / `tf_keras` module that goes with it), whether it outputs
probabilities or logits, its layers through TF-MOT's wrappers, and whether the
two models can be distilled at all (`_check_models`: shapes, roles, outputs).
`_as_logits` turns a model's outputs into logits, `_check_output_path` says
whether a student can be saved at a path, and `load_model` loads a model file
in the generation that saved it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight import _io
from tflight._keras import is_keras3_model, is_tf_keras_model, keras, tf, tf_keras
from tflight.errors import DistillationError

__all__ = ["load_model"]

_TFMOT_PREFIXES = ("prune_low_magnitude_", "quant_", "cluster_")
_EPS = 1e-7


def _generation(model: Any) -> str | None:
    """"keras3", "tf_keras", or None for an object that is neither kind of model."""
    if is_keras3_model(model):
        return "keras3"
    if is_tf_keras_model(model):
        return "tf_keras"
    return None


def _module_for(generation: str) -> Any:
    """The `keras` or `tf_keras` module of a generation named by `_generation`."""
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
