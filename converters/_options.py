"""Checking the arguments of a conversion call: modes, I/O dtypes, thresholds.

Everything here runs before the model is loaded, so that a misspelt mode or
dtype costs nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from converters.errors import ConversionError
from converters.modes import Mode, parse_mode
from converters.validate import Thresholds, default_thresholds

__all__ = ["IO_DTYPES", "parse_modes", "io_dtype", "resolve_thresholds"]

IO_DTYPES = {
    Mode.FP32: ("float32",),
    Mode.FP16: ("float32",),
    Mode.DYNAMIC: ("float32",),
    Mode.INT8: ("float32", "int8", "uint8"),
    Mode.INT16X8: ("float32", "int16"),
}



def parse_modes(modes: Mode | str | Iterable[Mode | str]) -> list[Mode]:
    if isinstance(modes, str):
        items: list[Any] = [m for m in modes.split(",") if m.strip()]
    else:
        items = list(modes)
    out: list[Mode] = []
    for m in items:
        mode = parse_mode(m)
        if mode not in out:
            out.append(mode)
    if not out:
        raise ConversionError("No conversion mode given; pass at least one of: "
                              + ", ".join(m.value for m in Mode) + ".")
    return out


def io_dtype(mode: Mode, value: Any, which: str, *, default: str, lenient: bool) -> str:
    if value is None:
        wanted = default if default in IO_DTYPES[mode] else "float32"
    else:
        try:
            wanted = np.dtype(getattr(value, "as_numpy_dtype", value)).name
        except TypeError:
            raise ConversionError.about(which, f" must be a dtype name, got {value!r}.") from None
    if wanted not in IO_DTYPES[mode]:
        if lenient and mode in (Mode.FP32, Mode.FP16, Mode.DYNAMIC):
            return "float32"
        raise ConversionError.about(
            which,
            f"={wanted!r} does not fit mode {mode.value!r}, whose "
            f"{which.split('_')[0]}s can be: {', '.join(IO_DTYPES[mode])}.",
        )
    return wanted


def resolve_thresholds(thresholds: Any, mode: Mode) -> Thresholds:
    if thresholds is None:
        return default_thresholds(mode)
    if isinstance(thresholds, Thresholds):
        return thresholds
    if isinstance(thresholds, Mapping):
        value = thresholds.get(mode, thresholds.get(mode.value))
        if value is None:
            return default_thresholds(mode)
        if isinstance(value, Thresholds):
            return value
        if isinstance(value, Mapping):
            try:
                return Thresholds(**value)
            except TypeError as e:
                raise ConversionError.about(
                    "thresholds",
                    f" for {mode.value!r}: {e}; the fields are min_snr_db, min_top1 and "
                    "max_abs_error.",
                ) from None
    raise ConversionError.about(
        "thresholds",
        " must be None, a converters.Thresholds, or a dict from mode to Thresholds; got "
        f"{type(thresholds).__name__}.",
    )
