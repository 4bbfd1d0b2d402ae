"""Representative and sample data: many forms in, one checked form out.

Calibration (for `int8` / `int16x8`) and validation both need sample inputs.
Users hold them as numpy arrays, `.npy` / `.npz` files, a `tf.data.Dataset` or
a generator; this module turns each into one list of arrays (one per model
input, samples along the first axis) and checks them against the model's
inputs, so that a shape or dtype mistake is reported before any conversion
work starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from converters.errors import RepresentativeDataError
from converters.source import InputSpec

__all__ = ["as_arrays", "random_inputs", "read_arrays"]


def as_arrays(
    data: Any,
    inputs: Sequence[InputSpec],
    *,
    what: str = "representative_data",
    max_samples: int | None = None,
) -> list[np.ndarray]:
    """Turns `data` into one array per model input, checked against `inputs`.

    Args:
      data: an array (one input), a list/tuple of arrays or a dict keyed by
        input name (several inputs), a `.npy` / `.npz` path, a
        `tf.data.Dataset`, or an iterable / generator (function) of samples or
        batches in any of the array forms.
      inputs: the model's inputs.
      what: the argument name, used in messages.
      max_samples: keep at most this many samples.

    Returns:
      A list with one array per input, all with the same number of samples.

    Raises:
      RepresentativeDataError: the data cannot be read or does not match the inputs.
    """
    if data is None:
        raise RepresentativeDataError.about(what, " is None.")
    if isinstance(data, (str, os.PathLike)):
        data = _load_file(Path(data), inputs, what)
    arrays = _collect(data, inputs, what, max_samples)
    return _check(arrays, inputs, what, max_samples)


def random_inputs(inputs: Sequence[InputSpec], n: int, *, seed: int = 0) -> list[np.ndarray]:
    """`n` random samples in the shapes of `inputs`, from `converters._random_inputs`.

    Floats are uniform in [-1, 1] (the distribution every random input of the
    project uses; see `converters._random_inputs.random_array`).
    """
    from converters._random_inputs import random_array

    rng = np.random.default_rng(seed)
    return [
        random_array(rng, (n, *[1 if d is None else d for d in spec.shape[1:]]), spec.dtype)
        for spec in inputs
    ]


def read_arrays(
    path: str | os.PathLike, *, what: str = "representative_data"
) -> np.ndarray | dict[str, np.ndarray]:
    """Reads a `.npy` file (its array) or an `.npz` file (its arrays by name, in file order).

    The one reader of the project's `.npy` / `.npz` data files: pickled
    objects are refused (a data file must not run code), every array is read
    at once and the file is closed. Callers check the arrays against what
    they need and word the errors in their own terms from `kind`.

    Args:
      path: the file.
      what: the argument the file was given as, for the error's `option`.

    Returns:
      The array of a `.npy` file, or a dict from name to array for `.npz`.

    Raises:
      RepresentativeDataError: `kind="missing"` if there is no such file,
        `kind="unreadable"` if numpy cannot read it (numpy's own error is the
        `__cause__`).
    """
    path = Path(path)
    if not path.is_file():
        raise RepresentativeDataError.about(
            what, f": no such file {str(path)!r}; pass a .npy or .npz file.", kind="missing"
        )
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except Exception as e:  # noqa: BLE001 - numpy raises several types for bad files
        raise RepresentativeDataError.about(
            what, f": {str(path)!r} is not a .npy/.npz file numpy can read ({e}).",
            kind="unreadable",
        ) from e


def _load_file(path: Path, inputs: Sequence[InputSpec], what: str) -> Any:
    loaded = read_arrays(path, what=what)
    if isinstance(loaded, np.ndarray):
        return loaded
    keys = list(loaded)
    names = [s.name for s in inputs]
    if not keys:
        raise RepresentativeDataError.about(what, f": {str(path)!r} holds no arrays.")
    if set(names) <= set(keys):
        return [loaded[n] for n in names]
    if len(keys) < len(inputs):
        raise RepresentativeDataError.about(
            what,
            f": {str(path)!r} holds {len(keys)} array(s) ({', '.join(keys)}) but the "
            f"model has {len(inputs)} inputs ({', '.join(names)}); store one array per input, "
            "named after the inputs or in input order.",
        )
    return [loaded[k] for k in keys[: len(inputs)]]


def _is_array_like(x: Any) -> bool:
    return isinstance(x, np.ndarray) or hasattr(x, "__array__") and hasattr(x, "shape")


def _as_list(item: Any, inputs: Sequence[InputSpec], what: str) -> list[Any] | None:
    """One sample or batch as a list in input order, or None if it is not one."""
    if isinstance(item, Mapping):
        names = [s.name for s in inputs]
        missing = [n for n in names if n not in item]
        if missing and len(item) == len(inputs):
            return list(item.values())
        if missing:
            raise RepresentativeDataError.about(
                what,
                f": a sample dict has keys {sorted(item)} but the model inputs are "
                f"{names}; missing: {missing}."
            )
        return [item[n] for n in names]
    if _is_array_like(item):
        return [item]
    if isinstance(item, (list, tuple)):
        if all(_is_array_like(x) for x in item):
            return list(item)
        if len(inputs) == 1:
            return [np.asarray(item)]
    return None


def _one_sample(a: np.ndarray, spec: InputSpec) -> bool:
    """Whether `a` is one sample of `spec` (its shape without the batch axis)."""
    want = spec.shape[1:]
    if a.ndim != len(want):
        return False
    return all(w is None or g == w for g, w in zip(a.shape, want, strict=True))


def _collect(
    data: Any, inputs: Sequence[InputSpec], what: str, max_samples: int | None
) -> list[np.ndarray]:
    direct = _as_list(data, inputs, what)
    if direct is not None:
        arrays = [np.asarray(a) for a in direct]
        # An array whose rank is one less than the input's is a single sample.
        if len(arrays) == len(inputs) and all(
            _one_sample(a, s) for a, s in zip(arrays, inputs, strict=False)
        ):
            arrays = [a[None] for a in arrays]
        return arrays
    if callable(data) and not hasattr(data, "__iter__"):
        try:
            data = data()
        except Exception as e:  # noqa: BLE001 - user code
            raise RepresentativeDataError.about(what, f": calling it raised {e!r}.") from e
    if not isinstance(data, Iterable):
        raise RepresentativeDataError.about(
            what,
            f" must be a numpy array, a list of arrays, a .npy/.npz path, a "
            f"tf.data.Dataset or a generator; got {type(data).__name__}."
        )
    parts: list[list[np.ndarray]] = [[] for _ in inputs]
    count = 0
    try:
        for item in data:
            if hasattr(item, "numpy") and not isinstance(item, np.ndarray):
                item = item.numpy()
            if isinstance(item, (list, tuple)):
                item = type(item)(x.numpy() if hasattr(x, "numpy") else x for x in item)
            if isinstance(item, Mapping):
                item = {k: (v.numpy() if hasattr(v, "numpy") else v) for k, v in item.items()}
            sample = _as_list(item, inputs, what)
            # (x, y) pairs from a labelled dataset: keep the features.
            if (
                sample is not None
                and len(inputs) == 1
                and len(sample) == 2
                and isinstance(item, tuple)
            ):
                sample = sample[:1]
            if sample is None or len(sample) != len(inputs):
                got = "?" if sample is None else len(sample)
                raise RepresentativeDataError.about(
                    what,
                    f": each element must hold {len(inputs)} array(s), one per model "
                    f"input ({', '.join(s.name for s in inputs)}); got {got} "
                    f"({type(item).__name__})."
                )
            batch = [np.asarray(a) for a in sample]
            if all(_one_sample(a, s) for a, s in zip(batch, inputs, strict=False)):
                batch = [a[None] for a in batch]
            for p, a in zip(parts, batch, strict=False):
                p.append(a)
            count += batch[0].shape[0] if batch[0].ndim else 1
            if max_samples is not None and count >= max_samples:
                break
    except RepresentativeDataError:
        raise
    except Exception as e:  # noqa: BLE001 - user iterables raise anything
        raise RepresentativeDataError.about(what, f": iterating over it raised {e!r}.") from e
    if count == 0:
        raise RepresentativeDataError.about(what, " yielded no samples.")
    try:
        return [np.concatenate(p, axis=0) for p in parts]
    except ValueError as e:
        raise RepresentativeDataError.about(
            what,
            f": the samples do not all have the same shape ({e})."
        ) from e


def _check(
    arrays: list[np.ndarray], inputs: Sequence[InputSpec], what: str, max_samples: int | None
) -> list[np.ndarray]:
    names = ", ".join(s.describe() for s in inputs)
    if len(arrays) != len(inputs):
        raise RepresentativeDataError.about(
            what,
            f" has {len(arrays)} array(s) but the model has {len(inputs)} input(s) "
            f"({names}); pass one array per input, in input order."
        )
    out = []
    n = None
    for a, spec in zip(arrays, inputs, strict=False):
        if a.ndim != len(spec.shape):
            want = tuple(spec.shape[1:])
            hint = ""
            if a.ndim == len(spec.shape) - 1 and tuple(a.shape[1:]) + (1,) == want:
                hint = " Add the channel axis: x[..., None]."
            raise RepresentativeDataError.about(
                what,
                f" for input {spec.name!r} has shape {a.shape} but the model expects "
                f"(samples, {', '.join('None' if d is None else str(d) for d in want)}).{hint}"
            )
        for axis, (got, want) in enumerate(zip(a.shape[1:], spec.shape[1:], strict=False), start=1):
            if want is not None and got != want:
                raise RepresentativeDataError.about(
                    what,
                    f" for input {spec.name!r} has shape {a.shape} but the model "
                    f"expects {spec.shape} (axis {axis}: got {got}, expected {want})."
                )
        if np.issubdtype(spec.dtype, np.floating):
            if not np.issubdtype(a.dtype, np.floating):
                raise RepresentativeDataError.about(
                    what,
                    f" for input {spec.name!r} has dtype {a.dtype} but the model expects "
                    f"{spec.dtype}; convert it to floats scaled the way the model was trained "
                    "(e.g. `x.astype('float32') / 255`)."
                )
            a = a.astype(spec.dtype, copy=False)
            if not np.all(np.isfinite(a)):
                raise RepresentativeDataError.about(
                    what,
                    f" for input {spec.name!r} contains NaN or infinite values."
                )
        elif np.issubdtype(spec.dtype, np.integer) or spec.dtype == np.bool_:
            if not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
                raise RepresentativeDataError.about(
                    what,
                    f" for input {spec.name!r} has dtype {a.dtype} but the model expects "
                    f"{spec.dtype}."
                )
            a = a.astype(spec.dtype, copy=False)
        else:
            raise RepresentativeDataError(
                f"Input {spec.name!r} has dtype {spec.dtype}, which conversion does not support."
            )
        if n is None:
            n = a.shape[0]
        elif a.shape[0] != n:
            raise RepresentativeDataError.about(
                what,
                f": the arrays have different numbers of samples ({n} and {a.shape[0]})."
            )
        out.append(a)
    if n == 0:
        raise RepresentativeDataError.about(what, " has no samples.")
    if max_samples is not None:
        out = [a[:max_samples] for a in out]
    return out
