"""The bridge's check tolerates float32 rounding in proportion to the outputs, nothing more."""

from __future__ import annotations

import numpy as np

from tflight._keras import keras
from tflight.bridge import verify


def _dense(scale: float, *, nudge: float = 0.0):
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d")])
    kernel, bias = model.get_weights()
    kernel = np.full_like(kernel, scale) * (1.0 + nudge)
    model.set_weights([kernel, bias])
    return model


def test_relative_rounding_passes_only_with_rtol():
    # Outputs of magnitude ~400: a relative difference of 1e-6 is 4e-4 absolute,
    # far past atol 1e-5 but well inside 1e-4 of the output.
    a, b = _dense(100.0), _dense(100.0, nudge=1e-6)
    strict = verify.compare(a, b, atol=1e-5)
    assert not strict.passed
    loose = verify.compare(a, b, atol=1e-5, rtol=verify.DEFAULT_RTOL)
    assert loose.passed, loose
    assert loose.scale > 100 and loose.tolerance > strict.tolerance


def test_a_wrong_function_still_fails_with_rtol():
    a, b = _dense(1.0), _dense(1.0, nudge=1e-2)  # 1 % off: not rounding
    report = verify.compare(a, b, rtol=verify.DEFAULT_RTOL)
    assert not report.passed, report
