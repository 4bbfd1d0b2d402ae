"""Reading the user's files: Keras model files, custom-object files, `.npz` data, labels.

One loader for each kind of file, shared by every command, so that a file one
command accepts is accepted by all of them, with the same messages. Errors
that are the user's (a missing file, a file that is not a model, data that
does not fit) are raised as the calling area's error class (`error=`), all
`TflightError`s. A failure that is not about the user's file -- a bug of ours
or of a library underneath -- is not disguised as one: it propagates, and the
command line reports it as an internal error.

The rules for telling which Keras generation wrote a model file are the same
as `converters.source`'s, so that `convert` accepts exactly the files that
`compress` and `distill` accept.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import sys
import traceback
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from tflight.errors import TflightError

__all__ = [
    "MODEL_SUFFIXES",
    "check_input_shape",
    "check_labels",
    "class_ids",
    "custom_objects_scope",
    "load_custom_objects",
    "load_model",
    "load_xy",
    "model_file_generation",
    "output_classes",
    "split_holdout",
    "tfmot_scope",
]

# Suffixes of Keras model files, as in `converters.source`.
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")

# Exception types with which Keras, h5py and zipfile say "this file cannot be
# read as a model". Anything else raised while loading (AttributeError,
# NameError, RuntimeError, ...) is a bug somewhere in the code, not a property
# of the user's file.
_FILE_PROBLEMS = (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile)

_PACKAGE_DIRS = tuple(
    str(Path(__file__).resolve().parent.parent / name) + os.sep for name in ("tflight", "converters")
)


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


def _raised_in_our_code(e: BaseException) -> bool:
    """Whether the innermost frame of `e`'s traceback is in tflight or converters."""
    tb = e.__traceback__
    last = None
    while tb is not None:
        last = tb
        tb = tb.tb_next
    if last is None:
        return False
    filename = os.path.realpath(last.tb_frame.f_code.co_filename)
    return filename.startswith(_PACKAGE_DIRS)


def _is_file_problem(e: BaseException) -> bool:
    return isinstance(e, _FILE_PROBLEMS) and not _raised_in_our_code(e)


def model_file_generation(
    path: str | os.PathLike[str], *, error: type[TflightError] = TflightError
) -> str:
    """`"keras3"` or `"tf_keras"`: the Keras generation that wrote a model file.

    The rules of `converters.source`: a `.keras` archive records its Keras
    version in `metadata.json` (no version: Keras 3); an `.h5`/`.hdf5` file
    records it in its `keras_version` attribute (3.x: Keras 3; 2.x or none:
    tf_keras) and must hold a model config, not only weights.

    Raises:
      error: the file is not a readable model file of its kind.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext == ".keras":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
                meta = json.loads(zf.read("metadata.json")) if "metadata.json" in names else {}
        except (zipfile.BadZipFile, OSError, ValueError) as e:
            raise error(
                f"{path!r} is not a readable .keras model file ({e}); a .keras file is the zip "
                "archive written by model.save('name.keras')."
            ) from e
        version = str(meta.get("keras_version", "3"))
        return "tf_keras" if version.startswith("2.") else "keras3"
    try:
        import h5py

        with h5py.File(path, "r") as f:
            version = f.attrs.get("keras_version", b"2")
            has_config = "model_config" in f.attrs
    except Exception as e:  # noqa: BLE001 - h5py raises OSError and others for non-HDF5 files
        raise error(f"{path!r} is not an HDF5 model file ({e}).") from e
    if not has_config:
        raise error(
            f"{path!r} is an HDF5 file without a model config (weights only?); save the whole "
            "model with model.save('name.h5')."
        )
    if isinstance(version, bytes):
        version = version.decode()
    return "keras3" if str(version).startswith("3.") else "tf_keras"


def load_model(
    path: str | os.PathLike[str],
    *,
    custom_objects: dict[str, Any] | None = None,
    error: type[TflightError] = TflightError,
) -> Any:
    """Loads a `.keras` or `.h5` model in the Keras generation that saved it.

    TF-MOT wrappers (pruned, QAT-wrapped, clustered) in tf_keras files are
    understood; `custom_objects` (see `load_custom_objects`) resolve the
    user's own layers.

    Args:
      path: the model file.
      custom_objects: names to classes/functions for the user's custom layers.
      error: the `TflightError` subclass to raise.

    Returns:
      The model, uncompiled.

    Raises:
      error: the path is missing or has another suffix, or the file cannot be
        read as a model (including a custom layer that is not known).
      Exception: any other failure while loading propagates unchanged: it is
        not a problem of the user's file.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in MODEL_SUFFIXES:
        raise error(
            f"Model file {path!r} must end in .keras or .h5, got {ext or 'no extension'!r}."
        )
    if not os.path.isfile(path):
        raise error(f"Model file {path!r} does not exist.")
    generation = model_file_generation(path, error=error)
    objects = dict(custom_objects or {})
    try:
        if generation == "keras3":
            import keras

            return keras.saving.load_model(path, custom_objects=objects or None, compile=False)
        from tflight._keras import tf_keras

        with tfmot_scope():
            return tf_keras().models.load_model(
                path, custom_objects=objects or None, compile=False
            )
    except Exception as e:
        if not _is_file_problem(e):
            raise
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        hint = ""
        if any(s in str(e) for s in ("Could not locate", "Unknown layer", "Unknown object")):
            hint = (
                " If the model uses custom layers, pass the Python file that defines them with "
                "--custom-objects my_layers.py."
            )
        raise error(f"Could not load a model from {path!r}: {first}{hint}") from e


def load_custom_objects(
    path: str | os.PathLike[str] | None, *, error: type[TflightError] = TflightError
) -> dict[str, Any]:
    """Imports the user's Python file of custom layers and returns what it defines.

    The file runs as a module: it may register its classes itself
    (`keras.saving.register_keras_serializable`, `tflight.bridge.register`).
    Every class and function it defines is returned by name, so that models
    saved without registration load too; a module-level `CUSTOM_OBJECTS` dict
    is added as given.

    Args:
      path: the `.py` file, or None (then nothing is imported).
      error: the `TflightError` subclass to raise.

    Returns:
      Names to objects, for `load_model(custom_objects=...)`.

    Raises:
      error: the file is missing, not a `.py` file, or raises on import (the
        message names the exception and the line of the user's file).
    """
    if path is None:
        return {}
    path = os.fspath(path)
    if not path.endswith(".py"):
        raise error(f"--custom-objects {path!r} must be a Python file ending in .py.")
    if not os.path.isfile(path):
        raise error(f"--custom-objects file {path!r} does not exist.")
    real = os.path.realpath(path)
    name = "tflight_user_objects_" + "".join(
        c if c.isalnum() else "_" for c in os.path.splitext(os.path.basename(real))[0]
    )
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise error(f"--custom-objects {path!r} cannot be imported as a Python module.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException as e:
        sys.modules.pop(name, None)
        if isinstance(e, (KeyboardInterrupt, SystemExit)):
            raise
        line = next(
            (f.lineno for f in reversed(traceback.extract_tb(e.__traceback__))
             if os.path.realpath(f.filename) == real),
            None,
        )
        where = f" (line {line})" if line else ""
        raise error(
            f"--custom-objects {path!r} failed to import{where}: {type(e).__name__}: {e}"
        ) from e
    objects = {
        key: value
        for key, value in vars(module).items()
        if not key.startswith("_")
        and (isinstance(value, type) or callable(value))
        and getattr(value, "__module__", None) == name
    }
    extra = getattr(module, "CUSTOM_OBJECTS", None)
    if extra is not None:
        if not isinstance(extra, dict):
            raise error(
                f"CUSTOM_OBJECTS in {path!r} must be a dict of names to classes, got "
                f"{type(extra).__name__}."
            )
        objects.update(extra)
    return objects


@contextlib.contextmanager
def custom_objects_scope(
    path: str | os.PathLike[str] | None, *, error: type[TflightError] = TflightError
) -> Iterator[dict[str, Any]]:
    """Imports the user's custom-objects file and makes its names known to both Kerases.

    For code that loads models through another loader (`converters.convert`
    on a path): inside the block, Keras 3 and tf_keras resolve the file's
    classes by name, registered or not.

    Example:
      >>> with custom_objects_scope("my_layers.py", error=ConversionError):
      ...     results = converters.convert_many("model.keras", ["fp32"])
    """
    objects = load_custom_objects(path, error=error)
    if not objects:
        yield objects
        return
    import keras

    from tflight._keras import tf_keras

    with keras.saving.custom_object_scope(objects), tf_keras().utils.custom_object_scope(objects):
        yield objects


def load_xy(
    path: str | os.PathLike[str],
    *,
    labels: bool,
    hint: str = "",
    error: type[TflightError] = TflightError,
    multi_input: bool = False,
) -> tuple[np.ndarray | list[np.ndarray], np.ndarray | None]:
    """Reads data from an `.npz` file with arrays `x` and (optionally) `y`.

    Args:
      path: the `.npz` file.
      labels: whether `y` is required.
      hint: appended to the message when `y` is missing (e.g. an option that
        makes labels unnecessary).
      error: the `TflightError` subclass to raise.
      multi_input: also accept `x0`, `x1`, ... (one array per model input, in
        the model's input order, as `convert -c` and `quantize --data` read).

    Returns:
      `x` as float32 of shape `(n, ...)` (with `multi_input` and `x0`, `x1`,
      ...: a list of such arrays with the same `n`), and `y` (class ids `(n,)`, a column
      `(n, 1)` or one-hot `(n, classes)`, as stored) or None.

    Raises:
      error: the file is missing or unreadable, the arrays do not fit, or
        they hold NaN or infinite values.
    """
    from converters.data import read_arrays
    from converters.errors import RepresentativeDataError

    path = os.fspath(path)
    try:
        arrays = read_arrays(path)
    except RepresentativeDataError as e:
        if e.kind == "missing":
            raise error(f"Data file {path!r} does not exist.") from None
        raise error(f"{path!r} is not a readable .npz file: {e.__cause__}") from e
    if isinstance(arrays, np.ndarray):
        raise error(
            f"{path!r} is not a readable .npz file: it holds a single array (a .npy file); save "
            "the inputs with np.savez(path, x=inputs, y=labels)."
        )
    if "x" in arrays:
        names = ["x"]
    elif multi_input and "x0" in arrays:
        names = []
        while f"x{len(names)}" in arrays:
            names.append(f"x{len(names)}")
    else:
        several = (
            " (or x0=first_input, x1=second_input, ... for a multi-input model)"
            if multi_input
            else ""
        )
        raise error(
            f"{path!r} has no array `x` (found: {sorted(arrays) or 'none'}); save the inputs "
            f"with np.savez(path, x=inputs, y=labels){several}."
        )
    y = arrays.get("y")
    xs = []
    for name in names:
        a = arrays[name]
        if a.ndim < 2 or not np.issubdtype(a.dtype, np.number):
            raise error(
                f"`{name}` in {path!r} must be a numeric array of shape (n, ...), got dtype "
                f"{a.dtype} and shape {a.shape}."
            )
        if len(a) == 0:
            raise error(f"`{name}` in {path!r} holds no examples.")
        if len(a) != len(arrays[names[0]]):
            raise error(
                f"`{name}` in {path!r} has {len(a)} examples but `{names[0]}` has "
                f"{len(arrays[names[0]])}; every input needs one row per example."
            )
        a = a.astype("float32")
        _check_finite(a, name, path, error)
        xs.append(a)
    x = xs[0]
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
    if y is not None and np.issubdtype(y.dtype, np.floating):
        _check_finite(y, "y", path, error)
    return (xs if names != ["x"] else x), y


def _check_finite(a: np.ndarray, name: str, path: str, error: type[TflightError]) -> None:
    bad = ~np.isfinite(a)
    if bad.any():
        rows = np.unique(np.nonzero(bad.reshape(len(a), -1))[0])
        raise error(
            f"`{name}` in {path!r} holds NaN or infinite values in {len(rows)} of {len(a)} "
            f"examples (first: index {int(rows[0])}); remove or fix those examples."
        )


def class_ids(
    y: Any,
    n: int,
    *,
    classes: int | None = None,
    what: str = "`y`",
    error: type[TflightError] = TflightError,
) -> np.ndarray:
    """Labels as int64 class ids `(n,)`, from ids `(n,)`, a column `(n, 1)` or one-hot.

    The one place labels are normalised: every command and `check_agreement`
    accept the same three forms with the same messages.

    Args:
      y: the labels.
      n: the number of samples they must label.
      classes: the model's number of classes; when given, ids must lie in
        `[0, classes)` and one-hot rows must have that width.
      what: how to name the labels in messages (e.g. "`y` in 'train.npz'").
      error: the `TflightError` subclass to raise.

    Raises:
      error: wrong shape, non-integer or negative ids, or ids out of range.
    """
    y = np.asarray(y)
    if not np.issubdtype(y.dtype, np.number) and y.dtype != np.bool_:
        raise error(f"{what} must be numeric class ids or one-hot rows, got dtype {y.dtype}.")
    if y.ndim == 2 and y.shape[1] > 1:
        if classes is not None and y.shape[1] != classes:
            raise error(
                f"{what} is one-hot with {y.shape[1]} columns, but the model outputs {classes} "
                f"classes; give one column per class, or class ids in [0, {classes})."
            )
        ids = y.argmax(axis=1)
    elif y.ndim in (1, 2):
        ids = y.reshape(-1)
    else:
        ids = y
    if ids.ndim != 1 or len(ids) != n:
        raise error(
            f"{what} must hold one label per sample ({n}): class ids (n,) or one-hot "
            f"(n, classes), got shape {y.shape}."
        )
    if np.issubdtype(ids.dtype, np.floating):
        if not np.all(np.isfinite(ids)) or not np.all(ids == np.round(ids)):
            raise error(f"{what} must hold whole-number class ids, got values such as {ids[:3]}.")
    ids = ids.astype("int64")
    if len(ids) and ids.min() < 0:
        raise error(f"{what} holds negative class ids (min {ids.min()}); ids start at 0.")
    if classes is not None and len(ids) and ids.max() >= classes:
        raise error(
            f"{what} holds class ids up to {ids.max()}, but the model outputs {classes} classes "
            f"(ids 0 to {classes - 1}); relabel the data or use a model with "
            f"{ids.max() + 1} outputs."
        )
    return ids


def output_classes(model: Any, *, role: str = "The model", error: type[TflightError]) -> int:
    """The width of a single-output classifier's output; refuses several outputs."""
    outputs = list(getattr(model, "outputs", None) or [])
    if len(outputs) != 1:
        names = ", ".join(
            repr(n) for n in (getattr(model, "output_names", None) or [])
        ) or "none"
        raise error(
            f"{role} {model.name!r} has {len(outputs)} outputs ({names}); this command trains "
            "classifiers with one output (class scores) and one label per example. Give it a "
            "single-output model, e.g. one head saved on its own."
        )
    shape = tuple(outputs[0].shape)
    if len(shape) != 2 or shape[1] is None:
        raise error(
            f"{role} {model.name!r} outputs shape {shape}; this command needs class scores of "
            "shape (batch, classes)."
        )
    return int(shape[1])


def check_labels(
    model: Any,
    y: np.ndarray,
    path: str,
    *,
    role: str = "The model",
    error: type[TflightError] = TflightError,
) -> np.ndarray:
    """Class ids of `y`, checked against a one-output classifier's width, before training."""
    classes = output_classes(model, role=role, error=error)
    return class_ids(y, len(y), classes=classes, what=f"`y` in {path!r}", error=error)


def split_holdout(
    x: np.ndarray, y: np.ndarray | None, fraction: float, *, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray | None]]:
    """Splits `(x, y)` into training and held-out parts at random (fixed seed).

    Returns:
      `((x_train, y_train), (x_held, y_held))`; the held-out part has
      `round(fraction * n)` examples, at least one when `fraction > 0`.
    """
    n = len(x)
    k = max(1, round(fraction * n)) if fraction > 0 else 0
    order = np.random.default_rng(seed).permutation(n)
    held, train = np.sort(order[:k]), np.sort(order[k:])
    y_train = None if y is None else y[train]
    y_held = None if y is None else y[held]
    return (x[train], y_train), (x[held], y_held)


def check_input_shape(
    model: Any,
    x: np.ndarray,
    path: str,
    *,
    role: str = "the model",
    error: type[TflightError] = TflightError,
) -> None:
    """Raises `error` unless the model has one input and the samples of `x` fit it."""
    inputs = list(getattr(model, "inputs", None) or [])
    if len(inputs) != 1:
        raise error(
            f"{role[0].upper() + role[1:]} {model.name!r} has {len(inputs)} inputs; this command "
            "reads one input array `x` from the .npz file, so it needs a single-input model."
        )
    expected = tuple(inputs[0].shape[1:])
    got = tuple(x.shape[1:])
    if len(expected) != len(got) or any(
        e is not None and e != g for e, g in zip(expected, got, strict=True)
    ):
        raise error(
            f"`x` in {path!r} has examples of shape {got}, but {role} takes {expected} "
            f"(model {model.name!r}; None = any); pass data of shape (n, *{expected})."
        )
