"""The user's files and labels: one loader for every command, common label forms."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from tflight import _io
from tflight.cli import cli
from tflight.errors import CompressionError, TflightError


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory, keras3_cnn, tf_keras_cnn):
    d = tmp_path_factory.mktemp("models")
    paths = {"keras3": str(d / "k3.keras"), "tf_keras_h5": str(d / "tk.h5")}
    keras3_cnn.save(paths["keras3"])
    tf_keras_cnn.save(paths["tf_keras_h5"])
    return paths


def test_load_model_reads_each_generation(saved_models, keras3_cnn, digits):
    from tflight._keras import is_keras3_model, is_tf_keras_model

    k3 = _io.load_model(saved_models["keras3"])
    tk = _io.load_model(saved_models["tf_keras_h5"])
    assert is_keras3_model(k3) and is_tf_keras_model(tk)
    x = digits.x_test[:8]
    np.testing.assert_allclose(
        k3.predict(x, verbose=0), keras3_cnn.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("model.onnx", b"", "must end in .keras or .h5"),
        ("missing.keras", None, "does not exist"),
        ("text.keras", b"not a zip", "not a readable .keras model file"),
        ("text.h5", b"not hdf5", "Could not load a model"),
    ],
)
def test_load_model_errors_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CompressionError, match=message):
        _io.load_model(path, error=CompressionError)


@pytest.mark.parametrize(
    "arrays, labels, message",
    [
        ({"y": np.zeros(3)}, True, "no array `x`"),
        ({"x": np.zeros((3, 8, 8, 1))}, True, "no array `y`"),
        ({"x": np.array(["a", "b"])}, False, "numeric array"),
        ({"x": np.zeros((3, 4)), "y": np.zeros(2)}, True, "integer labels"),
        ({"x": np.zeros((3, 4)), "y": np.zeros((3, 2, 2))}, True, "integer labels"),
    ],
)
def test_load_xy_rejects_bad_arrays(tmp_path, arrays, labels, message):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    with pytest.raises(TflightError, match=message):
        _io.load_xy(path, labels=labels)


def test_load_xy_accepts_one_hot_and_optional_labels(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.ones((4, 3), "float64"), y=np.eye(4, dtype="float32"))
    x, y = _io.load_xy(path, labels=True)
    assert x.dtype == np.float32 and y.shape == (4, 4)
    np.savez(path, x=np.ones((4, 3)))
    assert _io.load_xy(path, labels=False)[1] is None


def test_compress_rejects_data_of_the_wrong_shape(tmp_path, saved_models):
    data = tmp_path / "d.npz"
    np.savez(data, x=np.zeros((8, 6, 6, 1), "float32"), y=np.zeros(8, "int64"))
    result = CliRunner().invoke(
        cli,
        ["compress", saved_models["keras3"], "--data", str(data), "-o", str(tmp_path / "o.tflite")],
    )
    assert result.exit_code == 2, result.output
    assert "has examples of shape (6, 6, 1), but the model takes (8, 8, 1)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o.tflite").exists()


def test_check_agreement_reads_every_label_form(keras3_cnn, digits):
    import converters
    import tflight

    x, y = digits.x_test[:64], digits.y_test[:64]
    result = converters.convert(keras3_cnn, "fp32", validate=False)
    base = tflight.check_agreement(keras3_cnn, result, x, y=y)
    assert base.keras_accuracy > 0.2  # trained: well above chance (10 %)
    for form in (y.reshape(-1, 1), np.eye(10)[y]):
        report = tflight.check_agreement(keras3_cnn, result, x, y=form)
        assert report.keras_accuracy == base.keras_accuracy
        assert report.tflite_accuracy == base.tflite_accuracy
    with pytest.raises(CompressionError, match="one label per sample"):
        tflight.check_agreement(keras3_cnn, result, x, y=y[:10])


def test_bench_reads_one_hot_labels(tmp_path, keras3_cnn, digits):
    import converters
    import tflight

    model = tmp_path / "m.tflite"
    converters.convert(keras3_cnn, "fp32", validate=False).save(model)
    x, y = digits.x_test[:32], digits.y_test[:32]
    config = tflight.BenchmarkConfig(runs=2, min_time=0, warmup_runs=0, warmup_min_time=0)
    accuracies = []
    for labels in (y, np.eye(10)[y]):
        data = tmp_path / f"d{labels.ndim}.npz"
        np.savez(data, x=x, y=labels)
        accuracies.append(tflight.benchmark(model, config=config, inputs=data).accuracy)
    expected = float(np.mean(keras3_cnn.predict(x, verbose=0).argmax(1) == y))
    assert accuracies == [pytest.approx(expected)] * 2
