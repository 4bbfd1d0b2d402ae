"""A native crash in the converter never kills the caller; partial results are kept;
recurrent Keras 3 models convert; validation is held out from calibration."""

from __future__ import annotations

import os

import numpy as np
import pytest
from click.testing import CliRunner

import converters
from converters import errors
from converters._worker import CRASH_HOOK
from tflight.cli import cli


def test_a_crash_in_one_mode_keeps_the_others(keras3_cnn, calib, monkeypatch):
    # The child calls os.abort() (SIGABRT, a real native crash of the process
    # that runs the converter) when it starts int8.
    monkeypatch.setenv(CRASH_HOOK, "int8")
    with pytest.raises(errors.PartialConversionError) as info:
        converters.convert_many(keras3_cnn, "fp32,int8,dynamic", representative_data=calib)
    e = info.value
    assert list(e.results) == ["fp32", "dynamic"]
    assert all(r.validation.passed for r in e.results.values())
    assert list(e.failures) == ["int8"]
    failure = e.failures["int8"]
    assert failure.mode == "int8"
    assert "crashed (SIGABRT)" in str(failure) and "'int8'" in str(failure)
    assert failure.log_path and os.path.exists(failure.log_path)
    # The dead child is replaced: the next call works.
    monkeypatch.delenv(CRASH_HOOK)
    assert converters.convert(keras3_cnn, "int8", representative_data=calib).validation.passed


def test_a_crash_in_the_only_mode_raises_its_own_error(keras3_cnn, calib, monkeypatch):
    monkeypatch.setenv(CRASH_HOOK, "fp16")
    with pytest.raises(errors.ConversionError, match=r"crashed \(SIGABRT\).*'fp16'") as info:
        converters.convert(keras3_cnn, "fp16")
    assert not isinstance(info.value, errors.PartialConversionError)


def test_a_failing_mode_keeps_the_others(keras3_cnn, calib, capfd):
    strict = {"int8": converters.Thresholds(min_snr_db=200.0)}
    events = []
    capfd.readouterr()
    with pytest.raises(errors.PartialConversionError) as info:
        converters.convert_many(
            keras3_cnn,
            ["fp32", "int8"],
            representative_data=calib,
            thresholds=strict,
            progress=lambda event, mode: events.append((event, mode)),
        )
    assert events == [("start", "fp32"), ("end", "fp32"), ("start", "int8"), ("end", "int8")]
    # The converter's and calibrator's chatter stays in their log.
    out, err = capfd.readouterr()
    assert "fully_quantize" not in out + err and "inference_type" not in out + err
    assert "Starting new session" not in err
    e = info.value
    assert list(e.results) == ["fp32"] and list(e.failures) == ["int8"]
    assert isinstance(e.failures["int8"], errors.ValidationError)
    assert "dynamic" in str(e.failures["int8"])  # int8 failures suggest dynamic mode
    assert "int8:" in str(e)


def test_validation_is_held_out_from_calibration(keras3_cnn, calib, digits):
    data = digits.x_train[:40]
    r = converters.convert(keras3_cnn, "int8", representative_data=data)
    assert r.validation.sample_source == "held-out representative_data"
    assert r.validation.samples == 10
    given = converters.convert(
        keras3_cnn, "int8", representative_data=data, validation_data=digits.x_test[:20]
    )
    assert given.validation.sample_source == "validation_data"
    assert given.validation.samples == 20
    # Calibration used all 40 samples when separate validation data was given,
    # 30 otherwise: the files differ.
    assert given.flatbuffer != r.flatbuffer
    few = converters.convert(keras3_cnn, "int8", representative_data=data[:4])
    assert few.validation.sample_source == "in-sample representative_data"
    fp32 = converters.convert(keras3_cnn, "fp32", representative_data=data)
    assert fp32.validation.sample_source == "representative_data"
    assert fp32.validation.samples == 32


# Recurrent models: trained on the digits (rows as time steps) so that
# quantized outputs are meaningful, built with keras.Input.


def _train(model, digits, *, x=None):
    import keras

    x = digits.x_train.reshape(-1, 8, 8) if x is None else x
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, digits.y_train, epochs=3, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def bigru(digits):
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((8, 8))
    h = keras.layers.Bidirectional(keras.layers.GRU(12, return_sequences=True))(x)
    h = keras.layers.LSTM(12)(h)
    return _train(keras.Model(x, keras.layers.Dense(10)(h)), digits)


@pytest.fixture(scope="module")
def embedding_lstm(digits):
    import keras

    keras.utils.set_random_seed(0)
    tokens = keras.Input((8,), batch_size=1, dtype="int32")
    h = keras.layers.Embedding(17, 8)(tokens)
    h = keras.layers.LSTM(16)(h)
    model = keras.Model(tokens, keras.layers.Dense(10)(h))
    # Each row of the digit becomes a token: its column sum, 0..16.
    return _train(model, digits, x=_tokens(digits.x_train))


def _tokens(x):
    return np.clip(np.round(x.reshape(-1, 8, 8).sum(axis=2) * 2), 0, 16).astype("int32")


@pytest.mark.parametrize("mode", ["fp32", "fp16", "dynamic", "int8"])
def test_recurrent_models_convert_in_every_mode(bigru, embedding_lstm, digits, mode):
    seq = digits.x_train.reshape(-1, 8, 8)
    test = digits.x_test.reshape(-1, 8, 8)
    for model, data, held in (
        (bigru, seq[:64], test[:100]),
        (embedding_lstm, _tokens(digits.x_train[:64]), _tokens(digits.x_test[:100])),
    ):
        r = converters.convert(model, mode, representative_data=data)
        assert r.validation.passed, r.validation.summary()
        assert "WHILE" not in r.ops
        if mode == "int8":
            assert "int8" in r.op_dtypes["FULLY_CONNECTED"]
        ref = np.asarray(model(held, training=False))
        got = r.load().predict(held)
        assert np.mean(got.argmax(1) == ref.argmax(1)) >= 0.9


def test_recurrent_model_with_free_time_steps(digits):
    import keras

    keras.utils.set_random_seed(0)
    x = keras.Input((None, 8))
    model = keras.Model(x, keras.layers.Dense(10)(keras.layers.LSTM(8)(x)))
    seq = digits.x_train[:32].reshape(-1, 8, 8)
    with pytest.raises(errors.PartialConversionError) as info:
        converters.convert_many(model, "fp32,int8", representative_data=seq)
    fp32 = info.value.results["fp32"]
    assert fp32.validation.passed and "WHILE" in fp32.ops
    assert "fixed sequence length" in str(info.value.failures["int8"])


# The command line.


@pytest.fixture(scope="module")
def model_file(keras3_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "cnn.keras"
    keras3_cnn.save(path)
    return path


@pytest.fixture(scope="module")
def calib_file(calib, tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npy"
    np.save(path, calib)
    return path


def _run(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def test_cli_writes_what_converted_and_reports_the_crash(model_file, calib_file, tmp_path, monkeypatch):
    monkeypatch.setenv(CRASH_HOOK, "int8")
    out = tmp_path / "out"
    result = _run("convert", model_file, "-o", out, "-m", "fp32,int8,fp16", "-c", calib_file)
    # A native crash of the converter is ours, not the user's: exit 1, "internal error".
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output
    assert sorted(p.name for p in out.iterdir()) == ["cnn_fp16.tflite", "cnn_fp32.tflite"]
    errors_ = [ln for ln in result.output.splitlines() if ln.startswith("Error: ")]
    assert len(errors_) == 1 and errors_[0].startswith("Error: int8: internal error: ")
    assert "crashed" in errors_[0]
    assert "Converter log: " in errors_[0]
    assert not list(out.glob("*.tmp"))


def test_cli_never_writes_over_its_input(model_file, tmp_path):
    copy = tmp_path / "m.keras"
    copy.write_bytes(model_file.read_bytes())
    before = copy.read_bytes()
    link = tmp_path / "link.tflite"
    link.symlink_to(copy)
    for out in (copy, link, tmp_path / "sub" / ".." / "m.keras", tmp_path / "other.keras"):
        result = _run("convert", copy, "-o", out)
        assert result.exit_code == 2, result.output
        assert result.output.strip().splitlines()[-1].startswith("Error: ")
    assert copy.read_bytes() == before


def test_cli_validation_advice_names_the_flags(model_file, calib_file, tmp_path):
    result = _run(
        "convert", model_file, "-o", tmp_path / "m.tflite", "-m", "int8", "-c", calib_file,
        "--min-snr", "200",
    )
    assert result.exit_code == 2
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "--min-snr" in last and "--no-validate" in last
    assert "validate=False" not in last and "-m dynamic" in last
    assert not (tmp_path / "m.tflite").exists()


def test_cli_json_lists_results_and_failures(model_file, tmp_path, monkeypatch):
    import json

    monkeypatch.setenv(CRASH_HOOK, "fp16")
    out = tmp_path / "m.tflite"
    result = _run("convert", model_file, "-o", out, "-m", "fp32,fp16", "--json")
    assert result.exit_code == 1
    payload = json.loads(result.stdout)
    assert [r["mode"] for r in payload["results"]] == ["fp32"]
    assert "crashed" in payload["failures"]["fp16"]
    assert (tmp_path / "m_fp32.tflite").exists() and not (tmp_path / "m_fp16.tflite").exists()
    assert "converting fp32 (1/2)" not in result.output  # no progress when not on a terminal


_START_UP = ("absl::InitializeLog", "cudart_stub", "cuInit", "cpu_feature_guard", "oneDNN")


def _start_tensorflow_through_tflight(env: dict) -> str:
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import os, sys\n"
        "from tflight._keras import tf\n"
        "print(tf.reduce_sum(tf.ones((2, 2))).numpy(), os.environ.get('TF_CPP_MIN_LOG_LEVEL'))\n"
        "print('a line of the user', file=sys.stderr)\n"
    )
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(env, PYTHONPATH=str(root)), capture_output=True,
        text=True, timeout=300, check=True,
    )
    assert proc.stdout.split() == ["4.0", env.get("TF_CPP_MIN_LOG_LEVEL", "2")], proc.stdout
    assert "a line of the user" in proc.stderr
    return proc.stderr


def test_tensorflow_starts_quietly_unless_the_user_set_its_logging():
    base = {k: v for k, v in os.environ.items()
            if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFLIGHT_VERBOSE")}
    quiet = _start_tensorflow_through_tflight(base)
    assert not [k for k in _START_UP if k in quiet], quiet
    # The user's own setting wins: TensorFlow then prints what it always prints.
    loud = _start_tensorflow_through_tflight(dict(base, TF_CPP_MIN_LOG_LEVEL="0"))
    assert [k for k in _START_UP if k in loud], loud
