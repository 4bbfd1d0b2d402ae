"""`tflight compress` through click's CliRunner: real models, real files, exit codes."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits, keras3_cnn):
    root = tmp_path_factory.mktemp("compress")
    model_path = root / "cnn.keras"
    keras3_cnn.save(model_path)
    data_path = root / "train.npz"
    np.savez(data_path, x=digits.x_train[:320], y=digits.y_train[:320])
    np.savez(root / "val.npz", x=digits.x_test[:64], y=digits.y_test[:64])
    return root, str(model_path), str(data_path)


def _run(*args):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


# One epoch on the small fixture models can lose a few points of accuracy; the tests
# that pass this check other behaviour, the accuracy budget has tests of its own.
NO_BUDGET = ("--max-drop", "100")


@pytest.mark.slow
def test_compress_pqat_writes_a_verified_tflite(files):
    import converters

    root, model, data = files
    out = root / "pqat.tflite"
    result = _run(
        "compress",
        model,
        "--data",
        data,
        "--technique",
        "pqat",
        "--epochs",
        "1",
        "--lr",
        "1e-3",
        "--min-agreement",
        "0.95",
        *NO_BUDGET,
        "--schedule",  # the stage line names the schedule when it ramps (the default)
        "constant",
        "--validation",
        str(root / "val.npz"),
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert "Prune()" in result.output and "QAT() preserving sparsity" in result.output
    # The figures name the data they come from: the 64 samples of val.npz.
    assert f"measured on 64 samples of {root / 'val.npz'}: top-1 agreement" in result.output
    sparsity = re.search(r"sparsity: ([0-9.]+)%", result.output)
    assert sparsity and 48.0 <= float(sparsity.group(1)) <= 52.0, result.output  # 50 % target
    report = converters.inspect(str(out))
    # QAT then int8 conversion: the weights of the convolution are int8.
    assert report.stats.op_dtypes["CONV_2D"].get("int8", 0) >= 1, report.stats.op_dtypes


def test_compress_bad_inputs_exit_2_without_traceback(files, tmp_path):
    root, model, data = files
    out = str(tmp_path / "x.tflite")
    missing = _run("compress", model, "--data", str(tmp_path / "nope.npz"), "--out", out)
    assert missing.exit_code == 2
    assert "Error: Data file" in missing.output and "does not exist" in missing.output

    bad = tmp_path / "bad.npz"
    np.savez(bad, inputs=np.zeros((4, 8, 8, 1)))
    no_y = _run("compress", model, "--data", str(bad), "--out", out)
    assert no_y.exit_code == 2 and "has no array `x` (found: ['inputs'])" in no_y.output

    bad_model = _run("compress", str(tmp_path / "m.keras"), "--data", data, "--out", out)
    assert bad_model.exit_code == 2 and "does not exist" in bad_model.output

    bad_sparsity = _run("compress", model, "--data", data, "--sparsity", "1.5", "--out", out)
    assert bad_sparsity.exit_code == 2
    assert "`sparsity` must be a fraction in (0, 1), got 1.5" in bad_sparsity.output

    bad_choice = _run("compress", model, "--data", data, "--technique", "zip", "--out", out)
    assert bad_choice.exit_code == 2 and "'zip' is not one of" in bad_choice.output

    assert "Traceback" not in missing.output + no_y.output + bad_sparsity.output


def _one_error_line(result):
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


def test_compress_refuses_an_output_that_is_an_input(files, tmp_path):
    root, model, data = files
    before = Path(model).read_bytes()
    keras_suffix = _one_error_line(_run("compress", model, "--data", data, "-o", model))
    assert "ending in .tflite" in keras_suffix
    # A .tflite name that resolves to the model (symlink) or to the data (hard link, `..`).
    link = tmp_path / "model.tflite"
    link.symlink_to(model)
    through_link = _one_error_line(_run("compress", model, "--data", data, "-o", str(link)))
    assert "is the input" in through_link
    data_link = root / "train.tflite"
    os.link(data, data_link)
    try:
        dotted = str(root / ".." / root.name / "train.tflite")
        hard = _one_error_line(_run("compress", model, "--data", data, "-o", dotted))
        assert "is the input" in hard
    finally:
        data_link.unlink()
    assert Path(model).read_bytes() == before


def test_compress_checks_the_output_folder_before_training(files, tmp_path):
    root, model, data = files
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file, not a folder")
    line = _one_error_line(
        _run("compress", model, "--data", data, "--technique", "prune", "-o",
             str(blocker / "out.tflite"))
    )
    assert "is not a directory" in line
    # os.access says yes to root everywhere; /proc takes no new files all the same.
    line = _one_error_line(
        _run("compress", model, "--data", data, "--technique", "prune", "-o",
             "/proc/no/such/dir/out.tflite")
    )
    assert "cannot create files in '/proc'" in line


def test_compress_rejects_labels_out_of_range_before_training(files, tmp_path, digits):
    _, model, _ = files
    data = tmp_path / "labels.npz"
    np.savez(data, x=digits.x_train[:64], y=digits.y_train[:64] + 5)
    line = _one_error_line(_run("compress", model, "--data", str(data), "-o",
                                str(tmp_path / "o.tflite")))
    assert "class ids up to 14, but the model outputs 10 classes" in line
    onehot = tmp_path / "onehot.npz"
    np.savez(onehot, x=digits.x_train[:64], y=np.eye(12)[digits.y_train[:64]])
    line = _one_error_line(_run("compress", model, "--data", str(onehot), "-o",
                                str(tmp_path / "o.tflite")))
    assert "one-hot with 12 columns" in line


def test_compress_rejects_non_finite_data_with_cli_advice(files, tmp_path, digits):
    _, model, _ = files
    x = digits.x_train[:64].copy()
    x[5, 1, 1, 0] = np.nan
    x[9, 0, 0, 0] = np.inf
    data = tmp_path / "nan.npz"
    np.savez(data, x=x, y=digits.y_train[:64])
    line = _one_error_line(_run("compress", model, "--data", str(data), "--technique", "prune",
                                "-o", str(tmp_path / "o.tflite")))
    assert "NaN or infinite values in 2 of 64 examples (first: index 5)" in line
    assert "check=False" not in line


def test_compress_refuses_a_two_head_model(tmp_path, digits):
    import keras

    inp = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inp)
    two = keras.Model(inp, [keras.layers.Dense(10, name="digit")(flat),
                            keras.layers.Dense(2, name="parity")(flat)])
    path = tmp_path / "two.keras"
    two.save(path)
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:64], y=digits.y_train[:64])
    line = _one_error_line(_run("compress", str(path), "--data", str(data), "-o",
                                str(tmp_path / "o.tflite")))
    assert "has 2 outputs ('digit', 'parity')" in line
    assert "tflight.Pipeline" in line


def _umask():
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@pytest.mark.slow
def test_compress_measures_on_held_out_data_and_prints_progress(files, tmp_path):
    root, model, data = files
    out = tmp_path / "pruned.tflite"
    result = _run("compress", model, "--data", data, "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                  "--progress", "-o", str(out))
    assert result.exit_code == 0, result.output
    # 320 examples: 64 (20 %) held out, 256 trained on.
    assert "Fine-tuning on 256 examples" in result.stderr
    assert "stage 1/1: prune ..." in result.stderr and "epoch 1/1: loss=" in result.stderr
    assert f"measured on 64 held-out samples (20% of {data}, not used in this fine-tuning)" in (
        result.stdout
    )
    assert out.stat().st_mode & 0o777 == 0o666 & ~_umask()
    quiet = _run("compress", model, "--data", data, "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                 "-o", str(tmp_path / "quiet.tflite"))
    assert quiet.exit_code == 0 and quiet.stderr == "", quiet.stderr  # not a terminal: quiet


_CUSTOM_LAYERS = textwrap.dedent('''
    import keras

    from tflight._keras import tf_keras
    from tflight.bridge import register

    tfk = tf_keras()


    @keras.saving.register_keras_serializable(package="test_custom")
    class Scale(keras.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}


    @tfk.utils.register_keras_serializable(package="test_custom_tfk")
    class TfScale(tfk.layers.Layer):
        def __init__(self, factor=2.0, **kwargs):
            super().__init__(**kwargs)
            self.factor = factor

        def call(self, x):
            return x * self.factor

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}


    register(Scale, lambda layer: TfScale(factor=layer.factor, name=layer.name))
''')


@pytest.fixture(scope="module")
def custom_model(tmp_path_factory):
    """A .keras file with a custom layer, and the Python file that defines it."""
    import keras

    from tflight import _io

    root = tmp_path_factory.mktemp("custom")
    layers_py = root / "my_layers.py"
    layers_py.write_text(_CUSTOM_LAYERS)
    scale = _io.load_custom_objects(layers_py)["Scale"]
    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    h = scale(0.5, name="scale")(inp)
    h = keras.layers.Conv2D(4, 3, activation="relu")(h)
    h = keras.layers.Flatten()(h)
    path = root / "custom.keras"
    keras.Model(inp, keras.layers.Dense(10)(h)).save(path)
    # Forget the registration, as a fresh process would not know the class.
    keras.saving.get_custom_objects().pop("test_custom>Scale")
    return root, str(path), str(layers_py)


@pytest.mark.slow
def test_compress_loads_a_custom_layer_with_custom_objects(custom_model, files, tmp_path):
    _, model, layers_py = custom_model
    _, _, data = files
    out = tmp_path / "custom.tflite"
    without = _one_error_line(_run("compress", model, "--data", data, "-o", str(out)))
    assert "--custom-objects my_layers.py" in without
    result = _run("compress", model, "--data", data, "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                  "--custom-objects", layers_py, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "sparsity: 50.0%" in result.output and out.read_bytes()[4:8] == b"TFL3"

    broken = tmp_path / "broken.py"
    broken.write_text("import keras\n\nraise ValueError('oops in the user file')\n")
    line = _one_error_line(_run("compress", model, "--data", data, "--custom-objects",
                                str(broken), "-o", str(out)))
    assert "failed to import (line 3): ValueError: oops in the user file" in line


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_compress_interrupted_mid_training_leaves_nothing(files, tmp_path):
    """A run stopped during training (here by Ctrl-C) leaves no output, temp file or log."""
    _, model, data = files
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp)}
    env.pop("TFLIGHT_VERBOSE", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys; from tflight.cli import main; main(sys.argv[1:])",
         "compress", model, "--data", data, "--technique", "prune", "--epochs", "50",
         "--progress", "-o", str(out_dir / "m.tflite")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        # As from a terminal: an ignored SIGINT is inherited across exec (some
        # earlier test in this process may leave it ignored), and Python then
        # installs no KeyboardInterrupt handler at all.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    seen = []
    try:
        for line in proc.stderr:
            seen.append(line)
            if "epoch 1/50" in line:
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert any("epoch 1/50" in ln for ln in seen), "".join(seen)
    assert proc.returncode == 130, "".join(seen) + rest
    assert "Interrupted." in rest and "Traceback" not in rest
    assert list(out_dir.iterdir()) == []
    assert list(tmp.glob("tflight-*")) == []


def test_compress_advice_names_the_command_flags_not_python_arguments(tmp_path, digits):
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Reshape((8, 8)),
        keras.layers.Conv1D(4, 3, name="conv1d"),  # not in TF-MOT's QAT allowlist
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    path = tmp_path / "conv1d.keras"
    model.save(path)
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:64], y=digits.y_train[:64])
    line = _one_error_line(_run("compress", str(path), "--data", str(data), "--technique", "qat",
                                "-o", str(tmp_path / "o.tflite")))
    assert "'conv1d'" in line and "--keep-unsupported-float" in line
    assert "keep_float" not in line and "=" not in line


def test_custom_objects_scope_lets_the_converter_load_a_custom_layer(custom_model):
    import keras

    import converters
    from converters.errors import ConversionError, ModelLoadError
    from tflight import _io

    _, model, layers_py = custom_model
    keras.saving.get_custom_objects().pop("test_custom>Scale", None)  # as in a fresh process
    with pytest.raises(ModelLoadError):
        converters.convert(model, "fp32", validate=False)
    with _io.custom_objects_scope(layers_py, error=ConversionError):
        result = converters.convert(model, "fp32")
    assert result.validation.short().startswith("ok")


def test_convert_command_loads_a_custom_layer_with_custom_objects(custom_model, tmp_path):
    import keras

    _, model, layers_py = custom_model
    keras.saving.get_custom_objects().pop("test_custom>Scale", None)  # as in a fresh process
    out = tmp_path / "custom.tflite"
    without = _run("convert", model, "-m", "fp32", "-o", str(out))
    assert without.exit_code == 2 and not out.exists()
    result = _run("convert", model, "-m", "fp32", "--custom-objects", layers_py, "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[4:8] == b"TFL3"


def _save(model, path):
    model.save(path)
    return str(path)


def test_compress_skip_unsupported_leaves_layers_dense_for_pruning(tmp_path, digits):
    import keras

    keras.utils.set_random_seed(0)
    # A layer with kernels that TF-MOT's prune registry has no entry for (layers
    # with nothing to prune, such as PReLU, are left alone without an error).
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Reshape((8, 8)),
        keras.layers.Bidirectional(keras.layers.LSTM(4), name="bidi"),
        keras.layers.Dense(10),
    ])
    path = _save(model, tmp_path / "bidi.keras")
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:128], y=digits.y_train[:128])
    line = _one_error_line(_run("compress", path, "--data", str(data), "--technique", "prune",
                                "-o", str(tmp_path / "o.tflite")))
    assert "'bidi'" in line and "--skip-unsupported" in line
    out = tmp_path / "skip.tflite"
    result = _run("compress", path, "--data", str(data), "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                  "--skip-unsupported", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "bidi" in result.output and "cannot prune Bidirectional" in result.output
    assert out.is_file()


def test_compress_prints_the_original_accuracy_on_the_same_data(files, tmp_path, digits):
    import keras

    root, model_path, data = files
    val = str(root / "val.npz")
    result = _run("compress", model_path, "--data", data, "--validation", val,
                  "--technique", "prune", "--epochs", "1", *NO_BUDGET, "-o", str(tmp_path / "o.tflite"))
    assert result.exit_code == 0, result.output
    model = keras.saving.load_model(model_path)
    pred = model.predict(digits.x_test[:64], verbose=0).argmax(-1)
    expected = float(np.mean(pred == digits.y_test[:64]))
    line = next(ln for ln in result.output.splitlines() if ln.startswith("original model:"))
    assert line == f"original model: accuracy {expected:.2%} on the same 64 samples of {val}"


def test_compress_notes_sparsity_far_below_target_from_frozen_layers(tmp_path, digits):
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 1))
    backbone = keras.layers.Dense(256, activation="relu", name="backbone")
    backbone.trainable = False
    out = keras.layers.Dense(10, name="head")(backbone(keras.layers.Flatten()(inp)))
    path = _save(keras.Model(inp, out), tmp_path / "frozen.keras")
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_train[:128], y=digits.y_train[:128])
    result = _run("compress", path, "--data", str(data), "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                  "--sparsity", "0.5", "-o", str(tmp_path / "o.tflite"))
    assert result.exit_code == 0, result.output
    note = next(ln for ln in result.output.splitlines() if ln.startswith("note: sparsity"))
    assert "16,384 of 18,944 prunable weights were skipped" in note
    assert "16,384 frozen" in note


def test_compress_agreement_failure_advice_names_every_option():
    # A QAT model that reliably fails the gate on these tiny models was not found (they
    # agree 100 %), so this checks the advice text the gate raises with.
    from tflight.cli.compress import agreement_advice

    advice = agreement_advice()
    for option in ("--min-agreement", "--keep-unsupported-float", "--mode dynamic", "--epochs"):
        assert option in advice, option
    assert "attention" in advice  # more epochs is not presented as the sure fix


def test_compress_a_two_input_model_from_x0_x1(tmp_path, digits):
    import keras
    from ai_edge_litert.interpreter import Interpreter

    keras.utils.set_random_seed(0)
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((4,), name="extra")
    h = keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    path = _save(keras.Model([image, extra], keras.layers.Dense(10)(h)), tmp_path / "mi.keras")
    x1 = digits.x_train[:128].reshape(128, 64)[:, :4].copy()
    data = tmp_path / "mi.npz"
    np.savez(data, x0=digits.x_train[:128], x1=x1, y=digits.y_train[:128])
    out = tmp_path / "mi.tflite"
    result = _run("compress", path, "--data", str(data), "--technique", "prune", "--epochs", "1", *NO_BUDGET,
                  "-o", str(out))
    assert result.exit_code == 0, result.output
    assert "26 held-out samples" in result.output and "original model: accuracy" in result.output
    assert len(Interpreter(model_path=str(out)).get_input_details()) == 2
    np.savez(data, x0=digits.x_train[:128], y=digits.y_train[:128])  # one array short
    line = _one_error_line(_run("compress", path, "--data", str(data), "-o", str(out) + "2.tflite"))
    assert "holds 1 input array(s) (x0 ... x0) but model" in line and "2 input(s)" in line


# --------------------------------------------------------------------------
# No silent harm: the accuracy budget (--max-drop) and defaults that make a good model.


@pytest.fixture(scope="module")
def notes_cnn(tmp_path_factory, digits):
    """The small digits CNN of the field notes: trained to about 72 % on held-out digits."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile(optimizer="adam", metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(digits.x_train, digits.y_train, epochs=5, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("notes")
    path = root / "cnn.keras"
    model.save(path)
    np.savez(root / "train.npz", x=digits.x_train[:480], y=digits.y_train[:480])
    np.savez(root / "val.npz", x=digits.x_test, y=digits.y_test)
    accuracy = float(np.mean(model.predict(digits.x_test, verbose=0).argmax(-1) == digits.y_test))
    return root, str(path), accuracy


def _litert_accuracy(output: str) -> float:
    match = re.search(r"accuracy Keras [0-9.]+%, LiteRT ([0-9.]+)%", output)
    assert match, output
    return float(match.group(1))


@pytest.mark.slow
def test_compress_defaults_make_a_good_pqat_model_where_the_old_ones_lost_accuracy(notes_cnn):
    root, model, original = notes_cnn
    assert 0.6 < original < 0.8, original  # the ~71 % model of the report
    common = ["compress", model, "--data", str(root / "train.npz"), "--validation",
              str(root / "val.npz"), "--technique", "pqat"]
    # The old defaults: constant 50 % from the first step, 2 epochs per stage, lr 1e-4.
    old = _run(*common, "--schedule", "constant", "--epochs", "2", "--lr", "1e-4",
               "--max-drop", "100", "-o", str(root / "old.tflite"))
    assert old.exit_code == 0, old.output
    new = _run(*common, "-o", str(root / "new.tflite"))
    assert new.exit_code == 0, new.output
    old_acc, new_acc = _litert_accuracy(old.output), _litert_accuracy(new.output)
    assert new_acc >= old_acc + 10.0, (old_acc, new_acc)
    assert new_acc >= original * 100 - 1.0, (new_acc, original)  # within the default budget
    assert "PolynomialDecay(final=0.5" in new.output  # the ramp
    assert "accuracy drop, LiteRT vs original:" in new.output and "(--max-drop 1)" in new.output
    sparsity = re.search(r"sparsity: ([0-9.]+)%", new.output)
    assert sparsity and 48.0 <= float(sparsity.group(1)) <= 52.0, new.output
    assert (root / "new.tflite").read_bytes()[4:8] == b"TFL3"


def test_compress_past_the_budget_exits_2_and_writes_nothing(notes_cnn, tmp_path):
    root, model, original = notes_cnn
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "m.tflite"
    args = ["compress", model, "--data", str(root / "train.npz"), "--validation",
            str(root / "val.npz"), "--technique", "prune", "--sparsity", "0.95", "--schedule",
            "constant", "--epochs", "1", "--lr", "1e-5", "-o", str(out)]
    result = _run(*args)
    assert result.exit_code == 2, result.output
    error = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(error) == 1, result.output
    line = error[0]
    assert "does not meet the accuracy budget" in line and "more than --max-drop 1" in line
    assert f"the original model's {original:.2%}" in line  # the drop beside the original's figure
    assert "nothing was written" in line
    for advice in ("--epochs", "--schedule ramp", "--sparsity", "tflight distill", "--max-drop"):
        assert advice in line, advice
    assert f"original model: accuracy {original:.2%} on the same 450 samples" in result.output
    assert list(out_dir.iterdir()) == []
    kept = _run(*args, "--keep-failed")
    assert kept.exit_code == 2, kept.output
    assert f"kept {out} anyway (--keep-failed)" in kept.output
    assert out.read_bytes()[4:8] == b"TFL3" and list(out_dir.iterdir()) == [out]


def test_compress_library_errors_map_to_flags_through_their_fields(files, tmp_path, digits):
    from tflight.cli.compress import _unsupported
    from tflight.errors import UnsupportedLayerError

    e = UnsupportedLayerError("any words", option="unsupported", layer="prelu",
                              kind="unsupported_layer", technique="prune",
                              reason="TF-MOT cannot prune these layers: 'prelu' (PReLU)")
    mapped = str(_unsupported(e, skip_unsupported=False, keep_unsupported_float=False))
    assert mapped.startswith("TF-MOT cannot prune these layers: 'prelu' (PReLU). Leave them")
    assert "--skip-unsupported" in mapped and "any words" not in mapped
    e.details["technique"] = "qat"
    mapped = str(_unsupported(e, skip_unsupported=False, keep_unsupported_float=False))
    assert "--keep-unsupported-float" in mapped and "--skip-unsupported" not in mapped
