"""LiteRT's real GPU accelerator on the software Vulkan device (Mesa llvmpipe).

These tests run the accelerator for real. The Vulkan driver is fetched by the
project's own `converters.gpu.setup_gpu` (Debian packages unpacked into the
cache); when that set-up fails the tests fail with its message: nothing is
skipped.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import converters
from converters.errors import ValidationError
from converters.gpu import (
    TIMING_LABEL,
    GpuUnavailableError,
    VulkanEnvironment,
    compare_gpu_outputs,
    parse_fallback,
    run_on_gpu,
    setup_gpu,
)
from tflight.bench.run import BenchmarkConfig, benchmark
from tflight.cli import cli
from tflight.errors import BenchmarkError

FAST = BenchmarkConfig(runs=5, min_time=0.0, warmup_runs=1, warmup_min_time=0.0)

# Logged by ai-edge-litert 2.3.0's GPU accelerator for an LSTM (copied from a run).
_LOG = """\
I0000 00:00:1795999191.715002   13840 delegate_webgpu.cc:759] # of threads to compile kernels = 0
ERROR: Following operations are not supported by GPU delegate:
STRIDED_SLICE: Slice does not support shrink_axis_mask parameter.
WHILE: Operation is not supported.
1 operations will run on the GPU, and the remaining 2 operations will run on the CPU.
I0000 00:00:1795999191.715192   13840 delegate_kernel.cc:984] Initializing WebGPU-based API.
ERROR: Following operations are not supported by GPU delegate:
GATHER: Only support 1D indices
14 operations will run on the GPU, and the remaining 5 operations will run on the CPU.
ERROR: Following operations are not supported by GPU delegate:
GATHER: Only support 1D indices
14 operations will run on the GPU, and the remaining 5 operations will run on the CPU.
"""


@pytest.fixture(scope="module")
def vulkan():
    return setup_gpu()


def _functional_nested(batch_size=None):
    """Functional model with `keras.Input`, a nested backbone and a new head."""
    import keras

    backbone = keras.Sequential(
        [keras.layers.Conv2D(4, 3, padding="same", activation="relu"),
         keras.layers.DepthwiseConv2D(3, padding="same"),
         keras.layers.Conv2D(6, 1, activation="relu")],
        name="backbone",
    )
    inp = keras.Input((8, 8, 1), batch_size=batch_size)
    h = backbone(inp)
    h = keras.layers.GlobalAveragePooling2D()(h)
    out = keras.layers.Dense(10, activation="softmax")(h)
    return keras.Model(inp, out)


def _lstm():
    import keras

    inp = keras.Input((5, 4), batch_size=1)
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.LSTM(6)(inp)))


def test_parse_fallback_reads_the_accelerators_log():
    ops, parts = parse_fallback(_LOG)
    assert ops == (
        "STRIDED_SLICE: Slice does not support shrink_axis_mask parameter.",
        "WHILE: Operation is not supported.",
        "GATHER: Only support 1D indices",
    )
    assert parts == ((1, 2), (14, 5))
    assert parse_fallback("I0000 Selected adapter: llvmpipe\n") == ((), ())


def test_compare_gpu_outputs_catches_nan_zeros_and_precision_loss():
    rng = np.random.default_rng(0)
    cpu = [rng.normal(size=(2, 10)).astype(np.float32)]
    fp16 = [cpu[0].astype(np.float16).astype(np.float32)]
    diff, snr, failures = compare_gpu_outputs(cpu, fp16)
    assert failures == [] and 0 < diff < 1e-2 and snr > 50
    nan = [cpu[0].copy()]
    nan[0][0, 3] = np.nan
    assert "NaN" in compare_gpu_outputs(cpu, nan)[2][0]
    assert "all zeros" in compare_gpu_outputs(cpu, [np.zeros_like(cpu[0])])[2][0]
    noisy = [cpu[0] + rng.normal(scale=0.3, size=cpu[0].shape).astype(np.float32)]
    _, snr, failures = compare_gpu_outputs(cpu, noisy)
    assert snr < 30 and "SNR" in failures[0]


def test_setup_is_cached_and_uses_mesa_25(vulkan):
    assert int(vulkan.mesa_version.split(".")[0]) >= 25, vulkan.mesa_version
    assert vulkan.icd.is_file() and vulkan.libdirs
    assert setup_gpu() == vulkan


def test_damaged_vulkan_cache_is_a_clear_error(tmp_path):
    (tmp_path / "ready.json").write_text("{oops")
    with pytest.raises(GpuUnavailableError, match="damaged"):
        setup_gpu(cache_dir=tmp_path)


def test_no_vulkan_device_is_reported_not_run_on_the_cpu(vulkan, tmp_path):
    # A driver manifest that points at no library: the loader finds no device.
    icd = tmp_path / "none.json"
    icd.write_text(json.dumps({"file_format_version": "1.0.0",
                               "ICD": {"library_path": "/nonexistent/libvulkan_none.so",
                                       "api_version": "1.3.0"}}))
    broken = VulkanEnvironment(root=vulkan.root, icd=icd, mesa_version=vulkan.mesa_version)
    content = converters.convert(_functional_nested(batch_size=1), "fp32",
                                 validate=False).flatbuffer
    with pytest.raises(GpuUnavailableError, match="no Vulkan adapter"):
        run_on_gpu(content, env=broken)


def test_functional_model_runs_fully_accelerated_with_fp16_level_error(vulkan):
    content = converters.convert(_functional_nested(batch_size=1), "fp32",
                                 validate=False).flatbuffer
    run = run_on_gpu(content, env=vulkan)
    assert run.fully_accelerated and run.fallback == () and run.partitions == ()
    assert "llvmpipe" in run.adapter
    assert run.passed, run.failures
    # fp16 arithmetic: close to the CPU's, but not bit-identical.
    assert 0 < run.max_abs_diff < 1e-2 and run.snr_db > 40
    assert run.timing_note == TIMING_LABEL and "not GPU timing" in run.timing_note
    # The same run fails when asked for more precision than fp16 gives.
    strict = run_on_gpu(content, env=vulkan, min_snr_db=200.0)
    assert not strict.passed and "SNR" in strict.failures[0]


def test_lstm_falls_back_and_the_ops_are_named(vulkan):
    # TensorFlow's own converter keeps the LSTM as a WHILE loop (converters
    # unrolls fixed-length RNNs into ops the accelerator takes).
    import tensorflow as tf

    content = tf.lite.TFLiteConverter.from_keras_model(_lstm()).convert()
    run = run_on_gpu(content, env=vulkan)
    assert not run.fully_accelerated
    assert any(op.startswith("WHILE:") for op in run.fallback), run.fallback
    assert run.partitions and all(c > 0 for _, c in run.partitions)
    assert run.passed, run.failures


def test_target_gpu_fixes_the_batch_and_runs_on_the_accelerator(vulkan, calib):
    # Dynamic batch in the Keras model: the GPU target exports it with batch 1.
    res = converters.convert(_functional_nested(), "fp16", target="gpu")
    assert [int(d) for d in res.stats.inputs[0].shape_signature] == [1, 8, 8, 1]
    rep = res.target_report
    assert rep.compatible, rep.issues
    ran = [n for n in rep.notes if n.startswith("ran on LiteRT's GPU accelerator")]
    assert ran and "not GPU timing" in ran[0] and "llvmpipe" in ran[0]
    assert any("every op was delegated" in n for n in rep.notes)


def _embedding():
    import keras

    inp = keras.Input((6,), batch_size=1, dtype="int32")
    h = keras.layers.Flatten()(keras.layers.Embedding(20, 4)(inp))
    return keras.Model(inp, keras.layers.Dense(3)(h))


def test_target_gpu_reports_fallback_ops(vulkan):
    # The accelerator takes GATHER with 1-D indices only: the embedding lookup falls back.
    res = converters.convert(_embedding(), "fp32", target="gpu")
    rep = res.target_report
    assert not rep.compatible
    assert any("GATHER" in i and "is_fully_accelerated" in i for i in rep.issues), rep.issues


def test_validation_error_is_a_conversion_error():
    # `--target gpu` raises ValidationError on bad GPU outputs: the CLI's exit 2.
    assert issubclass(ValidationError, converters.errors.ConversionError)
    assert issubclass(GpuUnavailableError, converters.errors.ConversionError)


@pytest.fixture(scope="module")
def gpu_model(tmp_path_factory, keras3_cnn):
    res = converters.convert(keras3_cnn, "fp32", target="gpu")
    return str(res.save(tmp_path_factory.mktemp("gpu") / "cnn_gpu.tflite"))


def test_bench_accelerator_gpu_runs_on_the_accelerator(vulkan, gpu_model, digits, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, x=digits.x_test[:8], y=digits.y_test[:8])
    r = benchmark(gpu_model, config=BenchmarkConfig(FAST.runs, 0.0, accelerator="gpu",
                                                    warmup_min_time=0.0),
                  inputs=str(data))
    assert r.gpu is not None and r.accelerator.startswith("gpu (llvmpipe")
    assert r.gpu.fully_accelerated and r.gpu.snr_db > 30 and math.isfinite(r.gpu.max_abs_diff)
    assert r.accuracy is not None and r.accuracy > 0.5
    lines: list[str] = []
    r.summary(lines.append)
    assert any("not GPU timing" in ln for ln in lines)
    assert any(ln.startswith("GPU accelerator  llvmpipe") for ln in lines)


def test_bench_cli_gpu_json(vulkan, gpu_model):
    res = CliRunner().invoke(
        cli, ["bench", gpu_model, "--accelerator", "gpu", "--runs", "3", "--min-time", "0",
              "--warmup-min-time", "0", "--json"], catch_exceptions=False,
    )
    assert res.exit_code == 0, res.output
    g = json.loads(res.stdout)[0]["gpu"]
    assert g["fully_accelerated"] is True and g["fallback"] == []
    assert "not GPU timing" in g["timing_note"]


def test_bench_gpu_refuses_a_dynamic_batch_with_the_fix(keras3_cnn, tmp_path):
    path = converters.convert(keras3_cnn, "fp32", validate=False).save(tmp_path / "dyn.tflite")
    with pytest.raises(BenchmarkError, match="static shapes only.*--target gpu"):
        benchmark(str(path), config=BenchmarkConfig(runs=1, min_time=0.0, accelerator="gpu"))
    res = CliRunner().invoke(cli, ["bench", str(path), "--accelerator", "gpu"])
    assert res.exit_code == 2
    assert [ln for ln in res.output.splitlines() if ln.startswith("Error:")] == [
        res.output.strip().splitlines()[-1]
    ]
