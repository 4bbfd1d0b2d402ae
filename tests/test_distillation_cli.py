"""`tflight distill` through click's CliRunner: real models and files, exit codes, messages."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from tflight._keras import keras, tf_keras, tfmot
from tflight.cli import cli
from tflight.distillation.distiller import load_model


def _student(k):
    k.utils.set_random_seed(1)
    return k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(2, 3, padding="same", activation="relu", name="conv"),
            k.layers.MaxPooling2D(2, name="pool"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(10, name="logits"),
        ],
        name="student",
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory, keras3_cnn, digits):
    root = tmp_path_factory.mktemp("distill_cli")
    paths = {
        "teacher": root / "teacher.keras",
        "student": root / "student.keras",
        "data": root / "data.npz",
        "x_only": root / "x_only.npz",
        "no_x": root / "no_x.npz",
        "bad_shape": root / "bad_shape.npz",
        "bad_y": root / "bad_y.npz",
        "labels_out_of_range": root / "labels_out_of_range.npz",
        "nan": root / "nan.npz",
    }
    keras3_cnn.save(paths["teacher"])
    _student(keras).save(paths["student"])
    x, y = digits.x_train[:192], digits.y_train[:192]
    np.savez(paths["data"], x=x, y=y)
    np.savez(paths["x_only"], x=x)
    np.savez(paths["no_x"], inputs=x, y=y)
    np.savez(paths["bad_shape"], x=x.reshape(192, 64), y=y)
    np.savez(paths["bad_y"], x=x, y=y[:10])
    np.savez(paths["labels_out_of_range"], x=x, y=y + 5)
    x_nan = x.copy()
    x_nan[7, 0, 0, 0] = np.nan
    np.savez(paths["nan"], x=x_nan, y=y)
    return {k: str(v) for k, v in paths.items()}


def _run(*args):
    return CliRunner().invoke(cli, ["distill", *args], catch_exceptions=False)


# A 2-filter student after a few epochs is far below its teacher; the tests that pass
# this check other behaviour, the accuracy budget has tests of its own.
NO_BUDGET = ("--max-drop", "100")


def test_distill_writes_student_with_progress(files, tmp_path, digits):
    out = tmp_path / "distilled.keras"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = _run(
            "--teacher", files["teacher"], "--student", files["student"], "--data", files["data"],
            "-o", str(out), "--epochs", "2", "--batch-size", "64", "--temperature", "3",
            "--alpha", "0.2", "--feature-layer", "conv:conv", "--progress", *NO_BUDGET,
        )  # fmt: skip
    assert result.exit_code == 0, result.output
    # Keras' "shuffle=True was passed, but will be ignored" came from our own fit call.
    assert not [w for w in caught if "shuffle" in str(w.message)], [str(w.message) for w in caught]
    assert "epoch 1/2: " in result.stderr and "epoch 2/2: " in result.stderr
    assert "soft=" in result.stderr and "feature=" in result.stderr
    # 192 examples: 38 (20 %) held out, 154 trained on; each figure names its data.
    assert "on 154 examples of" in result.stdout
    assert f"measuring on 38 held-out samples (20% of {files['data']}" in result.stdout
    assert "on the 154 training examples (last epoch, not held out):" in result.stdout
    assert "on the 38 validation examples (not trained on):" in result.stdout
    assert f"Wrote {out}" in result.output
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    assert sorted(os.listdir(tmp_path)) == ["distilled.keras"]  # no temp files left behind
    trained = load_model(out)
    original = load_model(files["student"])
    assert trained.count_params() == original.count_params()
    assert not all(
        np.array_equal(a, b)
        for a, b in zip(trained.get_weights(), original.get_weights(), strict=True)
    )


def test_unlabelled_data_with_alpha_zero(files, tmp_path):
    out = tmp_path / "s.keras"
    result = _run(
        "--teacher", files["teacher"], "--student", files["student"], "--data", files["x_only"],
        "-o", str(out), "--epochs", "1", "--alpha", "0", "--no-cache",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert out.exists()
    assert "every figure is on the training data" in result.output
    assert result.stderr == ""  # not a terminal: no progress lines


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.parametrize(
    "change, message",
    [
        ({"--data": "no_x"}, "has no array `x`"),
        ({"--data": "x_only"}, "has no array `y`"),
        ({"--data": "bad_shape"}, "the student takes"),
        ({"--data": "bad_y"}, "`y` in"),
        ({"--data": "/nonexistent/d.npz"}, "does not exist"),
        ({"--teacher": "/nonexistent/t.keras"}, "does not exist"),
        ({"--teacher": "student", "--student": "teacher"}, "swapped"),
        ({"--temperature": "0"}, "temperature"),
        ({"--alpha": "1.5"}, "alpha"),
        ({"--feature-layer": "conv:nope"}, "no layer named 'nope'"),
        ({"--feature-layer": "conv"}, "TEACHER_LAYER:STUDENT_LAYER"),
        ({"-o": "out.onnx"}, ".keras or .h5"),
        ({"-o": "out.h5"}, "a Keras 3 model is saved as .keras"),
        ({"-o": "student"}, "is the input"),
        ({"-o": "/proc/no/such/dir/out.keras"}, "cannot create files in '/proc'"),
        ({"--data": "labels_out_of_range"}, "class ids up to 14, but the model outputs 10"),
        ({"--data": "nan"}, "NaN or infinite values in 1 of 192 examples"),
        ({"--custom-objects": "/nonexistent/layers.py"}, "does not exist"),
    ],
)
def test_bad_input_exits_2_without_traceback(files, tmp_path, change, message):
    args = {
        "--teacher": files["teacher"],
        "--student": files["student"],
        "--data": files["data"],
        "-o": str(tmp_path / "out.keras"),
        "--epochs": "1",
    }
    for key, value in change.items():
        args[key] = files.get(value, value)
    if not os.path.isabs(args["-o"]):
        args["-o"] = str(tmp_path / args["-o"])
    before = {k: open(v, "rb").read() for k, v in files.items()}
    result = _run(*[part for pair in args.items() for part in pair])
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert message in lines[-1]
    assert "Traceback" not in result.output and "epoch" not in result.output
    assert not (tmp_path / "out.keras").exists()
    assert {k: open(v, "rb").read() for k, v in files.items()} == before


@pytest.mark.slow
def test_pruned_tf_keras_student_from_h5(files, tmp_path, digits):
    mot = tfmot()
    schedule = mot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = mot.sparsity.keras.prune_low_magnitude(_student(tf_keras()), schedule)
    src = tmp_path / "pruned.h5"
    pruned.save(src)
    out = tmp_path / "pruned_distilled.h5"
    result = _run(
        "--teacher", files["teacher"], "--student", str(src), "--data", files["data"],
        "-o", str(out), "--epochs", "2", "--batch-size", "32", *NO_BUDGET,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    trained = mot.sparsity.keras.strip_pruning(load_model(out))
    kernel = trained.get_layer("logits").kernel.numpy()
    assert (kernel == 0).mean() == pytest.approx(0.5, abs=0.01)


_LAYERS = '''
import keras


class Gain(keras.layers.Layer):
    """Multiplies by a fixed factor; not registered, found by name."""

    def __init__(self, factor=1.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}
'''


def test_distill_loads_a_custom_layer_teacher_with_custom_objects(files, tmp_path):
    from tflight import _io

    layers_py = tmp_path / "my_layers.py"
    layers_py.write_text(_LAYERS)
    gain = _io.load_custom_objects(layers_py)["Gain"]
    keras.utils.set_random_seed(0)
    teacher = keras.Sequential(
        [keras.Input((8, 8, 1)), gain(0.5), keras.layers.Conv2D(8, 3, activation="relu"),
         keras.layers.Flatten(), keras.layers.Dense(10)],
        name="custom_teacher",
    )
    path = tmp_path / "teacher.keras"
    teacher.save(path)
    args = ["--teacher", str(path), "--student", files["student"], "--data", files["data"],
            "--epochs", "1", *NO_BUDGET, "-o", str(tmp_path / "out.keras")]
    without = _run(*args)
    assert without.exit_code == 2 and "--custom-objects my_layers.py" in without.output
    result = _run(*args, "--custom-objects", str(layers_py))
    assert result.exit_code == 0, result.output
    assert "Distilling 'custom_teacher'" in result.output


def test_distill_past_the_budget_exits_2_and_writes_nothing(files, tmp_path):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "student.keras"
    # A 2-filter student after one epoch cannot match its teacher within 0 points.
    args = ["--teacher", files["teacher"], "--student", files["student"], "--data",
            files["data"], "--epochs", "1", "--max-drop", "0", "-o", str(out)]
    result = _run(*args)
    assert result.exit_code == 2, result.output
    assert "measured in Keras on 38 held-out samples" in result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: the student does not meet the accuracy budget"), line
    assert "vs the teacher's" in line and "more than --max-drop 0" in line
    assert "nothing was written" in line and "--epochs" in line and "--temperature" in line
    assert list(out_dir.iterdir()) == []
    kept = _run(*args, "--keep-failed")
    assert kept.exit_code == 2 and f"kept {out} anyway (--keep-failed)" in kept.output
    assert list(out_dir.iterdir()) == [out]
