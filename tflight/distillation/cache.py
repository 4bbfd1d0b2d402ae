"""Teacher outputs computed once for a data set (`TeacherCache`), to train on without the teacher.

A large teacher costs a forward pass per batch per epoch; `_cache_teacher`
runs it once over the data, through the distiller's own traced forward pass,
and `TeacherCache.dataset` feeds the outputs to `Distiller.fit` in place of
the teacher.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tflight._keras import tf
from tflight.errors import DistillationError

__all__ = ["TeacherCache"]


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


def _cache_teacher(
    forward: Callable[[Any], tuple[Any, Sequence[Any]]],
    feature_layers: Sequence[str],
    x: np.ndarray,
    y: np.ndarray | None,
    batch_size: int,
) -> TeacherCache:
    """Runs `forward` (batch -> logits, features) over `x`; see `Distiller.cache_teacher`."""
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

    start = time.perf_counter()
    logits, feats = [], [[] for _ in feature_layers]
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
            t: np.concatenate(store) for t, store in zip(feature_layers, feats, strict=True)
        },
        seconds=seconds,
    )
