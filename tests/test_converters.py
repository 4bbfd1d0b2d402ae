"""converters with real TensorFlow and real LiteRT: every mode, every model source,
every representative-data form, and the mistakes users make."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

import converters
from converters import errors
from converters.data import as_arrays
from converters.source import load_source

MODES = ["fp32", "fp16", "dynamic", "int8", "int16x8"]

# Per mode: an op that must be present, and the dtype CONV_2D computes in.
EXPECTED = {
    "fp32": ("CONV_2D", "float32"),
    "fp16": ("DEQUANTIZE", "float32"),
    "dynamic": ("FULLY_CONNECTED", "float32"),
    "int8": ("QUANTIZE", "int8"),
    "int16x8": ("QUANTIZE", "int16"),
}


def _weights(model):
    return [np.array(w) for w in model.get_weights()]


@pytest.fixture(scope="module")
def keras3_results(keras3_cnn, calib):
    before = _weights(keras3_cnn)
    results = converters.convert_many(keras3_cnn, MODES, representative_data=calib)
    after = _weights(keras3_cnn)
    assert all(np.array_equal(a, b) for a, b in zip(before, after, strict=True))
    return results


@pytest.fixture(scope="module")
def tf_keras_results(tf_keras_cnn, calib):
    return converters.convert_many(tf_keras_cnn, MODES, representative_data=calib)


def test_mode_and_target_words():
    # The exported set is pinned in tests/test_public_api.py; these are the CLI words.
    assert [m.value for m in converters.Mode] == MODES
    assert [t.value for t in converters.Target] == ["cpu", "gpu", "edgetpu", "npu"]


@pytest.mark.parametrize("generation", ["keras3", "tf_keras"])
@pytest.mark.parametrize("mode", MODES)
def test_each_mode_converts_validates_and_runs(
    generation, mode, keras3_results, tf_keras_results, keras3_cnn, tf_keras_cnn, digits, tmp_path
):
    results = keras3_results if generation == "keras3" else tf_keras_results
    source = keras3_cnn if generation == "keras3" else tf_keras_cnn
    r = results[mode]
    assert r.mode is converters.Mode(mode)
    assert r.flatbuffer[4:8] == b"TFL3"
    assert r.size == len(r.flatbuffer)
    assert r.gzip_size == len(gzip.compress(r.flatbuffer, compresslevel=9, mtime=0))
    op, conv_dtype = EXPECTED[mode]
    assert op in r.ops
    assert conv_dtype in r.op_dtypes["CONV_2D"]
    if mode == "dynamic":
        assert "hybrid" in r.op_dtypes["FULLY_CONNECTED"]
    if mode in ("int8", "int16x8", "dynamic"):
        assert r.quantized_tensors
    else:
        assert not r.quantized_tensors
    assert r.validation is not None and r.validation.passed
    # One call calibrates every integer mode once; all modes validate on the
    # quarter of the 32 representative samples held out from calibration.
    assert r.validation.samples == 8
    assert r.validation.sample_source == "held-out representative_data"
    # The file round-trips and predicts like the source model on held-out data.
    path = r.save(tmp_path / "m.tflite")
    model = converters.TFLiteModel(path)
    probs = model.predict(digits.x_test, batch_size=100)
    assert probs.shape == (len(digits.x_test), 10)
    ref = np.asarray(source(digits.x_test, training=False))
    agreement = np.mean(probs.argmax(1) == ref.argmax(1))
    assert agreement >= (0.999 if mode == "fp32" else 0.95)
    assert mode in r.summary()


def test_quantized_modes_are_smaller(keras3_results):
    size = {m: r.size for m, r in keras3_results.items()}
    assert size["fp16"] < size["fp32"]
    assert size["int8"] < size["fp16"]
    assert size["dynamic"] < size["fp16"]


def test_convert_many_traces_once(keras3_cnn, calib, monkeypatch):
    from converters.source import Source

    calls = []
    for name in ("freeze", "export"):
        original = getattr(Source, name)

        def counting(self, *args, _name=name, _original=original, **kwargs):
            calls.append(_name)
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(Source, name, counting)
    results = converters.convert_many(
        keras3_cnn, "fp32,fp16,int8", representative_data=calib, validate=False
    )
    assert list(results) == ["fp32", "fp16", "int8"]
    assert calls == ["freeze"]
    assert all(r.validation is None for r in results.values())
    # Every file carries a serving signature named after the model's inputs.
    model = results["int8"].load()
    assert model.input_names == [load_source(keras3_cnn).inputs[0].name]
    assert model.output_names == ["output_0"]


@pytest.fixture(scope="module")
def two_input_model():
    import keras

    keras.utils.set_random_seed(1)
    img = keras.Input((8, 8, 1), name="img")
    meta = keras.Input((3,), name="meta")
    h = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(img))
    h = keras.layers.Concatenate()([h, keras.layers.Dense(4)(meta)])
    return keras.Model([img, meta], [keras.layers.Dense(10)(h), keras.layers.Dense(1)(h)])


@pytest.mark.parametrize("mode", ["fp32", "int8"])
def test_multi_input_model(two_input_model, calib, mode):
    meta = np.random.default_rng(0).random((32, 3)).astype("float32")
    r = converters.convert(two_input_model, mode, representative_data={"img": calib, "meta": meta})
    assert r.validation.passed and len(r.validation.outputs) == 2
    model = r.load()
    assert model.input_names == ["img", "meta"]
    assert model.output_names == ["output_0", "output_1"]
    logits, reg = model.predict([calib, meta])
    ref_logits, ref_reg = (np.asarray(t) for t in two_input_model([calib, meta]))
    tol = 1e-4 if mode == "fp32" else 0.1 * np.abs(ref_logits).max()
    np.testing.assert_allclose(logits, ref_logits, atol=tol)
    np.testing.assert_allclose(reg, ref_reg, atol=tol)


def test_multi_input_wrong_count(two_input_model, calib):
    with pytest.raises(errors.RepresentativeDataError, match="2 input"):
        converters.convert(two_input_model, "int8", representative_data=calib)


@pytest.mark.slow
def test_model_files_and_saved_models(keras3_cnn, tf_keras_cnn, calib, tmp_path):
    import tensorflow as tf

    keras3_path = tmp_path / "k3.keras"
    keras3_cnn.save(keras3_path)
    h5_path = tmp_path / "tfk.h5"
    tf_keras_cnn.save(h5_path)
    tfk_keras_path = tmp_path / "tfk.keras"
    tf_keras_cnn.save(tfk_keras_path)
    saved = tmp_path / "saved"
    tf.saved_model.save(tf_keras_cnn, str(saved))
    exported = tmp_path / "exported"
    keras3_cnn.export(str(exported), format="tf_saved_model", verbose=False)
    for path in (keras3_path, h5_path, tfk_keras_path, saved, exported):
        r = converters.convert(str(path), "int8", representative_data=calib)
        assert r.validation.passed, path
        assert r.stats.inputs[0].shape_signature == (-1, 8, 8, 1)
    assert load_source(h5_path).kind == "tf_keras"
    assert load_source(tfk_keras_path).kind == "tf_keras"
    assert load_source(keras3_path).kind == "keras3"
    assert load_source(saved).kind == "saved_model"


def test_representative_data_forms(keras3_cnn, calib, tmp_path):
    import tensorflow as tf

    inputs = load_source(keras3_cnn).inputs
    npy = tmp_path / "c.npy"
    np.save(npy, calib)
    npz = tmp_path / "c.npz"
    np.savez(npz, calib)

    def gen():
        yield from calib

    forms = {
        "array": calib,
        "list": [calib],
        "npy": npy,
        "npz": str(npz),
        "dataset": tf.data.Dataset.from_tensor_slices(calib),
        "batched": tf.data.Dataset.from_tensor_slices(calib).batch(5),
        "labelled": tf.data.Dataset.from_tensor_slices((calib, np.zeros(32))).batch(8),
        "generator function": gen,
        "generator": gen(),
        "single sample": calib[0],
    }
    for name, data in forms.items():
        (arr,) = as_arrays(data, inputs)
        want = calib[:1] if name == "single sample" else calib
        np.testing.assert_array_equal(arr, want, err_msg=name)
        assert arr.dtype == np.float32


def test_int8_from_dataset_and_file(keras3_cnn, calib, tmp_path):
    import tensorflow as tf

    np.save(tmp_path / "c.npy", calib)
    a = converters.convert(keras3_cnn, "int8", representative_data=tmp_path / "c.npy")
    b = converters.convert(
        keras3_cnn, "int8", representative_data=tf.data.Dataset.from_tensor_slices(calib)
    )
    assert a.flatbuffer == b.flatbuffer


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.zeros((4, 9, 9, 1), np.float32), r"axis 1: got 9, expected 8"),
        (np.zeros((4, 64), np.float32), r"has shape \(4, 64\)"),
        (np.zeros((40, 8, 8), np.float32), r"has shape \(40, 8, 8\) .* x\[\.\.\., None\]"),
        (np.zeros((8, 8, 1), np.float32)[None, None], r"has shape \(1, 1, 8, 8, 1\)"),
        (np.zeros((4, 8, 8, 1), np.uint8), r"dtype uint8 .* float32"),
        (np.full((4, 8, 8, 1), np.nan, np.float32), "NaN"),
        ([np.zeros((4, 8, 8, 1), np.float32)] * 2, r"2 array\(s\) but the model has 1"),
        (np.zeros((0, 8, 8, 1), np.float32), "no samples"),
        ("no/such/file.npz", "no such file"),
        (object(), "must be a numpy array"),
        ((x for x in []), "yielded no samples"),
    ],
)
def test_bad_representative_data(keras3_cnn, data, match):
    with pytest.raises(errors.RepresentativeDataError, match=match):
        converters.convert(keras3_cnn, "int8", representative_data=data)


def test_calibration_required(keras3_cnn):
    with pytest.raises(errors.RepresentativeDataError, match="needs `representative_data`"):
        converters.convert(keras3_cnn, "int8")


def test_not_a_numpy_file(keras3_cnn, tmp_path):
    bad = tmp_path / "c.npy"
    bad.write_text("not numpy")
    with pytest.raises(errors.RepresentativeDataError, match="not a .npy/.npz file"):
        converters.convert(keras3_cnn, "int8", representative_data=bad)


def test_bad_model_inputs(tmp_path):
    text = tmp_path / "model.keras"
    text.write_text("hello")
    empty_dir = tmp_path / "empty"
    empty_dir.mkdir()
    tfl = tmp_path / "m.tflite"
    tfl.write_bytes(b"x")
    cases = [
        (tmp_path / "missing.keras", errors.ModelLoadError, "No such file"),
        (text, errors.ModelLoadError, "not a Keras model archive"),
        (empty_dir, errors.ModelLoadError, "not a SavedModel"),
        (tfl, errors.ModelLoadError, "already a .tflite"),
        (tmp_path / "x.onnx", errors.ModelLoadError, "No such file"),
        (42, errors.UnsupportedModelError, "got int"),
    ]
    (tmp_path / "weird.bin").write_bytes(b"1")
    cases.append((tmp_path / "weird.bin", errors.ModelLoadError, "suffix '.bin'"))
    for model, exc, match in cases:
        with pytest.raises(exc, match=match):
            converters.convert(model, "fp32")


def test_bad_mode_target_and_dtypes(keras3_cnn, calib):
    with pytest.raises(errors.ConversionError, match="Unknown mode 'int4'"):
        converters.convert(keras3_cnn, "int4")
    with pytest.raises(errors.TargetError, match="Unknown target 'tpu'"):
        converters.convert(keras3_cnn, target="tpu")
    with pytest.raises(errors.TargetError, match="only full-integer int8"):
        converters.convert(keras3_cnn, "fp16", target="edgetpu")
    with pytest.raises(errors.ConversionError, match="does not fit mode 'fp32'"):
        converters.convert(keras3_cnn, "fp32", input_dtype="int8")
    with pytest.raises(errors.ConversionError, match="does not fit mode 'int16x8'"):
        converters.convert(keras3_cnn, "int16x8", representative_data=calib, input_dtype="int8")


def test_validation_failure_says_by_how_much(keras3_cnn, calib):
    strict = converters.Thresholds(min_snr_db=200.0)
    with pytest.raises(errors.ValidationError, match=r"short by \d+\.\d dB"):
        converters.convert(keras3_cnn, "int8", representative_data=calib, thresholds=strict)
    with pytest.raises(ValueError, match="min_top1"):
        converters.Thresholds(min_top1=1.5)


def test_subclassed_model_is_refused():
    import keras

    class Net(keras.Model):
        def call(self, x):
            return x * 2

    with pytest.raises(errors.UnsupportedModelError, match="no defined inputs"):
        converters.convert(Net(), "fp32")


def test_int8_io_and_predict_quantizes(keras3_cnn, calib, digits):
    r = converters.convert(
        keras3_cnn, "int8", representative_data=calib, input_dtype="int8", output_dtype="int8"
    )
    assert r.stats.inputs[0].dtype == "int8" and r.stats.inputs[0].quantized
    assert r.stats.outputs[0].dtype == "int8"
    model = r.load()
    ref = np.asarray(keras3_cnn(digits.x_test[:100], training=False))
    for n in (1, 33, 100):
        out = model.predict(digits.x_test[:n], batch_size=16)
        assert out.dtype == np.float32 and out.shape == (n, 10)
        assert np.mean(out.argmax(1) == ref[:n].argmax(1)) >= 0.9
    with pytest.raises(errors.RepresentativeDataError, match="expects arrays of shape"):
        model.predict(np.zeros((2, 4, 4, 1), np.float32))


def test_edgetpu_target(keras3_cnn, calib, tmp_path):
    import shutil

    r = converters.convert(keras3_cnn, "int8", representative_data=calib, target="edgetpu")
    assert r.input_dtype == r.output_dtype == "int8"
    assert r.stats.inputs[0].shape_signature == (1, 8, 8, 1)
    assert r.target_report.compatible
    assert not any(d in ("float32", "hybrid") for by in r.op_dtypes.values() for d in by)
    saved = r.save(tmp_path / "m.tflite")
    compiled = converters.ConversionResult.compiled_path(saved)
    if shutil.which("edgetpu_compiler") is None:
        assert r.target_report.notes == (
            "edgetpu_compiler is not on PATH: checked statically by op name (Coral's table), "
            "not compiled",
        )
        assert r.target_report.compiled is None and not compiled.exists()
    else:
        assert r.target_report.notes[0].startswith("edgetpu_compiler: ")
        assert compiled.read_bytes() == r.target_report.compiled
        assert r.target_report.compiled[4:8] == b"TFL3"
    # A fixed-batch model still predicts any number of samples.
    assert r.load().predict(calib[:5]).shape == (5, 10)
    with pytest.raises(errors.TargetError, match="int8 or uint8 inputs"):
        converters.convert(
            keras3_cnn, "int8", representative_data=calib, target="edgetpu", input_dtype="float32"
        )


def test_gpu_and_npu_targets(keras3_cnn, calib):
    import dataclasses

    from converters.targets import check_model

    gpu = converters.convert(keras3_cnn, "fp16", target="gpu")
    assert gpu.target_report.target is converters.Target.GPU
    assert gpu.target_report.compatible
    npu = converters.convert(keras3_cnn, "int8", representative_data=calib, target="npu")
    assert npu.stats.inputs[0].shape_signature == (1, 8, 8, 1)
    assert npu.target_report.compatible and not npu.target_report.issues
    # The same file, with one op said to compute in float and one op no NPU
    # compiler knows: both are reported and the model is not compatible.
    op_dtypes = dict(npu.stats.op_dtypes)
    op_dtypes["CONV_2D"] = {"float32": 1}
    stats = dataclasses.replace(
        npu.stats, op_dtypes=op_dtypes, ops={**npu.stats.ops, "RFFT2D": 1}
    )
    report = check_model(converters.Target.NPU, converters.Mode.INT8, npu.flatbuffer, stats)
    assert not report.compatible
    assert any("computing in float" in i and "CONV_2D" in i for i in report.issues)
    assert any("RFFT2D" in i for i in report.issues)
    with pytest.raises(errors.TargetError, match="NPU compilers"):
        converters.convert(keras3_cnn, "dynamic", target="npu")


def test_sparse_storage_shrinks_a_pruned_model():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(256, activation="relu"), keras.layers.Dense(10)]
    )
    rng = np.random.default_rng(0)
    for layer in model.layers:
        w, b = layer.get_weights()
        w[rng.random(w.shape) < 0.85] = 0.0
        layer.set_weights([w, b])
    dense = converters.convert(model, "fp32")
    sparse = converters.convert(model, "fp32", sparse=True)
    assert sparse.sparse and "DENSIFY" in sparse.ops
    assert sparse.size < 0.6 * dense.size
    assert dense.gzip_size < 0.5 * dense.size
    assert sparse.validation.passed


def test_save_is_atomic(keras3_results, tmp_path):
    r = keras3_results["fp32"]
    path = r.save(tmp_path / "nested" / "dir" / "m.tflite")
    assert path.read_bytes() == r.flatbuffer
    r.save(path)  # overwrite in place
    assert os.listdir(path.parent) == ["m.tflite"]
    with pytest.raises(errors.ConversionError, match="is a directory"):
        r.save(tmp_path)


def test_verify_and_load_reject_corrupt_files(keras3_results, tmp_path):
    good = keras3_results["int8"].flatbuffer
    rng = np.random.default_rng(0)
    flipped = bytearray(good)
    for i in rng.integers(8, len(good), 40):
        flipped[i] ^= 0xFF
    cases = {
        "truncated": good[: len(good) // 2],
        "short": good[:12],
        "random": rng.bytes(4096),
        "text": b"this is a text file, not a model\n" * 20,
        "empty": b"",
        "flipped": bytes(flipped),
    }
    for name, content in cases.items():
        path = tmp_path / f"{name}.tflite"
        path.write_bytes(content)
        with pytest.raises(errors.InvalidTFLiteError):
            converters.verify_tflite(path)
        with pytest.raises(errors.InvalidTFLiteError):
            converters.TFLiteModel(content)
        with pytest.raises(errors.InvalidTFLiteError):
            converters.inspect(path)
    with pytest.raises(errors.InvalidTFLiteError, match="No such file"):
        converters.verify_tflite(tmp_path / "missing.tflite")
    with pytest.raises(errors.InvalidTFLiteError, match="is a directory"):
        converters.verify_tflite(tmp_path)
    assert converters.verify_tflite(good).load_error is None


def test_verify_catches_out_of_range_indices(keras3_results):
    from ai_edge_litert import schema_py_generated as s
    from tensorflow.lite.tools import flatbuffer_utils

    model = s.ModelT.InitFromPackedBuf(keras3_results["fp32"].flatbuffer, 0)
    op = model.subgraphs[0].operators[0]
    op.inputs = [10_000, *list(op.inputs)[1:]]
    bad = bytes(flatbuffer_utils.convert_object_to_bytearray(model))
    with pytest.raises(errors.InvalidTFLiteError, match="refers to tensor 10000"):
        converters.verify_tflite(bad)


def test_inspect_report(keras3_cnn, calib, tmp_path):
    r = converters.convert(keras3_cnn, "int8", representative_data=calib, input_dtype="int8")
    path = r.save(tmp_path / "m.tflite")
    report = converters.inspect(path)
    assert report.size == r.size
    assert report.stats.weights_bytes + report.stats.graph_bytes == r.size
    assert report.stats.ops == r.ops
    (inp,) = report.stats.inputs
    assert inp.dtype == "int8" and len(inp.scales) == 1 and len(inp.zero_points) == 1
    assert report.gpu_compatible
    import json

    d = json.loads(json.dumps(report.to_dict()))
    assert d["inputs"][0]["dtype"] == "int8"
    text = report.summary()
    assert "CONV_2D" in text and "zero point" in text and "GPU delegate: compatible" in text


def test_saved_model_fallback_when_freezing_fails(keras3_cnn, calib, monkeypatch):
    from converters.source import Source

    def refuse(self, **kwargs):
        raise RuntimeError("this graph cannot be frozen")

    monkeypatch.setattr(Source, "freeze", refuse)
    results = converters.convert_many(keras3_cnn, ["fp32", "int8"], representative_data=calib)
    assert all(r.validation.passed for r in results.values())
    assert results["int8"].load().output_names == ["output_0"]


@pytest.mark.parametrize(
    ("probe", "match"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "crashed"),
        ("import time; time.sleep(30)", "did not finish"),
        ("raise SystemExit(3)", "exited with code 3"),
    ],
)
def test_a_crashing_or_hanging_load_cannot_take_the_caller_down(
    keras3_results, monkeypatch, probe, match
):
    # The child process stands in for LiteRT meeting a hostile file: whatever
    # it does, the caller gets a typed error and carries on.
    import converters.verify as verify

    monkeypatch.setattr(verify, "_PROBE", probe)
    with pytest.raises(errors.InvalidTFLiteError, match=match):
        verify.verify_tflite(keras3_results["fp32"].flatbuffer, timeout=3)
