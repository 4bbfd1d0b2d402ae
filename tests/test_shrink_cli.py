"""`tflight shrink` through click's CliRunner: real models, real files, exit codes."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False)(i)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(32, activation="relu")(x)
    model = keras.Model(i, keras.layers.Dense(10)(x))
    root = tmp_path_factory.mktemp("shrink")
    model_path = root / "cnn.keras"
    model.save(model_path)
    data_path = root / "train.npz"
    np.savez(data_path, x=digits.x_train[:128], y=digits.y_train[:128])
    return root, str(model_path), str(data_path)


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# The fixture model is untrained (chance accuracy); the tests that pass this check other
# behaviour, the accuracy budget has tests of its own.
NO_BUDGET = ("--max-drop", "100")


def test_shrink_channels_writes_a_smaller_model_and_reports(files):
    import keras

    root, model, data = files
    out = root / "small.keras"
    result = _run(
        "shrink", model, "--flops", "0.5", "--criterion", "taylor", "--data", data,
        "--epochs", "1", "--distill", *NO_BUDGET, "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    assert "before  after" in result.output and "MACs (counted)" in result.output
    assert "with distillation" in result.output
    # Keras' fit history is on the training data: the figures say so.
    assert "on the training data (--data, not held out)" in result.output
    small, big = keras.saving.load_model(out), keras.saving.load_model(model)
    assert small.count_params() < big.count_params()


def test_shrink_lowrank_json(files):
    root, model, _ = files
    out = root / "lowrank.keras"
    result = _run("shrink", model, "--method", "lowrank", "--energy", "0.8", "--json", "-o", str(out))
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["macs_after"] < report["macs_before"] and out.exists()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--flops", "1.5"], "in (0, 1)"),
        (["--criterion", "apoz"], "pass `data=(x, y)` (CLI: --data"),
        (["--epochs", "1"], "needs --data"),
        (["--method", "lowrank", "--ratio", "0.5"], "apply to --method channels"),
        (["--ratio", "0.99"], "leaves no channel"),
        (["--latency", "0.5"], "--latency allocates ratios from measured sensitivities"),
    ],
)
def test_shrink_bad_requests_exit_2_without_output(files, args, message):
    root, model, _ = files
    out = root / "never.keras"
    result = CliRunner().invoke(cli, ["shrink", model, *args, "-o", str(out)])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_shrink_refuses_to_overwrite_its_input(files):
    _, model, _ = files
    result = CliRunner().invoke(cli, ["shrink", model, "-o", model])
    assert result.exit_code == 2 and "is the input" in result.output


def test_shrink_with_sensitivity_allocation(files):
    root, model, data = files
    out, plot = root / "sens.keras", root / "sens.png"
    result = _run(
        "shrink", model, "--flops", "0.6", "--data", data, "--sensitivity", str(plot), *NO_BUDGET,
        "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    assert "accuracy % drop (measured" in result.output and plot.stat().st_size > 1000
    assert out.exists()


def test_shrink_to_an_estimated_latency_target(files):
    import keras

    root, model, data = files
    out, plot = root / "lat.keras", root / "lat.png"
    result = _run(
        "shrink", model, "--latency", "0.8", "--profile", "cortex-a53", "--arithmetic", "fp32",
        "--data", data, "--sensitivity", str(plot), "--json", *NO_BUDGET, "-o", str(out),
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    target = report["sensitivity"]["latency_target"]
    assert target["profile"] == "cortex-a53" and target["method"].startswith("estimated")
    assert report["sensitivity"]["allocated_ratios"]
    small, big = keras.saving.load_model(out), keras.saving.load_model(model)
    assert small.count_params() < big.count_params()


def test_shrink_checks_the_output_before_loading(files, tmp_path):
    import os

    root, model, data = files
    # A hard link and a symbolic link to the input are the input.
    hard, soft = tmp_path / "hard.keras", tmp_path / "soft.keras"
    os.link(model, hard)
    soft.symlink_to(model)
    before = open(model, "rb").read()
    for out in (hard, soft):
        result = CliRunner().invoke(cli, ["shrink", model, "-o", str(out)])
        assert result.exit_code == 2 and "is the input" in result.output, result.output
    assert open(model, "rb").read() == before
    # A parent that is a file is named as such, before any data is read (the
    # data file here is not even an .npz).
    blocker = tmp_path / "afile"
    blocker.write_text("x")
    bad_data = tmp_path / "notdata.npz"
    bad_data.write_text("not an npz")
    result = CliRunner().invoke(
        cli, ["shrink", model, "--data", str(bad_data), "-o", str(blocker / "m.keras")]
    )
    assert result.exit_code == 2 and "is not a directory" in result.output, result.output
    assert "File exists" not in result.output and "notdata" not in result.output


_CUSTOM_LAYER = '''
import keras


class ScaledDense(keras.layers.Layer):
    """A Dense-like layer Keras does not know (not registered)."""

    def __init__(self, units, scale=2.0, **kw):
        super().__init__(**kw)
        self.units, self.scale = units, scale

    def build(self, input_shape):
        self.w = self.add_weight(shape=(input_shape[-1], self.units), name="w")
        self.b = self.add_weight(shape=(self.units,), initializer="zeros", name="b")

    def call(self, x):
        return keras.ops.matmul(x, self.w) * self.scale + self.b

    def get_config(self):
        return super().get_config() | {"units": self.units, "scale": self.scale}
'''


def custom_layer_model(root):
    """A Functional model with a custom layer saved to .keras, and the .py file defining it."""
    import importlib.util

    import keras

    py = root / "fixa_custom_layers.py"
    py.write_text(_CUSTOM_LAYER)
    spec = importlib.util.spec_from_file_location("fixa_custom_layers_src", py)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(i)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    x = module.ScaledDense(16, name="scaled")(x)
    model = keras.Model(i, keras.layers.Dense(10)(keras.layers.ReLU()(x)))
    path = root / "custom.keras"
    model.save(path)
    return path, py


def test_shrink_loads_custom_layers_from_custom_objects(files, tmp_path):
    _, _, data = files
    model, py = custom_layer_model(tmp_path)
    out = tmp_path / "small.keras"
    without = CliRunner().invoke(cli, ["shrink", str(model), "-o", str(out)])
    assert without.exit_code == 2 and "Error:" in without.output, without.output
    result = CliRunner().invoke(
        cli, ["shrink", str(model), "--custom-objects", str(py), "-o", str(out), "--json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["macs_after"] < report["macs_before"] and out.exists()


def test_shrink_says_which_layers_its_mac_count_leaves_out(digits, tmp_path):
    import keras

    keras.utils.set_random_seed(0)
    i = keras.Input((8, 8))
    x = keras.layers.Bidirectional(keras.layers.GRU(16), name="bidirectional")(i)
    model = keras.Model(i, keras.layers.Dense(10)(x), name="bigru")
    path = tmp_path / "bigru.keras"
    model.save(path)
    out = tmp_path / "small.keras"
    result = CliRunner().invoke(cli, ["shrink", str(path), "--method", "lowrank", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "MACs (counted)" in result.output
    assert "(MACs counted over Dense/Conv layers only; not counted: bidirectional " \
           "(Bidirectional))" in result.output
    result = CliRunner().invoke(
        cli, ["shrink", str(path), "--method", "lowrank", "-o", str(out), "--json"]
    )
    report = json.loads(result.output)
    assert report["macs_not_counted"] == ["bidirectional (Bidirectional)"]


def test_shrink_says_when_rounding_misses_the_flops_target(files):
    root, model, _ = files
    out = root / "rounded.keras"
    result = _run("shrink", model, "--flops", "0.5", "--round-to", "8", "-o", str(out), "--json")
    report = json.loads(result.output)
    ratio = report["macs_after"] / report["macs_before"]
    assert abs(ratio - 0.5) > 0.05, ratio  # the premise: multiples of 8 cannot reach 50%
    assert "--round-to 8" in report["target_note"] and "50%" in report["target_note"]
    text = _run("shrink", model, "--flops", "0.5", "--round-to", "8", "-o", str(out)).output
    assert "note: the target was 50% of the counted MACs" in text
    assert "not counted" not in _run("shrink", model, "-o", str(out)).output


def test_shrink_past_the_budget_exits_2_and_writes_nothing(keras3_cnn, digits, tmp_path):
    path = tmp_path / "trained.keras"
    keras3_cnn.save(path)
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:320], y=digits.y_train[:320])
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "small.keras"
    # Three quarters of the channels gone and no fine-tune: far below the original.
    args = ["shrink", str(path), "--ratio", "0.75", "--data", str(data), "-o", str(out)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    line = result.output.strip().splitlines()[-1]
    assert line.startswith("Error: the smaller model does not meet the accuracy budget"), line
    assert "on 64 held-out samples (20% of" in line and "vs the original's" in line
    assert "more than --max-drop 1" in line and "nothing was written" in line
    assert "--epochs" in line and "--distill" in line and "Traceback" not in result.output
    assert list(out_dir.iterdir()) == []
    kept = CliRunner().invoke(cli, [*args, "--keep-failed"])
    assert kept.exit_code == 2 and f"kept {out} anyway" in kept.output
    assert list(out_dir.iterdir()) == [out]
    # Within a budget: written, with the figures (measured) in the text and the JSON.
    ok = CliRunner().invoke(cli, [*args[:-2], "--max-drop", "100", "--json", "-o", str(out)])
    assert ok.exit_code == 0, ok.output
    accuracy = json.loads(ok.output)["accuracy"]
    assert accuracy["method"].startswith("measured") and accuracy["max_drop_pt"] == 100
    assert accuracy["drop_pt"] == pytest.approx((accuracy["original"] - accuracy["result"]) * 100)


def test_shrink_without_data_says_the_accuracy_was_not_checked(files):
    root, model, _ = files
    result = _run("shrink", model, "-o", str(root / "unchecked.keras"))
    assert result.exit_code == 0, result.output
    assert "accuracy not checked against --max-drop: it needs --data" in result.output
