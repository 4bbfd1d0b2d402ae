"""Small real data sets that ship with the installed packages (no downloads)."""

from __future__ import annotations

import dataclasses

import numpy as np

__all__ = ["Split", "load_digits"]


@dataclasses.dataclass(frozen=True)
class Split:
    """A train/test split of an image classification set (NHWC, float32 in [0, 1])."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_digits(*, test_fraction: float = 0.25, seed: int = 0) -> Split:
    """Loads scikit-learn's bundled handwritten digits as 8x8x1 images.

    1,797 real 8x8 grey-scale images of the digits 0-9 that ship inside the
    scikit-learn wheel, so this works offline. The split is stratified and
    fixed by `seed`.

    Args:
      test_fraction: share of the images held out for testing, in (0, 1).
      seed: seed of the shuffle.

    Returns:
      A `Split` with `x_*` of shape `(n, 8, 8, 1)`, float32 in [0, 1], and
      integer labels `y_*`.

    Example:
      >>> data = load_digits()
      >>> data.x_train.shape
      (1347, 8, 8, 1)
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must be in (0, 1), got {test_fraction!r}.")
    from sklearn.datasets import load_digits as _load

    bunch = _load()
    x = (bunch.images.astype(np.float32) / 16.0)[..., None]
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for label in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == label))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    train = rng.permutation(np.concatenate(train_idx))
    test = rng.permutation(np.concatenate(test_idx))
    return Split(x[train], y[train], x[test], y[test], num_classes=int(y.max()) + 1)
