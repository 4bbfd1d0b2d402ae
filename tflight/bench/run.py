"""Benchmark `.tflite` files on the host and on an emulated ARM64 device.

`benchmark` measures one model the way `benchmark_model` does (warm-up runs,
then measured runs until both a count and a minimum time are reached) and adds
what a Keras user needs to decide what to ship: the peak memory of the
inference, the size, accuracy and agreement with a reference model on the
user's data, a per-op profile (estimated by timing model prefixes: LiteRT's
Python API has no profiler), LiteRT's real GPU accelerator on a software
Vulkan device, an estimated latency on named phone and
accelerator profiles, and the same model run by LiteRT's AArch64 build under
emulation with its outputs checked against the host's.

Each measurement runs in a fresh child process (`tflight/bench/child.py`
executed as a script) that imports only numpy and LiteRT: a file that crashes
the runtime kills the child, not the caller, and the child's peak RSS is the
inference's own rather than TensorFlow's.

Each latency sample is the same as in LiteRT's Python tool
`python -m ai_edge_litert.tools.benchmark_litert_model`: `perf_counter` around
one invoke, inputs written once beforehand (float inputs uniform in [-1, 1]),
one thread, XNNPACK. What differs, deliberately: the defaults add time floors
(1 s of measured runs, 0.5 s of warm-up) as the C++ `benchmark_model` does,
where the Python tool runs exactly 5 warm-ups and 50 runs (pass
`BenchmarkConfig(warmup_runs=5, warmup_min_time=0, min_time=0)` to match it);
and on the CPU the child uses the classic `Interpreter`, which alone can
switch XNNPACK off, load external delegates and list delegated ops, where the
Python tool uses `CompiledModel`; both run the same XNNPACK kernels.
`benchmarks/bench_agreement.py` measures the two tools side by side.

References:
  TensorFlow Lite `benchmark_model` (warm-up, `num_runs`, `min_secs`,
    `max_secs`), tensorflow/lite/tools/benchmark.
  Jacob et al. "Quantization and Training of Neural Networks for Efficient
    Integer-Arithmetic-Only Inference". CVPR 2018 (why int8 is faster on ARM).
"""

from __future__ import annotations

import datetime
import hashlib
import os
import platform
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tflight.bench._runner import AcceleratorUnavailable, read_outputs, run_child, verify_model
from tflight.bench.emulator import compare_on_arm64
from tflight.bench.files import check_inputs, load_labels, top1
from tflight.bench.gpu import gpu_run
from tflight.bench.history import append_history, plot_latency_vs_size, read_history
from tflight.bench.profile import delegated_ops, measure_profile
from tflight.bench.results import (
    Accelerator,
    BenchmarkConfig,
    BenchmarkInternalError,
    BenchmarkResult,
    Comparison,
    Device,
    DeviceReport,
    GpuReport,
    InputDataError,
    LatencyStats,
    MemoryStats,
    OpProfile,
    OpTiming,
)
from tflight.devices.profiles import PROFILES, estimate_latency, model_work
from tflight.errors import BenchmarkError

__all__ = [
    "Accelerator",
    "Device",
    "BenchmarkConfig",
    "LatencyStats",
    "MemoryStats",
    "OpTiming",
    "OpProfile",
    "DeviceReport",
    "GpuReport",
    "BenchmarkResult",
    "BenchmarkInternalError",
    "Comparison",
    "InputDataError",
    "benchmark",
    "benchmark_many",
    # Re-exported from tflight.bench_history (history files and plots).
    "append_history",
    "read_history",
    "plot_latency_vs_size",
]

def benchmark(
    model: str | os.PathLike | bytes,
    *,
    config: BenchmarkConfig | None = None,
    inputs: str | os.PathLike | None = None,
    reference: str | os.PathLike | bytes | None = None,
    device: Device | str = Device.HOST,
    profile: bool = False,
    estimate: Sequence[str] | None = None,
    count_instructions: bool = True,
    progress: Callable[[str], None] | None = None,
) -> BenchmarkResult:
    """Benchmarks one `.tflite` model in a clean child process.

    Measures init time, the first invoke, warm-up and then measured invokes
    (at least `config.runs` and at least `config.min_time` seconds), the peak
    memory of the child, and, with labelled inputs, accuracy and agreement with
    a reference model. `device="arm64"` also runs the model with LiteRT's
    AArch64 build under qemu (set up on first use) and checks its outputs
    against the host's.

    Args:
      model: path to a `.tflite` file, or its bytes. It is never modified.
      config: a `BenchmarkConfig`; the defaults follow `benchmark_model`.
      inputs: an `.npz` with the inputs (`x`, or `x0`, `x1`, ... or the input
        tensors' names; first axis = samples) and optional labels `y`. Without
        it, random inputs of each input's dtype and range are used.
      reference: a `.tflite` to compare outputs with on `inputs` (top-1
        agreement and max absolute difference).
      device: `"host"` or `"arm64"`.
      profile: also give a per-op profile, estimated by timing model prefixes
        (LiteRT's Python API has no per-op profiler).
      estimate: device profile names to estimate latency on (default: all).
      count_instructions: with `device="arm64"`, count guest instructions per
        invoke (the emulated run is made under qemu's tracer).
      progress: called with one line per slow step (emulator set-up ...).

    Returns:
      A `BenchmarkResult`.

    Raises:
      BenchmarkError: the file is not a valid `.tflite`, LiteRT crashed on it,
        a delegate could not be loaded, or the options are invalid.
      InputDataError: `inputs` do not fit the model.
      DeviceError: the ARM64 emulator could not be set up or run.

    Example:
      >>> r = benchmark("model_int8.tflite", inputs="digits.npz", device="arm64")
      >>> r.summary()
    """
    cfg = config if config is not None else BenchmarkConfig()
    if not isinstance(cfg, BenchmarkConfig):
        raise BenchmarkError(f"`config` must be a BenchmarkConfig, got {type(cfg).__name__}.")
    try:
        device = Device(device)
    except ValueError:
        raise BenchmarkError(
            f"`device` must be one of {[d.value for d in Device]}, got {device!r}."
        ) from None
    names = list(PROFILES) if estimate is None else list(estimate)
    for n in names:
        if n not in PROFILES:
            raise BenchmarkError(
                f"unknown device profile {n!r} in `estimate`; known: {', '.join(PROFILES)}"
            )
    inputs_path = check_inputs(inputs)
    content, verified = verify_model(model)
    label = str(model) if not isinstance(model, (bytes, bytearray)) else "<bytes>"

    with tempfile.TemporaryDirectory(prefix="tflight-bench-run-") as tmp:
        tmpd = Path(tmp)
        # The child always reads a private copy: the user's file is never touched.
        path = tmpd / "model.tflite"
        path.write_bytes(content)
        notes: list[str] = []
        gpu_compat = None
        request = {
            "model": str(path),
            "threads": cfg.threads,
            "xnnpack": cfg.xnnpack,
            "accelerator": Accelerator(cfg.accelerator).value,
            "delegate": (
                {"library": cfg.delegate, "options": dict(cfg.delegate_options)}
                if cfg.delegate
                else None
            ),
            "runs": cfg.runs,
            "min_time": cfg.min_time,
            "max_time": cfg.max_time,
            "warmup_runs": cfg.warmup_runs,
            "warmup_min_time": cfg.warmup_min_time,
            "seed": cfg.seed,
            "inputs_npz": inputs_path,
            "outputs_path": str(tmpd / "outputs.npz"),
            "inputs_save": str(tmpd / "inputs.npz"),
        }
        accel_used = Accelerator(cfg.accelerator).value
        gpu_report = None
        if cfg.accelerator == Accelerator.GPU:
            child, gpu_report = gpu_run(request, content, cfg, label, tmpd, inputs_path,
                                         progress)
            accel_used = f"gpu ({gpu_report.adapter or 'software Vulkan'})"
            notes.append(f"GPU latency: {gpu_report.timing_note}")
        else:
            try:
                child = run_child(request, timeout=cfg.timeout, label=label)
            except AcceleratorUnavailable as e:
                accel_used = "cpu"
                notes.append(f"{e}; ran on the CPU instead")
                child = run_child(
                    dict(request, accelerator="cpu"), timeout=cfg.timeout, label=label
                )
        if cfg.accelerator == Accelerator.NPU and accel_used == "npu":
            # An NPU run counts only when LiteRT says every op is on the NPU:
            # its Python API does not say which ops ran where, and without an
            # NPU (or its compiler plug-in) `NPU | CPU` quietly runs everything
            # on the CPU. Anything else is the CPU fallback and is labelled so.
            if child.get("fully_accelerated") is not True:
                accel_used = "cpu"
                notes.append(
                    "CPU fallback: the NPU was requested, but LiteRT did not place every op on "
                    "an NPU (is_fully_accelerated() is False, and it does not say which ops ran "
                    "where), so this run is counted as a CPU run, not an NPU run"
                )
        if cfg.delegate:
            delegated = delegated_ops(child.get("ops", []))
            n_del = sum(delegated.values()) if delegated else 0
            notes.append(f"external delegate {Path(cfg.delegate).name}: {n_del} op(s) delegated")
        outputs = read_outputs(tmpd / "outputs.npz")

        accuracy = agreement = max_diff = None
        samples = None
        width = outputs[0].shape[1] if outputs[0].ndim == 2 and outputs[0].shape[1] > 1 else None
        labels = load_labels(inputs_path, len(outputs[0]), name=str(inputs), classes=width)
        if inputs_path is not None:
            samples = int(len(outputs[0]))
        if labels is not None:
            accuracy = float(np.mean(top1(outputs[0]) == labels))
        if reference is not None:
            if inputs_path is None:
                raise InputDataError(
                    "a reference model needs `inputs` (an .npz) to compare outputs on"
                )
            ref_content, _ = verify_model(reference)
            ref_path = tmpd / "reference.tflite"
            ref_path.write_bytes(ref_content)
            ref = run_child(
                dict(
                    request,
                    model=str(ref_path),
                    runs=1,
                    min_time=0.0,
                    warmup_runs=0,
                    warmup_min_time=0.0,
                    accelerator="cpu",
                    delegate=None,
                    outputs_path=str(tmpd / "ref_outputs.npz"),
                    inputs_save=None,
                ),
                timeout=cfg.timeout,
                label=str(reference),
            )
            del ref
            ref_out = read_outputs(tmpd / "ref_outputs.npz")
            if ref_out[0].shape != outputs[0].shape:
                raise InputDataError(
                    f"the reference's output has shape {ref_out[0].shape}, the model's "
                    f"{outputs[0].shape}: they cannot be compared"
                )
            agreement = float(np.mean(top1(ref_out[0]) == top1(outputs[0])))
            max_diff = float(np.max(np.abs(ref_out[0] - outputs[0])))

        work = model_work(content)
        estimates = tuple(estimate_latency(work, n) for n in names)
        op_profile = (
            measure_profile(label, content, cfg, child.get("ops", [])) if profile else None
        )
        device_report = None
        if device is Device.ARM64:
            # The ARM run gets exactly the host's inputs: the user's, or the
            # random ones the host child saved.
            dev_inputs = inputs_path or str(tmpd / "inputs.npz")
            device_report = compare_on_arm64(
                str(path),
                dev_inputs,
                outputs,
                [o.get("scale", 0.0) for o in child["outputs"]],
                cfg,
                progress,
                count_instructions,
            )
            if not device_report.outputs_match:
                notes.append(
                    f"ARM64 outputs differ from the host's by up to {device_report.max_abs_diff:.3g}"
                )

    mem = child["memory"]
    return BenchmarkResult(
        model=label,
        size_bytes=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        config=cfg,
        accelerator=accel_used,
        notes=tuple(notes),
        init_ms=float(child["init_ms"]),
        first_ms=float(child["first_ms"]),
        latency=LatencyStats.from_samples(child["latencies_ms"]),
        memory=MemoryStats(
            baseline_kib=mem["before_load_kib"],
            after_load_kib=mem["after_load_kib"],
            peak_kib=mem["peak_kib"],
            peak_is_model_only=bool(mem["peak_is_model_only"]),
        ),
        runtime=child["runtime_version"],
        machine=f"{platform.machine()} {_cpu_name()}".strip(),
        inputs=tuple(child["inputs"]),
        outputs=tuple(child["outputs"]),
        input_source=(
            f"{inputs} ({samples} samples)" if inputs_path else f"random (seed {cfg.seed})"
        ),
        accuracy=accuracy,
        agreement=agreement,
        max_abs_diff=max_diff,
        samples=samples,
        estimates=estimates,
        profile=op_profile,
        device=device_report,
        gpu_compatibility=gpu_compat,
        gpu=gpu_report,
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return "(" + line.split(":", 1)[1].strip() + ")"
    except OSError:
        pass
    return ""


def benchmark_many(
    models: Sequence[str | os.PathLike | bytes],
    *,
    inputs: str | os.PathLike | None = None,
    **kwargs: Any,
) -> Comparison:
    """Benchmarks several models with the same settings; the first is the reference.

    With labelled `inputs`, every model after the first also reports its top-1
    agreement with the first. Other keyword arguments go to `benchmark`.

    Returns:
      A `Comparison` (a side-by-side table with ratios vs the first model).
    """
    if not models:
        raise BenchmarkError("give at least one model to benchmark")
    if "reference" in kwargs:
        raise BenchmarkError("`benchmark_many` uses its first model as the reference")
    results = []
    for i, m in enumerate(models):
        ref = models[0] if (i > 0 and inputs is not None) else None
        results.append(benchmark(m, inputs=inputs, reference=ref, **kwargs))
    return Comparison(results=tuple(results))
