"""`distill`: the one call that builds a `Distiller`, caches the teacher and fits the student."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from tflight.distillation.distiller import Distiller
from tflight.distillation.losses import DistillationLoss
from tflight.distillation.models import _generation, _module_for
from tflight.distillation.result import DistillationResult
from tflight.errors import DistillationError

__all__ = ["distill"]


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
