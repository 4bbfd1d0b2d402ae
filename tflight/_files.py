"""Writing the user's output files: one atomic writer for Keras model files.

Every stage that hands the user a Keras model file (`tflight distill`,
`tflight shrink`, ...) saves it through `save_model`, so that a failure at any
point leaves nothing at the path (or the previous file untouched), the file
gets the permissions a plain `open()` would give it, and the error raised is
the calling stage's (`error=`), not another stage's.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

from tflight._keras import is_keras3_model
from tflight.errors import TflightError

__all__ = ["MODEL_FILE_SUFFIXES", "check_model_path", "save_model"]

MODEL_FILE_SUFFIXES = (".keras", ".h5")


def check_model_path(
    path: str | os.PathLike[str],
    model: Any = None,
    *,
    option: str | None = None,
    error: type[TflightError] = TflightError,
) -> None:
    """Raises `error` unless `path` ends in a suffix `model` can be saved as.

    Args:
      path: the output path.
      model: the model to be saved there, if known (a Keras 3 model cannot be
        saved as .h5).
      option: the argument that named the path, set on the error.
      error: the `TflightError` class to raise.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in MODEL_FILE_SUFFIXES:
        raise error(
            f"Output path {path!r} must end in .keras or .h5.",
            option=option,
            fix="give a path ending in .keras (or .h5 for a tf_keras model)",
            kind="bad_output_path",
        )
    if model is not None and ext == ".h5" and is_keras3_model(model):
        raise error(
            f"Output path {path!r}: a Keras 3 model is saved as .keras, not .h5.",
            option=option,
            fix="give a path ending in .keras",
            kind="bad_output_path",
        )


def save_model(
    model: Any,
    path: str | os.PathLike[str],
    *,
    option: str | None = None,
    error: type[TflightError] = TflightError,
) -> str:
    """Saves a Keras model (Keras 3 or tf_keras) to `path` in one step.

    Keras writes the file in a private temporary folder; its bytes then go
    through `converters.files.write_atomic` (a temporary file next to `path`
    and a rename), so a reader never sees a half-written model.

    Args:
      model: the model to save.
      path: a `.keras` (or, for tf_keras, `.h5`) path.
      option: the argument that named the path, set on errors.
      error: the `TflightError` class raised for a path that cannot be written.

    Returns:
      `path` as a string.

    Raises:
      TflightError (`error`): a bad suffix, or the file cannot be written.
    """
    from converters.files import write_atomic

    path = os.fspath(path)
    check_model_path(path, model, option=option, error=error)
    ext = os.path.splitext(path)[1].lower()
    with tempfile.TemporaryDirectory(prefix="tflight-save-") as tmp:
        staged = os.path.join(tmp, "model" + ext)
        model.save(staged)
        with open(staged, "rb") as f:
            data = f.read()
    write_atomic(path, data, error=error)
    return path
