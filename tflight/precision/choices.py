"""The precisions a layer can take: the `Precision` words, what each stores, how to read them.

A "layer" is a TFLite op with a constant weight tensor; every other op belongs
to one more group, `OTHER_OPS`, which follows its own precision (float,
int16x8 or int8). This module owns those words and the weight type each one
stores in the file, so that the recipes, the sensitivity and the search name
them the same way.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

from tflight.errors import PrecisionError

__all__ = ["OTHER_OPS", "Precision"]

OTHER_OPS = "other ops"


class Precision(enum.StrEnum):
    """Per-layer precisions; the values are the CLI words.

    - `float`: left as it is (float32).
    - `fp16`: float16 weights, float compute (litert-quantizer's float casting).
    - `int16x8`: int16 activations, int8 per-channel weights (static).
    - `int8`: int8 activations, int8 per-channel weights (static).
    - `int4`: int8 activations, int4 per-channel weights (static, packed 2 per byte).
    - `int4-block`: float activations quantized at run time, int4 weights with a
      scale per block of 32 (dynamic).
    """

    FLOAT = "float"
    FP16 = "fp16"
    INT16X8 = "int16x8"
    INT8 = "int8"
    INT4 = "int4"
    INT4_BLOCK = "int4-block"


_OTHER_CHOICES = (Precision.FLOAT, Precision.INT16X8, Precision.INT8)

# TFLite TensorType codes of stored weights, and what each precision stores.
_FLOAT32, _FLOAT16, _INT8, _INT4 = 0, 1, 9, 17
_STORED = {
    Precision.FLOAT: _FLOAT32,
    Precision.FP16: _FLOAT16,
    Precision.INT16X8: _INT8,
    Precision.INT8: _INT8,
    Precision.INT4: _INT4,
    Precision.INT4_BLOCK: _INT4,
}
_TYPE_NAMES = {_FLOAT32: "float32", _FLOAT16: "float16", _INT8: "int8", _INT4: "int4"}


def _precisions(values: Any, what: str) -> list[Precision]:
    """`values` (one word or several) as `Precision`s, lowest-bit last, without repeats."""
    if isinstance(values, (str, Precision)):
        values = [values]
    try:
        out = [Precision(v) for v in values]
    except ValueError as e:
        raise PrecisionError(
            f"`{what}` must be among {[p.value for p in Precision]}, got {list(values)!r}.",
            option=what.partition("[")[0], kind="unknown_precision",
        ) from e
    if not out:
        raise PrecisionError(f"`{what}` must name at least one precision.",
                             option=what.partition("[")[0], kind="no_precision")
    order = list(Precision)
    return sorted(dict.fromkeys(out), key=order.index)


def _other_for(p: Precision) -> Precision:
    """The precision of the ops without weights that goes with layers at `p`."""
    if p in (Precision.INT8, Precision.INT4):
        return Precision.INT8
    return Precision.INT16X8 if p is Precision.INT16X8 else Precision.FLOAT


def _describe(layers: Mapping[str, Precision], other: Precision) -> str:
    parts = [f"{n}={p.value}" for n, p in layers.items()]
    return ", ".join(parts + [f"{OTHER_OPS}={other.value}"])
