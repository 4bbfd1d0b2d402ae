"""The user's samples for a precision analysis: checked, split, and kept apart.

Inputs are one float32 array per model input (`Data`), samples along the first
axis. Calibration (activation ranges) uses its own samples, never the ones
the accuracy is measured on: `_split` holds part of the validation data out
for it, or `_check_disjoint` refuses separate calibration data that shares
samples with them.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from tflight.errors import PrecisionError

__all__: list[str] = []

_MAX_CALIBRATION = 500

Data = list  # one float32 array per model input, samples along the first axis


def _n(xs: Data) -> int:
    return len(xs[0])


def _take(xs: Data, idx: Any) -> Data:
    return [a[idx] for a in xs]


def _check_array(
    x: Any, what: str, shape: tuple[int, ...], source: str, option: str | None = None
) -> np.ndarray:
    """`x` as float32 samples of `shape`, or one clear error about `what` (argument `option`)."""
    try:
        a = np.asarray(x)
    except Exception as e:  # noqa: BLE001
        raise PrecisionError(f"{what} is not an array: {e}", option=option,
                             kind="bad_data") from e
    if a.dtype == object or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        raise PrecisionError(
            f"{what} must be a numeric array of shape (n, *{shape}), got dtype "
            f"{a.dtype}; pass float inputs like the float model's.", option=option, kind="bad_data",
        )
    got = tuple(a.shape[1:])
    if a.ndim < 1 or len(got) != len(shape) or any(
        e != -1 and e != g for e, g in zip(shape, got, strict=True)
    ):
        raise PrecisionError(
            f"{what} has samples of shape {got}, but {source} takes "
            f"{shape} (-1 = any); pass an array of shape (n, *{shape}).",
            option=option, kind="bad_shape",
        )
    if len(a) == 0:
        raise PrecisionError(f"{what} is empty; pass at least one sample.", option=option,
                             kind="bad_data")
    return a.astype(np.float32)


def _labels(y: Any, n: int, what: str, option: str = "y") -> np.ndarray | None:
    """Integer class ids of `n` samples from integer or one-hot labels (None stays None)."""
    if y is None:
        return None
    a = np.asarray(y)
    if a.ndim == 2:
        a = a.argmax(-1)
    if a.ndim != 1 or len(a) != n or not np.issubdtype(a.dtype, np.number):
        raise PrecisionError(
            f"{what} must be integer labels (n,) or one-hot (n, classes) for the {n} samples, "
            f"got dtype {a.dtype} and shape {np.shape(y)}.",
            option=option, kind="bad_labels",
        )
    return a.astype(np.int64)


def _row_hashes(xs: Data) -> set[bytes]:
    out = set()
    for i in range(_n(xs)):
        h = hashlib.blake2b(digest_size=12)
        for a in xs:
            h.update(a[i].tobytes())
        out.add(h.digest())
    return out


def _check_disjoint(calibration: Data, x: Data, what: str) -> None:
    shared = len(_row_hashes(calibration) & _row_hashes(x))
    if shared:
        reason = (f"{shared} sample(s) of the calibration data are also in {what}; the accuracy "
                  "drop must be measured on samples the calibration did not see.")
        fix = ("Pass separate data, or leave calibration_data=None to hold part of the "
               "validation data out for it.")
        raise PrecisionError(f"{reason} {fix}", option="calibration_data", fix=fix,
                             kind="calibration_overlap", reason=reason)


def _n_calibration(n: int) -> int:
    """Validation samples held out for calibration when no calibration data is given."""
    return min(_MAX_CALIBRATION, max(1, n // 4))


def _split(
    fm: Any,
    x: Any,
    y: Any,
    calibration_data: Any,
    *,
    parts: int,
    seed: int,
) -> tuple[Data, list[tuple[Data, np.ndarray | None]], str]:
    """Checks the data against the float model `fm`; splits it into calibration and `parts`."""
    x = fm.check(x, "the validation data `x`", option="x")
    n = _n(x)
    y = _labels(y, n, "the validation labels `y`")
    order = np.random.default_rng(seed).permutation(n)
    x = _take(x, order)
    y = None if y is None else y[order]
    if calibration_data is None:
        n_cal = _n_calibration(n)
        if n - n_cal < 2 * parts:
            reason = (f"{n} validation samples are too few to hold {n_cal} out for calibration "
                      "and still evaluate;")
            fix = "pass more samples or separate calibration_data."
            raise PrecisionError(f"{reason} {fix}", option="x", fix=fix,
                                 kind="too_few_samples", reason=reason)
        calibration = _take(x, slice(0, n_cal))
        x = _take(x, slice(n_cal, None))
        y = None if y is None else y[n_cal:]
        how = f"held out {n_cal} of the validation samples for calibration"
    else:
        calibration = _take(fm.check(calibration_data, "`calibration_data`",
                                     option="calibration_data"),
                            slice(0, _MAX_CALIBRATION))
        _check_disjoint(calibration, x, "the validation data")
        how = f"{_n(calibration)} separate calibration samples"
    bounds = np.linspace(0, _n(x), parts + 1).astype(int)
    if np.any(np.diff(bounds) == 0):
        raise PrecisionError(f"{_n(x)} validation samples are too few to split in {parts}.",
                             option="x", kind="too_few_to_split")
    pieces = [(_take(x, slice(a, b)), None if y is None else y[a:b]) for a, b in
              zip(bounds[:-1], bounds[1:], strict=True)]
    return calibration, pieces, how


def _pair(test_data: Any) -> tuple[Any, Any]:
    """`(x, y)` from `test_data`: a 2-tuple is (inputs, labels); anything else is inputs."""
    if isinstance(test_data, tuple) and len(test_data) == 2:
        return test_data
    return test_data, None
