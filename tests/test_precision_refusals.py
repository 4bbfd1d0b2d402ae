"""The precision search tells a quantizer's refusal from a bug.

Only litert-quantizer's own refusal of a recipe (`ValueError` /
`NotImplementedError` raised inside its package) means "unsupported"; a plain
exception from tflight's recipe code is a bug and surfaces as an internal error
(the library raises `InternalError`, the CLI exits 1 with "internal error").
"""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli
from tflight.errors import InternalError, PrecisionError
from tflight.precision import recipes
from tflight.precision.choices import Precision
from tflight.precision.layer_sensitivity import precision_sensitivity
from tflight.precision.refusals import quantizer_refused
from tflight.precision.search import search


@pytest.fixture(scope="module")
def small(digits, tmp_path_factory):
    import keras

    import converters

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Flatten(),
        keras.layers.Dense(16, activation="relu", name="hidden"), keras.layers.Dense(10, name="out"),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=3, batch_size=64, verbose=0)
    path = tmp_path_factory.mktemp("refusals") / "small.tflite"
    path.write_bytes(converters.convert(model, "fp32").flatbuffer)
    return path


def _buggy_recipe(q, regex, p):
    raise RuntimeError("a bug in a recipe")  # our own code, not the quantizer's


def test_a_bug_in_a_recipe_surfaces_as_an_internal_error(small, digits, monkeypatch):
    monkeypatch.setattr(recipes, "_add", _buggy_recipe)
    with pytest.raises(InternalError, match="a bug in a recipe") as info:
        precision_sensitivity(str(small), digits.x_test[:64], digits.y_test[:64],
                            calibration_data=digits.x_train[:32], precisions=["int8"])
    assert info.value.internal and not isinstance(info.value, PrecisionError)
    with pytest.raises(InternalError):
        search(str(small), digits.x_test, digits.y_test, calibration_data=digits.x_train[:32],
               max_drop=5.0, choices=["float", "int8"])


def test_the_cli_reports_the_bug_as_internal(small, digits, tmp_path, monkeypatch):
    monkeypatch.setattr(recipes, "_add", _buggy_recipe)
    data = tmp_path / "val.npz"
    np.savez(data, x=digits.x_test, y=digits.y_test)
    r = CliRunner().invoke(cli, ["quantize", str(small), "--data", str(data),
                                 "--sensitivity-only"])
    assert r.exit_code == 1, r.output
    assert "internal error" in r.output and "Traceback" not in r.output


def test_a_real_quantizer_refusal_is_still_unsupported(small, digits, monkeypatch):
    # A recipe litert-quantizer itself refuses (an algorithm key it does not
    # know): its ValueError, raised inside its package, means "unsupported".
    real = recipes._add

    def refused_int4(q, regex, p):
        if p is Precision.INT4:
            q.update_quantization_recipe(regex, "*", None, algorithm_key="no_such_algorithm")
        return real(q, regex, p)

    try:
        q = __import__("litert_quantizer").Quantizer(bytearray(small.read_bytes()))
        q.update_quantization_recipe(".*", "*", None, algorithm_key="no_such_algorithm")
    except Exception as e:  # noqa: BLE001 - the point is which exception it is
        assert quantizer_refused(e), type(e)
    else:
        pytest.skip("litert-quantizer accepted an unknown algorithm key")
    assert not quantizer_refused(RuntimeError("x"))
    assert not quantizer_refused(ValueError("raised outside the quantizer"))

    monkeypatch.setattr(recipes, "_add", refused_int4)
    report = precision_sensitivity(str(small), digits.x_test[:64], digits.y_test[:64],
                                 calibration_data=digits.x_train[:32], precisions=["int8", "int4"])
    by = {(e.layer, e.precision): e for e in report.entries}
    assert all(not e.supported for (_, p), e in by.items() if p is Precision.INT4)
    assert any(e.supported for (_, p), e in by.items() if p is Precision.INT8)


def test_a_failure_inside_the_quantizer_leaves_that_option_out(digits, tmp_path):
    """litert-quantizer 0.11.0 raises a TypeError of its own building fp16 for a GRU cell.

    That is neither a documented refusal nor a bug of tflight's: the option is
    left out, named as the quantizer's failure, and the search goes on.
    """
    import keras

    import converters

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8)), keras.layers.GRU(8, name="gru"),
                              keras.layers.Dense(10, name="out")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = digits.x_train[..., 0]
    model.fit(x, digits.y_train, epochs=2, batch_size=64, verbose=0)
    path = tmp_path / "gru.tflite"
    path.write_bytes(converters.convert(model, "fp32").flatbuffer)
    report = precision_sensitivity(str(path), digits.x_test[:64, ..., 0], digits.y_test[:64],
                                   calibration_data=x[:32], precisions=["fp16"])
    failed = [e for e in report.entries if e.error and "litert-quantizer failed" in e.error]
    assert failed, [(e.layer, e.error) for e in report.entries]
    assert all(not e.supported for e in failed)
    assert all("not of the model" in row.error for row in failed)
