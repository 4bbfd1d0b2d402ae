"""Reading the user's files: Keras model files and `.npz` training data.

One loader for each kind of file, shared by every command, so that a file one
command accepts is accepted by all of them, with the same messages. Errors are
raised as the calling area's error class (`error=`), all `TflightError`s.
"""

from __future__ import annotations

import contextlib
import json
import os
import zipfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from tflight.errors import TflightError

__all__ = ["check_input_shape", "load_model", "load_xy", "tfmot_scope"]


@contextlib.contextmanager
def tfmot_scope() -> Iterator[None]:
    """Custom-object scopes for models wrapped by TF-MOT (tf_keras only)."""
    from tflight._keras import tfmot

    mot = tfmot()
    with contextlib.ExitStack() as stack:
        stack.enter_context(mot.sparsity.keras.prune_scope())
        stack.enter_context(mot.quantization.keras.quantize_scope())
        stack.enter_context(mot.clustering.keras.cluster_scope())
        yield


def _keras_file_generation(path: str, error: type[TflightError]) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            meta = json.loads(zf.read("metadata.json"))
    except (zipfile.BadZipFile, KeyError, json.JSONDecodeError, OSError) as e:
        raise error(f"{path!r} is not a readable .keras model file: {e}") from e
    version = str(meta.get("keras_version", ""))
    return "keras3" if version.startswith("3.") else "tf_keras"


def load_model(path: str | os.PathLike[str], *, error: type[TflightError] = TflightError) -> Any:
    """Loads a `.keras` or `.h5` model in the Keras generation that saved it.

    `.keras` files record their Keras version: 3.x loads in Keras 3, 2.x in
    tf_keras. `.h5` files load in tf_keras. TF-MOT wrappers (pruned,
    QAT-wrapped, clustered) are understood.

    Args:
      path: the model file.
      error: the `TflightError` subclass to raise.

    Returns:
      The model, uncompiled.

    Raises:
      error: the path is missing, has another extension, or the file cannot be
        read as a model.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".keras", ".h5"):
        raise error(
            f"Model file {path!r} must end in .keras or .h5, got {ext or 'no extension'!r}."
        )
    if not os.path.isfile(path):
        raise error(f"Model file {path!r} does not exist.")
    generation = _keras_file_generation(path, error) if ext == ".keras" else "tf_keras"
    try:
        if generation == "keras3":
            import keras

            return keras.saving.load_model(path, compile=False)
        from tflight._keras import tf_keras

        with tfmot_scope():
            return tf_keras().models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - report any load failure as the user's file problem
        raise error(f"Could not load a model from {path!r}: {e}") from e


def load_xy(
    path: str | os.PathLike[str],
    *,
    labels: bool,
    hint: str = "",
    error: type[TflightError] = TflightError,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Reads training data from an `.npz` file with arrays `x` and (optionally) `y`.

    Args:
      path: the `.npz` file.
      labels: whether `y` is required.
      hint: appended to the message when `y` is missing (e.g. an option that
        makes labels unnecessary).
      error: the `TflightError` subclass to raise.

    Returns:
      `x` as float32 of shape `(n, ...)`, and `y` (integer labels `(n,)` or
      one-hot `(n, classes)`) or None.

    Raises:
      error: the file is missing or unreadable, or the arrays do not fit.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise error(f"Data file {path!r} does not exist.")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except Exception as e:  # noqa: BLE001 - any read failure is a bad data file
        raise error(f"{path!r} is not a readable .npz file: {e}") from e
    if "x" not in arrays:
        raise error(
            f"{path!r} has no array `x` (found: {sorted(arrays) or 'none'}); save the inputs "
            "with np.savez(path, x=inputs, y=labels)."
        )
    x, y = arrays["x"], arrays.get("y")
    if x.ndim < 2 or not np.issubdtype(x.dtype, np.number):
        raise error(
            f"`x` in {path!r} must be a numeric array of shape (n, ...), got dtype {x.dtype} "
            f"and shape {x.shape}."
        )
    if y is None and labels:
        raise error(
            f"{path!r} has no array `y` (labels); add labels with "
            f"np.savez(path, x=inputs, y=labels){hint}."
        )
    if y is not None and (
        y.ndim not in (1, 2) or len(y) != len(x) or not np.issubdtype(y.dtype, np.number)
    ):
        raise error(
            f"`y` in {path!r} must be integer labels (n,) or one-hot (n, classes) for the "
            f"{len(x)} examples of `x`, got dtype {y.dtype} and shape {y.shape}."
        )
    return x.astype("float32"), y


def check_input_shape(
    model: Any,
    x: np.ndarray,
    path: str,
    *,
    role: str = "the model",
    error: type[TflightError] = TflightError,
) -> None:
    """Raises `error` unless the samples of `x` fit the model's (first) input."""
    expected = tuple(model.inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=True)
    ):
        raise error(
            f"`x` in {path!r} has examples of shape {got}, but {role} takes {expected} "
            f"(model {model.name!r}; None = any); pass data of shape (n, *{expected})."
        )
