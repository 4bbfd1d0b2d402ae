"""The one distribution random model inputs are drawn from.

Float inputs are uniform in [-1, 1], as LiteRT's own
`benchmark_litert_model` fills them and as MobileNet-style preprocessing
scales images; quantized integer inputs span their dtype's full range (what
the quantization maps); other integers are zeros (they are usually ids, and
0 is always a valid one); booleans are fair coins. Validation in `converters`, the benchmark child of `tflight` and the
GPU check all draw from here.

This file imports only numpy: the benchmark child loads it by path, including
under the emulated AArch64 Python where neither `converters` nor TensorFlow is
installed.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["random_array"]


def random_array(
    rng: np.random.Generator,
    shape: Sequence[int],
    dtype: np.dtype | str | type,
    *,
    quantized: bool = False,
) -> np.ndarray:
    """One random array of `shape` and `dtype` from the shared distribution.

    Raises:
      TypeError: no distribution is defined for `dtype` (e.g. strings).
    """
    dtype = np.dtype(dtype)
    shape = tuple(int(s) for s in shape)
    if dtype.kind == "f":
        return rng.uniform(-1.0, 1.0, shape).astype(dtype)
    if dtype.kind in "iu" and quantized:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, shape, endpoint=True).astype(dtype)
    if dtype.kind in "iu":
        # Plain integers are usually ids (token, class): 0 is always a valid one.
        return np.zeros(shape, dtype)
    if dtype.kind == "b":
        return rng.integers(0, 2, shape).astype(dtype)
    raise TypeError(f"no random distribution for dtype {dtype}")
