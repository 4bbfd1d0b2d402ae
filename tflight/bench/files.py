"""The user's files of a benchmark: the inputs it reads, the history and plot it writes.

Each is checked before anything is measured, so that a mistake costs nothing.
The inputs `.npz` is read with the project's one reader
(`converters.data.read_arrays`); the benchmark child reads the same file again
for the inputs themselves (it also runs under emulation, where only numpy and
LiteRT are installed).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from tflight._io import class_ids
from tflight.bench.results import InputDataError
from tflight.errors import BenchmarkError

__all__ = ["check_inputs", "check_output_path", "load_labels", "top1"]

_PLOT_SUFFIXES = (".png", ".svg", ".pdf")


def _read(path: str | os.PathLike) -> dict[str, np.ndarray]:
    from converters.data import read_arrays
    from converters.errors import RepresentativeDataError

    try:
        arrays = read_arrays(path, what="inputs")
    except RepresentativeDataError as e:
        if e.kind == "missing":
            raise InputDataError(
                f"inputs file {str(path)!r} does not exist", option="inputs", kind="missing"
            ) from None
        raise InputDataError(f"cannot read {str(path)!r} as an .npz file: {e.__cause__}") from e
    if isinstance(arrays, np.ndarray):
        raise InputDataError(f"cannot read {str(path)!r} as an .npz file: it holds one array")
    return arrays


def check_inputs(inputs: str | os.PathLike | None) -> str | None:
    """The inputs file's absolute path, once it is known to be a readable `.npz` of finite numbers.

    Raises:
      InputDataError: not an `.npz`, missing, unreadable, or a float array
        holds NaN or infinite values.
    """
    if inputs is None:
        return None
    p = Path(inputs)
    if p.suffix != ".npz":
        raise InputDataError(
            f"inputs must be an .npz file (arrays 'x' or 'x0', 'x1', ... and optional labels "
            f"'y'), got {str(inputs)!r}"
        )
    for key, a in _read(p).items():
        if np.issubdtype(a.dtype, np.floating) and not np.all(np.isfinite(a)):
            raise InputDataError(
                f"inputs file {str(inputs)!r}: array {key!r} holds NaN or infinite values "
                f"({int(np.sum(~np.isfinite(a)))} of {a.size}); replace them with real "
                "inputs or drop those samples.",
                option="inputs",
                kind="not_finite",
            )
    return str(p.resolve())


def load_labels(
    path: str | None, n: int, *, name: str, classes: int | None = None
) -> np.ndarray | None:
    """The labels `y` of the inputs file as class ids (`tflight._io.class_ids`), or None.

    With `classes` (the width of the model's first output), ids outside
    `[0, classes)` and one-hot rows of another width are refused.
    """
    if path is None:
        return None
    data = _read(path)
    if "y" not in data:
        return None
    y = np.asarray(data["y"])
    if y.ndim >= 1 and len(y) != n:
        raise InputDataError(
            f"labels 'y' in {name!r} hold {len(y)} entries but the inputs "
            f"hold {n} samples; give one label per sample"
        )
    return class_ids(
        y, n, classes=classes, what=f"labels 'y' in {name!r}", error=InputDataError
    )



def top1(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).argmax(axis=1) if a.ndim > 1 else a


def check_output_path(path: str | os.PathLike, *, option: str, plot: bool = False) -> None:
    """Refuses a history or plot path before anything is measured.

    The file's folder must exist and be writable, the file must not be a
    folder, and a plot's name must end in a format matplotlib writes.

    Args:
      path: the file to be written.
      option: how the caller names the argument, for the message (e.g. "--history").
      plot: the path is for `plot_latency_vs_size`.

    Raises:
      BenchmarkError: the path cannot be written; `option` names the argument.
    """
    path = os.fspath(path)
    p = Path(path)
    folder = p.parent
    if p.is_dir():
        raise BenchmarkError(f"{option} {path!r} is a folder; give a file name", option=option)
    if not folder.is_dir():
        raise BenchmarkError(
            f"{option}: the folder {str(folder)!r} does not exist; create it or choose another "
            "path",
            option=option,
        )
    if not os.access(folder, os.W_OK | os.X_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise BenchmarkError(
            f"{option}: {path!r} cannot be written (permission denied); choose another path",
            option=option,
        )
    if plot and p.suffix.lower() not in _PLOT_SUFFIXES:
        raise BenchmarkError(f"{option} {path!r} must end in .png, .svg or .pdf", option=option)
