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
        ("text.h5", b"not hdf5", "is not an HDF5 model file"),
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
    # The same normaliser as every command: negative ids are refused, not scored.
    with pytest.raises(CompressionError, match="negative class ids"):
        tflight.check_agreement(keras3_cnn, result, x, y=y - 1)


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


def test_keras3_h5_and_weights_only_h5_follow_the_converters_rules(tmp_path, keras3_cnn):
    """One rule for .h5 files everywhere: the file's keras_version decides, as in converters."""
    import converters.source
    from tflight._keras import is_keras3_model

    k3_h5 = tmp_path / "k3.h5"
    keras3_cnn.save(k3_h5)
    assert _io.model_file_generation(k3_h5) == "keras3"
    assert is_keras3_model(_io.load_model(k3_h5))
    assert converters.source.load_source(str(k3_h5)).kind == "keras3"

    weights = tmp_path / "w.weights.h5"
    keras3_cnn.save_weights(weights)
    only = tmp_path / "only.h5"
    only.write_bytes(weights.read_bytes())
    with pytest.raises(CompressionError, match="without a model config"):
        _io.load_model(only, error=CompressionError)


@pytest.mark.parametrize(
    "y, classes, expected",
    [
        (np.array([0, 2, 1]), 3, [0, 2, 1]),
        (np.array([[0], [2], [1]]), 3, [0, 2, 1]),
        (np.eye(3)[[0, 2, 1]], 3, [0, 2, 1]),
        (np.array([0.0, 2.0, 1.0]), None, [0, 2, 1]),
    ],
)
def test_class_ids_reads_every_label_form(y, classes, expected):
    ids = _io.class_ids(y, 3, classes=classes)
    assert ids.dtype == np.int64 and ids.tolist() == expected


@pytest.mark.parametrize(
    "y, message",
    [
        (np.array([0, 3, 1]), "class ids up to 3, but the model outputs 3 classes"),
        (np.array([0, -1, 1]), "negative class ids"),
        (np.array([0.0, 1.5, 1.0]), "whole-number class ids"),
        (np.eye(4)[[0, 2, 1]], "one-hot with 4 columns"),
        (np.array([0, 1]), "one label per sample"),
    ],
)
def test_class_ids_names_the_problem(y, message):
    with pytest.raises(CompressionError, match=message):
        _io.class_ids(y, 3, classes=3, error=CompressionError)


def test_load_xy_refuses_non_finite_values(tmp_path):
    path = tmp_path / "d.npz"
    x = np.ones((5, 3))
    x[2, 1] = np.inf
    np.savez(path, x=x, y=np.zeros(5))
    with pytest.raises(TflightError, match=r"NaN or infinite values in 1 of 5 examples \(first: index 2\)"):
        _io.load_xy(path, labels=True)
    np.savez(path, x=np.ones((5, 3)), y=np.array([0, 1, np.nan, 1, 0]))
    with pytest.raises(TflightError, match="`y` in .* holds NaN"):
        _io.load_xy(path, labels=True)


def test_custom_objects_file_errors_name_the_line(tmp_path):
    good = tmp_path / "layers.py"
    good.write_text("def swish2(x):\n    return x\n\nCUSTOM_OBJECTS = {'alias': swish2}\n")
    objects = _io.load_custom_objects(good)
    assert set(objects) == {"swish2", "alias"}
    bad = tmp_path / "bad.py"
    bad.write_text("x = 1\ny = undefined_name\n")
    with pytest.raises(TflightError, match=r"failed to import \(line 2\): NameError"):
        _io.load_custom_objects(bad)
    with pytest.raises(TflightError, match="must be a Python file"):
        _io.load_custom_objects(tmp_path / "layers.txt")


def test_only_file_problems_raised_outside_our_code_are_the_users():
    def ours():
        raise ValueError("a bug of ours")

    for exc, users in ((OSError("unreadable"), True), (AttributeError("x"), False)):
        assert _io._is_file_problem(exc) is users
    try:
        ours()
    except ValueError as e:  # raised in a test file, outside the packages
        assert _io._is_file_problem(e)
    try:
        _io.class_ids(np.zeros((2, 2, 2)), 2)
    except TflightError as e:
        assert not _io._is_file_problem(ValueError().with_traceback(e.__traceback__))
