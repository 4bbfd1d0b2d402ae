"""Benchmarking .tflite files on the host: real LiteRT, tiny real models."""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from tflight.bench.run import (
    BenchmarkConfig,
    InputDataError,
    append_history,
    benchmark,
    benchmark_many,
    plot_latency_vs_size,
    read_history,
)
from tflight.cli import cli
from tflight.devices.profiles import PROFILES
from tflight.errors import BenchmarkError

FAST = BenchmarkConfig(runs=20, min_time=0.05, warmup_runs=1, warmup_min_time=0.0)


@pytest.fixture(scope="module")
def models(tmp_path_factory, keras3_cnn, calib):
    """The trained tiny CNN as fp32 and full-int8 .tflite files (converted once)."""
    import converters

    out = tmp_path_factory.mktemp("bench_models")
    fp32 = converters.convert(keras3_cnn, "fp32", validate=False)
    # Full integer with int8 input and output, as shipped to int8-only accelerators.
    int8 = converters.convert(
        keras3_cnn, "int8", representative_data=calib, input_dtype="int8",
        output_dtype="int8", validate=False,
    )
    return {
        "fp32": str(fp32.save(out / "cnn_fp32.tflite")),
        "int8": str(int8.save(out / "cnn_int8.tflite")),
    }


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("bench_data") / "digits_test.npz"
    np.savez(path, x=digits.x_test[:200], y=digits.y_test[:200])
    return str(path)


@pytest.fixture(scope="module")
def fp32_result(models):
    return benchmark(models["fp32"], config=FAST, profile=True)


def test_result_statistics_are_consistent(fp32_result, models):
    r = fp32_result
    lat = r.latency
    assert lat.count >= FAST.runs
    assert 0 < lat.min_ms <= lat.median_ms <= lat.p90_ms <= lat.p99_ms <= lat.max_ms
    assert lat.min_ms <= lat.mean_ms <= lat.max_ms
    assert r.init_ms > 0 and r.first_ms > 0
    assert r.size_bytes == os.path.getsize(models["fp32"])
    assert r.memory.baseline_kib and r.memory.peak_kib >= r.memory.baseline_kib
    assert r.memory.peak_is_model_only
    assert r.runtime.startswith("ai-edge-litert")
    assert r.input_source.startswith("random")
    assert r.inputs[0]["shape"] == [1, 8, 8, 1] and r.inputs[0]["dtype"] == "float32"
    assert {e.profile for e in r.estimates} == set(PROFILES)
    assert all(e.label.startswith("estimated") for e in r.estimates)


def test_per_op_profile_is_labelled_estimated_and_follows_the_graph(fp32_result, models):
    from converters.analysis import op_sequence

    prof = fp32_result.profile
    assert prof is not None and prof.estimated
    assert prof.method.startswith("estimated by timing model prefixes")
    # One entry per op of the graph, in the graph's order.
    content = Path(models["fp32"]).read_bytes()
    assert [o.op_name for o in prof.ops] == op_sequence(content)
    assert [o.index for o in prof.ops] == list(range(len(prof.ops)))
    assert all(o.ms >= 0 for o in prof.ops)
    # XNNPACK takes the convolution and the dense layer.
    by_name = {o.op_name: o for o in prof.ops}
    assert by_name["CONV_2D"].delegated is True
    assert by_name["FULLY_CONNECTED"].delegated is True
    lines: list[str] = []
    prof.summary(lines.append)
    assert lines[0].startswith("Per-op profile (estimated by timing model prefixes")
    assert "measured per op" not in " ".join(lines)


def test_xnnpack_off_runs_every_op_on_builtin_kernels(models):
    r = benchmark(
        models["fp32"], config=BenchmarkConfig(runs=5, min_time=0.0, xnnpack=False, threads=2),
        profile=True,
    )
    assert r.config.xnnpack is False and r.config.threads == 2
    assert all(o.delegated is False for o in r.profile.ops)


def test_int8_model_gets_int8_random_inputs(models):
    r = benchmark(models["int8"], config=FAST)
    assert r.inputs[0]["dtype"] == "int8" and r.outputs[0]["dtype"] == "int8"
    assert r.outputs[0]["scale"] > 0
    assert r.latency.count >= FAST.runs


def test_random_inputs_match_benchmark_litert_model_ranges():
    # Float inputs are uniform in [-1, 1] as LiteRT's Python benchmark fills them;
    # quantized integer inputs span their dtype's range.
    from tflight.bench.child import _random_inputs

    f32, i8 = _random_inputs(
        [
            {"name": "f", "shape": [2, 64, 64, 3], "dtype": np.float32},
            {"name": "q", "shape": [1, 4096], "dtype": np.int8, "quantization": (0.1, 3)},
        ],
        {"seed": 0},
    )
    assert f32.dtype == np.float32 and -1.0 <= f32.min() < -0.99 and 0.99 < f32.max() <= 1.0
    assert i8.dtype == np.int8 and i8.min() == -128 and i8.max() == 127


def test_one_random_distribution_for_benchmark_and_converters():
    # The benchmark child and converters' validation draw the same numbers.
    from converters.data import random_inputs
    from converters.source import InputSpec
    from tflight.bench.child import _random_inputs

    (conv,) = random_inputs([InputSpec("x", (None, 4, 4, 3), np.dtype("float32"))], 2, seed=7)
    (child,) = _random_inputs([{"name": "x", "shape": [2, 4, 4, 3], "dtype": np.float32}],
                              {"seed": 7})
    np.testing.assert_array_equal(conv, child)
    assert conv.min() < 0 < conv.max()


def test_accuracy_and_agreement_on_real_digits(models, digits_npz, keras3_cnn, digits):
    comp = benchmark_many([models["fp32"], models["int8"]], inputs=digits_npz, config=FAST)
    fp32, int8 = comp.results
    assert fp32.samples == 200 and int8.samples == 200
    # The same accuracy as the Keras model it was converted from, far above chance.
    logits = keras3_cnn.predict(digits.x_test[:200], verbose=0)
    keras_acc = float(np.mean(logits.argmax(axis=1) == digits.y_test[:200]))
    assert fp32.accuracy == pytest.approx(keras_acc, abs=0.011)
    assert fp32.accuracy > 0.3
    assert abs(int8.accuracy - fp32.accuracy) < 0.05
    assert fp32.agreement is None
    assert int8.agreement > 0.95
    assert int8.max_abs_diff is not None
    ratios = comp.ratios()
    assert ratios[0] == {"latency": 1.0, "size": 1.0, "memory": 1.0}
    assert ratios[1]["size"] < 0.8
    lines: list[str] = []
    comp.summary(lines.append)
    assert lines[0].split()[:3] == ["model", "size", "init"]
    assert "accuracy" in lines[0] and "agree" in lines[0] and "(est.)" in lines[0]
    assert "cnn_int8.tflite" in lines[3]


def test_input_file_is_never_modified(models, tmp_path):
    src = Path(models["int8"])
    before = (src.read_bytes(), src.stat().st_mtime_ns)
    benchmark(str(src), config=BenchmarkConfig(runs=2, min_time=0.0))
    assert (src.read_bytes(), src.stat().st_mtime_ns) == before


def test_bytes_input_is_accepted(models):
    r = benchmark(Path(models["fp32"]).read_bytes(), config=BenchmarkConfig(runs=2, min_time=0.0))
    assert r.model == "<bytes>"


def test_gpu_request_never_falls_back_silently(models):
    # This model has a free batch dimension, which the GPU accelerator cannot
    # take: the benchmark says so and how to fix it instead of timing the CPU.
    with pytest.raises(BenchmarkError, match="static shapes only.*--target gpu"):
        benchmark(models["fp32"], config=BenchmarkConfig(runs=3, min_time=0.0,
                                                         accelerator="gpu"))


def test_npu_request_without_an_npu_is_labelled_cpu_fallback(models):
    # No machine this suite runs on has an NPU: LiteRT then runs `NPU | CPU`
    # entirely on the CPU without raising. That must be reported as the CPU
    # fallback it is, never as an NPU run.
    r = benchmark(models["int8"], config=BenchmarkConfig(runs=3, min_time=0.0, accelerator="npu"))
    assert r.accelerator == "cpu"
    assert any(n.startswith("CPU fallback") or "ran on the CPU instead" in n for n in r.notes)
    assert r.to_dict()["accelerator"] == "cpu"
    assert r.latency.count >= 3
    assert r.gpu is None


def test_external_delegate_that_is_not_a_delegate_is_a_clear_error(models):
    not_a_delegate = np.__file__.replace("__init__.py", "")
    so = next(Path(not_a_delegate).rglob("*.so"))
    cfg = BenchmarkConfig(runs=2, min_time=0.0, delegate=str(so), delegate_options={"k": "v"})
    with pytest.raises(BenchmarkError, match="could not load the delegate library"):
        benchmark(models["fp32"], config=cfg)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"runs": 0}, "`runs` must be an integer >= 1"),
        ({"min_time": -1}, "`min_time` must be"),
        ({"threads": 0}, "`threads` must be"),
        ({"accelerator": "tpu"}, "`accelerator` must be one of"),
        ({"delegate": "/nonexistent/libedgetpu.so.1"}, "does not exist"),
        ({"delegate_options": {"a": "b"}}, "without a `delegate`"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(BenchmarkError, match=match):
        BenchmarkConfig(**kwargs)


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, models):
    d = tmp_path_factory.mktemp("bad")
    good = Path(models["fp32"]).read_bytes()
    files = {
        "truncated": good[: len(good) // 3],
        "corrupt": good[:8] + bytes(b ^ 0x5A for b in good[8:200]) + good[200:],
        "text": b"this is not a model at all\n" * 10,
        "empty": b"",
    }
    out = {}
    for name, content in files.items():
        p = d / f"{name}.tflite"
        p.write_bytes(content)
        out[name] = str(p)
    return out


@pytest.mark.parametrize("name", ["truncated", "corrupt", "text", "empty"])
def test_bad_model_files_raise_a_clear_error(bad_files, name):
    with pytest.raises(BenchmarkError) as info:
        benchmark(bad_files[name], config=BenchmarkConfig(runs=1, min_time=0.0))
    # The message names the user's file (not a private copy) and says what is wrong.
    assert bad_files[name] in str(info.value)


def test_missing_model_file_is_a_clear_error(tmp_path):
    with pytest.raises(BenchmarkError):
        benchmark(str(tmp_path / "nope.tflite"))


def test_npz_of_wrong_shape_names_expected_shape(models, tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((4, 28, 28, 1), np.float32))
    with pytest.raises(InputDataError, match=r"shape \(4, 28, 28, 1\).*\(8, 8, 1\)"):
        benchmark(models["fp32"], inputs=str(path), config=FAST)


def test_npz_without_usable_array_lists_its_keys(models, tmp_path):
    path = tmp_path / "keys.npz"
    np.savez(path, images=np.zeros((4, 8, 8, 1), np.float32))
    with pytest.raises(InputDataError, match=r"\['images'\]"):
        benchmark(models["fp32"], inputs=str(path), config=FAST)


def test_labels_of_wrong_length(models, tmp_path):
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.float32), y=np.zeros(3, np.int64))
    with pytest.raises(InputDataError, match="3 entries but the inputs hold 4"):
        benchmark(models["fp32"], inputs=str(path), config=FAST)


def test_labels_go_through_the_one_label_normaliser(models, tmp_path):
    # Fractional "class ids" used to be compared with argmax silently; the
    # normaliser every command shares (tflight._io.class_ids) refuses them.
    path = tmp_path / "labels.npz"
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.float32), y=np.array([0.5, 1.0, 2.0, 3.0]))
    with pytest.raises(InputDataError, match="whole-number class ids"):
        benchmark(models["fp32"], inputs=str(path), config=FAST)
    np.savez(path, x=np.zeros((4, 8, 8, 1), np.float32), y=np.eye(10)[[0, 1, 2, 3]])
    assert benchmark(models["fp32"], inputs=str(path), config=FAST).accuracy is not None


def test_inputs_must_be_npz_and_reference_needs_inputs(models, tmp_path):
    with pytest.raises(InputDataError, match=r"must be an \.npz"):
        benchmark(models["fp32"], inputs=str(tmp_path / "x.npy"))
    with pytest.raises(InputDataError, match="needs `inputs`"):
        benchmark(models["int8"], reference=models["fp32"], config=FAST)


def test_history_appends_one_json_line_per_result(fp32_result, tmp_path):
    hist = tmp_path / "sub" / "history.jsonl"
    append_history([fp32_result], hist)
    append_history([fp32_result], hist)
    with open(hist, "a") as f:
        f.write('{"torn": ')  # an interrupted writer
    rows = read_history(hist)
    assert len(rows) == 2
    assert rows[0]["sha256"] == fp32_result.sha256
    assert rows[0]["latency"]["median_ms"] == fp32_result.latency.median_ms
    assert read_history(tmp_path / "absent.jsonl") == []


def test_plot_latency_vs_size(fp32_result, tmp_path):
    pytest.importorskip("matplotlib")
    out = plot_latency_vs_size([fp32_result, fp32_result], tmp_path / "plot.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob(".*part*"))
    with pytest.raises(BenchmarkError, match="must end in"):
        plot_latency_vs_size([fp32_result], tmp_path / "plot.txt")


def test_to_dict_is_json_serialisable(fp32_result):
    d = json.loads(json.dumps(fp32_result.to_dict()))
    assert d["latency"]["count"] == fp32_result.latency.count
    assert d["profile"]["estimated"] is True
    assert d["profile"]["method"].startswith("estimated by timing model prefixes")
    assert all(e["estimated"] for e in d["estimates"])


def test_summary_labels_estimates(fp32_result):
    lines: list[str] = []
    fp32_result.summary(lines.append)
    text = "\n".join(lines)
    assert "Latency" in text and "Memory" in text
    assert "(estimated" in text


# --- command line ----------------------------------------------------------


def _bench(*args):
    return CliRunner().invoke(cli, ["bench", *args], catch_exceptions=False)


def test_cli_table_history_and_plot(models, digits_npz, tmp_path):
    hist = tmp_path / "h.jsonl"
    png = tmp_path / "p.png"
    args = [models["fp32"], models["int8"], "--runs", "5", "--min-time", "0",
            "--inputs", digits_npz, "--history", str(hist), "--estimate", "pixel4",
            "--estimate", "edgetpu"]
    if "matplotlib" in sys.modules or _has_matplotlib():
        args += ["--plot", str(png)]
    res = _bench(*args)
    assert res.exit_code == 0, res.output
    assert "x latency" in res.output and "pixel4 ms (est.)" in res.output
    assert "edgetpu ms (est.)" in res.output
    assert "first entry" in res.output
    assert len(read_history(hist)) == 2
    res2 = _bench(models["fp32"], "--runs", "5", "--min-time", "0", "--history", str(hist))
    assert res2.exit_code == 0
    assert "median" in res2.output and "->" in res2.output


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def test_cli_json(models):
    res = _bench(models["int8"], "--runs", "3", "--min-time", "0", "--json")
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data[0]["latency"]["count"] >= 3 and data[0]["estimates"][0]["estimated"]


@pytest.mark.parametrize("name", ["truncated", "text"])
def test_cli_bad_file_exit_2_without_traceback(bad_files, name):
    res = CliRunner().invoke(cli, ["bench", bad_files[name]])
    assert res.exit_code == 2
    assert res.output.startswith("Error: ") and "Traceback" not in res.output


def test_cli_bad_npz_and_options_exit_2(models, tmp_path):
    path = tmp_path / "wrong.npz"
    np.savez(path, x=np.zeros((2, 3, 3), np.float32))
    res = CliRunner().invoke(cli, ["bench", models["fp32"], "--inputs", str(path)])
    assert res.exit_code == 2 and "Error:" in res.output and "(8, 8, 1)" in res.output
    res = CliRunner().invoke(cli, ["bench", models["fp32"], "--delegate-option", "novalue"])
    assert res.exit_code == 2 and "KEY=VALUE" in res.output
    res = CliRunner().invoke(cli, ["bench", models["fp32"], "--estimate", "nokia3310"])
    assert res.exit_code == 2 and "pixel4" in res.output


def test_cli_plot_without_matplotlib_is_a_clear_error(models, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    res = CliRunner().invoke(cli, ["bench", models["fp32"], "--plot", str(tmp_path / "p.png")])
    assert res.exit_code == 2 and "pip install 'tflight[plot]'" in res.output


def test_comparison_needs_results():
    with pytest.raises(BenchmarkError):
        benchmark_many([])


def test_public_surface_is_pinned():
    # tflight's own exported set is pinned in tests/test_public_api.py.
    from tflight.bench import emulator as device
    from tflight.bench import history as bench_history
    from tflight.bench import results as bench_results
    from tflight.devices import profiles

    results = {
        "Accelerator", "Device", "BenchmarkConfig", "LatencyStats", "MemoryStats", "OpTiming",
        "OpProfile", "DeviceReport", "GpuReport", "BenchmarkResult", "Comparison",
        "InputDataError", "BenchmarkInternalError",
    }
    assert set(bench_results.__all__) == results
    assert set(bench_history.__all__) == {
        "append_history", "read_history", "history_changes", "plot_latency_vs_size",
    }
    assert set(importlib.import_module("tflight.bench.run").__all__) == results | {
        "benchmark", "benchmark_many", "append_history", "read_history", "plot_latency_vs_size",
    }
    assert set(device.__all__) == {
        "ARM64_RUNTIME", "Arm64Environment", "RegistryUnreachableError", "EmulatedRun",
        "default_cache_dir", "setup_arm64", "run_on_arm64",
    }
    assert set(profiles.__all__) == {
        "OpKind", "OpWork", "ModelWork", "DeviceProfile", "LatencyEstimate", "PROFILES",
        "get_profile", "model_work", "estimate_latency", "calibrate", "UNFITTED_DEVICES",
        "gpu_placement",
    }


@pytest.mark.parametrize(
    ("option", "name", "match"),
    [
        ("--history", "missing/h.jsonl", "--history: the folder .* does not exist"),
        ("--plot", "missing/p.png", "--plot: the folder .* does not exist"),
        ("--history", ".", "is a (folder|directory)"),
        ("--plot", "plot.gif", "must end in .png, .svg or .pdf"),
    ],
)
def test_bad_output_paths_fail_before_measuring(tmp_path, option, name, match):
    # The model does not exist either: the output path is checked first, so
    # nothing is measured (or appended) before the mistake is reported.
    target = str(tmp_path / name) if name != "." else str(tmp_path)
    res = CliRunner().invoke(cli, ["bench", str(tmp_path / "absent.tflite"), option, target])
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(errors) == 1 and __import__("re").search(match, errors[0]), res.output
    assert "Traceback" not in res.output
    assert not (tmp_path / "missing").exists()


def test_child_failure_of_ours_is_an_internal_error_with_a_traceback(models, tmp_path):
    from tflight.bench._runner import run_child as _run_child
    from tflight.bench.run import BenchmarkInternalError

    # A request the child cannot use (a caller bug, not a user mistake).
    request = {"model": models["fp32"], "runs": "many", "traceback_dir": str(tmp_path)}
    with pytest.raises(BenchmarkInternalError) as info:
        _run_child(request, timeout=120, label="x")
    path = Path(info.value.traceback_path)
    assert path.parent == tmp_path and "Traceback" in path.read_text()
    assert not isinstance(info.value, BenchmarkError)


def test_cli_reports_internal_errors_with_exit_1(models, monkeypatch, tmp_path):
    import importlib

    bench_module = importlib.import_module("tflight.bench.run")
    trace = tmp_path / "tflight-internal-x.txt"
    trace.write_text("Traceback ...")

    def broken(*args, **kwargs):
        raise bench_module.BenchmarkInternalError("the benchmark child failed: KeyError", str(trace))

    monkeypatch.setattr(bench_module, "benchmark_many", broken)
    res = CliRunner().invoke(cli, ["bench", models["fp32"]])
    assert res.exit_code == 1
    assert "internal error" in res.output and str(trace) in res.output
    assert not res.output.startswith("Error:")


def test_cli_refuses_labels_the_model_cannot_output_and_nan_inputs(models, tmp_path):
    # The model has 10 outputs: ids 42 and -1 and 7-wide one-hot rows label nothing it says,
    # and NaN inputs give no accuracy worth printing.
    x = np.zeros((4, 8, 8, 1), np.float32)
    cases = {
        "y42": (dict(x=x, y=np.array([0, 1, 2, 42])), "ids up to 42"),
        "yneg": (dict(x=x, y=np.array([0, 1, 2, -1])), "negative class ids"),
        "onehot7": (dict(x=x, y=np.eye(7)[[0, 1, 2, 3]]), "7 columns"),
        "nan": (dict(x=np.full_like(x, np.nan), y=np.array([0, 1, 2, 3])), "NaN"),
    }
    for name, (arrays, message) in cases.items():
        path = tmp_path / f"{name}.npz"
        np.savez(path, **arrays)
        res = CliRunner().invoke(cli, ["bench", models["fp32"], "--inputs", str(path), "--runs", "1",
                                       "--min-time", "0", "--warmup-runs", "0",
                                       "--warmup-min-time", "0"])
        assert res.exit_code == 2, (name, res.output)
        assert "Error:" in res.output and message in res.output, (name, res.output)
        assert "Traceback" not in res.output and "accuracy" not in res.output.lower(), name
