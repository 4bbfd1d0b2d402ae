"""`tflight convert` and `tflight inspect` through click's CliRunner."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.cli import cli


@pytest.fixture(scope="module")
def model_file(keras3_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "cnn.keras"
    keras3_cnn.save(path)
    return path


@pytest.fixture(scope="module")
def calib_file(calib, tmp_path_factory):
    path = tmp_path_factory.mktemp("calib") / "calib.npz"
    np.savez(path, calib)
    return path


def _run(*args):
    result = CliRunner().invoke(cli, [str(a) for a in args])
    return result


def _assert_user_error(result, match):
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.strip().splitlines() if ln.strip()]
    assert lines[-1].startswith("Error: ")
    assert match in lines[-1]


def test_convert_several_modes_table(model_file, calib_file, tmp_path):
    out = tmp_path / "out"
    result = _run("convert", model_file, "-o", out, "--mode", "fp32,fp16,int8", "-c", calib_file)
    assert result.exit_code == 0, result.output
    for mode in ("fp32", "fp16", "int8"):
        assert (out / f"cnn_{mode}.tflite").read_bytes()[4:8] == b"TFL3"
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["mode", "size", "gzip", "vs"]
    int8_row = next(ln for ln in lines if ln.startswith("int8"))
    assert "ok (SNR" in int8_row and "x " in int8_row


def test_convert_json_and_name_stem(model_file, calib_file, tmp_path):
    stem = tmp_path / "model.tflite"
    result = _run(
        "convert", model_file, "-o", stem, "-m", "fp32", "-m", "int8", "-c", calib_file, "--json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    rows = {r["mode"]: r for r in payload["results"]}
    assert set(rows) == {"fp32", "int8"}
    assert rows["fp32"]["ratio_vs_fp32"] == 1.0 and rows["int8"]["ratio_vs_fp32"] > 1.0
    assert rows["int8"]["validation"]["passed"]
    assert (tmp_path / "model_fp32.tflite").exists() and (tmp_path / "model_int8.tflite").exists()


def test_convert_single_file_and_inspect(model_file, tmp_path):
    out = tmp_path / "one.tflite"
    result = _run("convert", model_file, "-o", out, "--target", "gpu")
    assert result.exit_code == 0, result.output
    assert out.exists()
    text = _run("inspect", out)
    assert text.exit_code == 0, text.output
    assert "CONV_2D" in text.output and "GPU delegate: compatible" in text.output
    data = json.loads(_run("inspect", out, "--json").output)
    assert data["inputs"][0]["shape_signature"] == [1, 8, 8, 1]  # the GPU target fixes the batch
    assert data["weights_bytes"] + data["graph_bytes"] == data["size"]


def test_convert_user_errors(model_file, calib, tmp_path):
    text = tmp_path / "notes.keras"
    text.write_text("not a model")
    wrong_shape = tmp_path / "wrong_shape.npy"
    np.save(wrong_shape, np.zeros((8, 9, 9, 1), np.float32))
    wrong_dtype = tmp_path / "wrong_dtype.npy"
    np.save(wrong_dtype, (calib * 255).astype(np.uint8))
    out = tmp_path / "out.tflite"
    cases = [
        (("convert", tmp_path / "missing.keras", "-o", out), "No such file"),
        (("convert", text, "-o", out), "not a Keras model archive"),
        (("convert", model_file, "-o", out, "-m", "int8", "-c", wrong_shape), "got 9, expected 8"),
        (("convert", model_file, "-o", out, "-m", "int8", "-c", wrong_dtype), "dtype uint8"),
        (("convert", model_file, "-o", out, "-m", "int8"), "--calibration FILE"),
        (("convert", model_file, "-o", out, "-m", "int8", "-c", tmp_path / "nope.npz"), "no such file"),
        (("convert", model_file, "-o", out, "-m", "fp16", "-t", "edgetpu"), "only full-integer"),
    ]
    for args, match in cases:
        _assert_user_error(_run(*args), match)
    # These errors come before any conversion; a failure after some modes were
    # written is tested in tests/test_convert_isolation.py.


def test_bad_mode_word(model_file, tmp_path):
    result = _run("convert", model_file, "-o", tmp_path / "x.tflite", "-m", "int4")
    assert result.exit_code == 2
    assert "'int4' is not a mode" in result.output


def test_inspect_user_errors(model_file, tmp_path):
    good = tmp_path / "good.tflite"
    assert _run("convert", model_file, "-o", good).exit_code == 0
    content = good.read_bytes()
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(content[: len(content) // 3])
    empty = tmp_path / "empty.tflite"
    empty.write_bytes(b"")
    text = tmp_path / "readme.txt"
    text.write_text("hello, this is text and not a flatbuffer at all\n")
    cases = [
        (tmp_path / "missing.tflite", "No such file"),
        (truncated, "truncated or corrupt"),
        (empty, "is empty"),
        (text, "TFL3 file identifier"),
        (model_file, "TFL3 file identifier"),
    ]
    for path, match in cases:
        _assert_user_error(_run("inspect", path), match)


def test_data_errors_name_the_flag_not_the_python_argument(model_file, calib, tmp_path):
    # The library's error names its argument (`validation_data`, e.option); the
    # command says --validation / --calibration with the file the user gave.
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((4, 9, 9, 1), np.float32))
    good = tmp_path / "good.npy"
    np.save(good, calib)
    out = tmp_path / "out.tflite"
    for flag, args in (
        ("--validation", ("-c", good, "--validation", wrong)),
        ("--calibration", ("-c", wrong)),
    ):
        result = _run("convert", model_file, "-o", out, "-m", "int8", *args)
        _assert_user_error(result, f"{flag} {wrong}")
        assert "_data`" not in result.output, result.output
    assert not out.exists()


def test_library_errors_carry_the_argument_they_are_about(keras3_cnn, tmp_path):
    import converters

    with pytest.raises(converters.errors.RepresentativeDataError) as info:
        converters.convert(keras3_cnn, "int8")
    e = info.value
    assert (e.option, e.kind) == ("representative_data", "missing")
    assert "needs `representative_data`" in str(e)
    assert e.message_for("--calibration FILE").startswith("Mode 'int8' needs --calibration FILE ")
    with pytest.raises(converters.errors.RepresentativeDataError) as info:
        converters.convert(keras3_cnn, "fp32", validation_data=tmp_path / "none.npz")
    assert (info.value.option, info.value.kind) == ("validation_data", "missing")


def test_a_quantized_file_no_smaller_than_fp32_is_pointed_out(tmp_path):
    """int8 traces a fixed-length LSTM unrolled: more ops than fp32's loop, and the table says why."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((24, 3)), keras.layers.LSTM(4), keras.layers.Dense(2)])
    model.save(tmp_path / "rnn.keras")
    np.savez(tmp_path / "c.npz", np.random.default_rng(0).normal(size=(16, 24, 3)).astype("float32"))
    result = _run("convert", tmp_path / "rnn.keras", "-o", tmp_path / "out", "-m", "fp32,int8",
                  "-c", tmp_path / "c.npz")
    assert result.exit_code == 0, result.output
    sizes = {m: (tmp_path / "out" / f"rnn_{m}.tflite").stat().st_size for m in ("fp32", "int8")}
    noted = "note: int8 is not smaller than fp32" in result.output
    assert noted == (sizes["int8"] >= sizes["fp32"]), result.output
    assert noted, sizes  # an unrolled 24-step LSTM of 4 units: the ops outweigh the weights
