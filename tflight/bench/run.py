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
import re
import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tflight._io import class_ids
from tflight.bench.history import append_history, plot_latency_vs_size, read_history
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
from tflight.errors import BenchmarkError, DeviceError

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

_CHILD = Path(__file__).with_name("child.py")


def _verify(model: str | os.PathLike | bytes) -> tuple[bytes, Any]:
    """Reads and checks a `.tflite` safely (in a child process) before anything loads it."""
    import converters

    try:
        verified = converters.verify_tflite(model)
    except converters.errors.InvalidTFLiteError as e:
        raise BenchmarkError(str(e)) from e
    return verified.content, verified


def _run_child(
    request: dict,
    *,
    timeout: float,
    label: str,
    env: dict[str, str] | None = None,
    log: list[str] | None = None,
) -> dict:
    """Runs `child.py` on `request`; maps its answer to a result or an error.

    The child is started, framed and mapped by `converters._child`.

    Args:
      env: the child's environment (default: this process's, without PYTHONPATH).
      log: if given, the child's stderr is appended to it.
    """
    from converters import _child, _random_inputs

    request = dict(request, random_inputs_module=_random_inputs.__file__)
    request.setdefault("traceback_dir", tempfile.gettempdir())
    try:
        run = _child.run_child(
            _child.python_command(str(_CHILD)),
            request=request,
            env=_child.child_env(env, project_path=False),
            timeout=timeout,
            name="tflight-bench",
            tail_lines=2,
        )
    except _child.ChildTimeout as e:
        raise BenchmarkError(
            f"benchmarking {label} did not finish within {timeout:.0f} s; lower `runs`/"
            "`min_time` or raise `timeout`"
        ) from e
    except _child.ChildCrashed as e:
        if log is not None:
            log.append(e.stderr)
        raise BenchmarkError(
            f"LiteRT {e.how} while running {label}; the caller is unharmed. {e.tail}".strip()
            + (f" (its output is kept in {e.log})" if e.log else "")
        ) from None
    except _child.ChildFailed as e:
        if log is not None:
            log.append(e.stderr)
        if e.kind == "InputDataError":
            raise InputDataError(e.message) from None
        if e.kind == "AcceleratorUnavailable":
            raise _AcceleratorUnavailable(e.message) from None
        if e.kind == _child.INTERNAL:
            raise BenchmarkInternalError(e.message, e.traceback) from None
        raise BenchmarkError(e.message) from None
    if log is not None:
        log.append(run.stderr)
    return run.reply


def _gpu_run(
    request: dict,
    content: bytes,
    cfg: BenchmarkConfig,
    label: str,
    tmpd: Path,
    inputs_path: str | None,
    progress: Callable[[str], None] | None,
) -> tuple[dict, GpuReport]:
    """Times the model on LiteRT's GPU accelerator and checks its outputs against the CPU's.

    The accelerator runs on the software Vulkan device of `converters.gpu`
    (set up on first use). No silent fallback: a missing device, a model with
    free dimensions, or outputs that fail the check raise.
    """
    from converters.analysis import analyze_flatbuffer
    from converters.gpu import (
        TIMING_LABEL,
        GpuUnavailableError,
        compare_gpu_outputs,
        parse_fallback,
        setup_gpu,
    )

    stats = analyze_flatbuffer(content)
    free = [
        f"{t.name} {list(t.shape_signature)}"
        for t in stats.inputs
        if any(int(d) < 0 for d in t.shape_signature)
    ]
    if free:
        raise BenchmarkError(
            f"LiteRT's GPU accelerator takes static shapes only, and {label} has free "
            f"dimensions ({'; '.join(free)}); a .tflite is benchmarked as it is, so convert it "
            "again with a fixed batch: `tflight convert MODEL --target gpu` does that"
        )
    try:
        vulkan = setup_gpu(progress=progress)
    except GpuUnavailableError as e:
        raise DeviceError(
            f"no Vulkan device for LiteRT's GPU accelerator could be set up: {e}"
        ) from e
    log: list[str] = []
    try:
        child = _run_child(
            dict(request, outputs_path=str(tmpd / "gpu_outputs.npz")),
            timeout=cfg.timeout, label=label, log=log,
            env=dict(vulkan.env(), TF_CPP_MIN_LOG_LEVEL="0"),
        )
    except _AcceleratorUnavailable as e:
        raise DeviceError(f"{e} (on the software Vulkan device {vulkan.root})") from e
    # The CPU accelerator on exactly the same inputs, for the comparison.
    _run_child(
        dict(
            request, accelerator="cpu", runs=1, min_time=0.0, warmup_runs=0,
            warmup_min_time=0.0, inputs_npz=inputs_path or request["inputs_save"],
            inputs_save=None,
        ),
        timeout=cfg.timeout, label=label,
    )
    gpu_out = _outputs_from(tmpd / "gpu_outputs.npz")
    cpu_out = _outputs_from(Path(request["outputs_path"]))
    os.replace(tmpd / "gpu_outputs.npz", request["outputs_path"])
    max_diff, snr, failures = compare_gpu_outputs(cpu_out, gpu_out)
    if failures:
        raise BenchmarkError(
            f"{label} fails validation on LiteRT's GPU accelerator: {'; '.join(failures)}. "
            "Benchmark an fp32 or fp16 conversion, or use --accelerator cpu."
        )
    fallback, partitions = parse_fallback(log[0] if log else "")
    adapter = re.search(r"Selected adapter: (.*?)(?:, arch=|$)", log[0] if log else "", re.M)
    if adapter is None:
        raise DeviceError(
            "LiteRT's GPU accelerator found no Vulkan adapter, so nothing ran on it; run "
            "converters.gpu.setup_gpu(force=True) to rebuild the software Vulkan device"
        )
    report = GpuReport(
        adapter=adapter.group(1).strip() if adapter else "",
        fully_accelerated=bool(child.get("fully_accelerated")),
        fallback=fallback,
        partitions=partitions,
        max_abs_diff=max_diff,
        snr_db=snr,
        min_snr_db=30.0,
        timing_note=TIMING_LABEL,
    )
    return child, report


class _AcceleratorUnavailable(BenchmarkError):
    pass


def _load_labels(
    path: str | None, n: int, *, name: str, classes: int | None = None
) -> np.ndarray | None:
    """The labels `y` of the inputs file as class ids (`tflight._io.class_ids`), or None.

    With `classes` (the width of the model's first output), ids outside
    `[0, classes)` and one-hot rows of another width are refused.
    """
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as data:
        if "y" not in data:
            return None
        y = np.asarray(data["y"])
    if y.ndim >= 1 and len(y) != n:
        raise InputDataError(
            f"labels 'y' in {name!r} hold {len(y)} entries but the inputs "
            f"hold {n} samples; give one label per sample"
        )
    return class_ids(
        y, n, classes=classes, what=f"labels 'y' in {name!r}", error=InputDataError
    )


def _check_inputs_path(inputs: str | os.PathLike | None) -> str | None:
    if inputs is None:
        return None
    p = Path(inputs)
    if p.suffix != ".npz":
        raise InputDataError(
            f"inputs must be an .npz file (arrays 'x' or 'x0', 'x1', ... and optional labels "
            f"'y'), got {str(inputs)!r}"
        )
    if not p.is_file():
        raise InputDataError(f"inputs file {str(inputs)!r} does not exist")
    try:
        with np.load(p, allow_pickle=False) as data:
            _ = list(data.keys())
    except (OSError, ValueError) as e:
        raise InputDataError(f"cannot read {str(inputs)!r} as an .npz file: {e}") from e
    return str(p.resolve())


def _top1(a: np.ndarray) -> np.ndarray:
    return a.reshape(len(a), -1).argmax(axis=1) if a.ndim > 1 else a


def _outputs_from(path: Path) -> list[np.ndarray]:
    with np.load(path) as d:
        return [d[f"out{i}"] for i in range(len(d.files))]


def _delegated_ops(ops: list[dict]) -> dict[int, bool] | None:
    """Which original ops ran inside a delegate partition (from DELEGATE nodes)."""
    if not ops:
        return None
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    delegates = [o for o in ops if o["op_name"] == "DELEGATE"]
    producer = {t: o["index"] for o in originals for t in o["outputs"]}
    by_index = {o["index"]: o for o in originals}
    inside: set[int] = set()
    for d in delegates:
        stop = set(d["inputs"])
        stack = [producer[t] for t in d["outputs"] if t in producer]
        while stack:
            i = stack.pop()
            if i in inside:
                continue
            inside.add(i)
            for t in by_index[i]["inputs"]:
                if t >= 0 and t not in stop and t in producer:
                    stack.append(producer[t])
    return {o["index"]: o["index"] in inside for o in originals}


_PREFIX_METHOD = (
    "estimated by timing model prefixes: the median latency of the first k ops minus that "
    "of the first k-1, each prefix timed in one clean process (LiteRT's Python API has no "
    "per-op profiler); op 0 includes the per-invoke overhead; noisy for ops under a "
    "microsecond, and fusion across op boundaries is attributed to the later op"
)


def _measure_profile(
    path: str, content: bytes, cfg: BenchmarkConfig, ops_seen: list[dict]
) -> OpProfile:
    from converters.analysis import op_sequence, prefix_models

    delegated = _delegated_ops(ops_seen) or {}
    names = op_sequence(content)
    with tempfile.TemporaryDirectory(prefix="tflight-prefix-") as tmp:
        try:
            prefixes = []
            for k, blob in enumerate(prefix_models(content), start=1):
                p = Path(tmp) / f"prefix_{k:04d}.tflite"
                p.write_bytes(blob)
                prefixes.append(str(p))
        except Exception as e:  # noqa: BLE001 - fall back to the estimate below
            prefixes = []
            reason = f"{type(e).__name__}: {e}"
        if prefixes:
            try:
                out = _run_child(
                    {
                        "prefix_models": prefixes,
                        "threads": cfg.threads,
                        "xnnpack": cfg.xnnpack,
                        "runs": max(10, min(cfg.runs, 50)),
                        "min_time": 0.05,
                        "seed": cfg.seed,
                    },
                    timeout=cfg.timeout,
                    label=f"the per-op profile of {path}",
                )
                med = out["prefix_medians_ms"]
                times = [max(med[0], 0.0)] + [
                    max(med[k] - med[k - 1], 0.0) for k in range(1, len(med))
                ]
                total = sum(times) or 1.0
                return OpProfile(
                    ops=tuple(
                        OpTiming(
                            index=k,
                            op_name=names[k] if k < len(names) else "?",
                            delegated=delegated.get(k),
                            ms=t,
                            share=t / total,
                        )
                        for k, t in enumerate(times)
                    ),
                    method=_PREFIX_METHOD,
                    estimated=True,
                )
            except BenchmarkError as e:
                reason = str(e)
    est = estimate_latency(model_work(content), "pixel4")
    total = sum(est.per_op_ms) or 1.0
    work_ops = model_work(content).ops
    return OpProfile(
        ops=tuple(
            OpTiming(o.index, o.op_name, delegated.get(o.index), t, t / total)
            for o, t in zip(work_ops, est.per_op_ms, strict=True)
        ),
        method=f"estimated from the pixel4 device profile (timing model prefixes failed: {reason})",
        estimated=True,
    )


def _device_run(
    path: str,
    inputs_npz: str,
    host_outputs: list[np.ndarray],
    out_scales: list[float],
    cfg: BenchmarkConfig,
    progress: Callable[[str], None] | None,
    count_instructions: bool,
) -> DeviceReport:
    from tflight.bench.emulator import run_on_arm64

    with tempfile.TemporaryDirectory(prefix="tflight-arm64-out-") as tmp:
        out_path = str(Path(tmp) / "outputs.npz")
        run = run_on_arm64(
            {
                "model": path,
                "inputs_npz": inputs_npz,
                "outputs_path": out_path,
                "runs": min(cfg.runs, 10),
                "warmup_runs": min(cfg.warmup_runs, 1),
                "seed": cfg.seed,
            },
            count_instructions=count_instructions,
            timeout=max(cfg.timeout, 900.0),
            progress=progress,
        )
        if "error" in run.child:
            raise DeviceError(f"the ARM64 run failed: {run.child['error']['message']}")
        arm = _outputs_from(Path(out_path))
    diffs, tol = [], 0.0
    for a, h, scale in zip(arm, host_outputs, out_scales, strict=True):
        diffs.append(float(np.max(np.abs(a.astype(np.float64) - h.astype(np.float64)))))
        tol = max(tol, scale * 1.0001 if scale else 1e-4 * max(1.0, float(np.max(np.abs(h)))))
    max_diff = max(diffs) if diffs else 0.0
    return DeviceReport(
        device=Device.ARM64.value,
        runtime=run.child.get("runtime_version", "ai-edge-litert"),
        outputs_match=max_diff <= tol,
        max_abs_diff=max_diff,
        tolerance=tol,
        instructions_per_invoke=run.instructions_per_invoke,
        cost_note=run.cost_note,
        emulated_median_ms=float(statistics.median(run.child["latencies_ms"])),
        wall_s=run.wall_s,
        emulator=run.emulator,
        unsized_blocks=run.unsized_blocks,
    )


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
    inputs_path = _check_inputs_path(inputs)
    content, verified = _verify(model)
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
            child, gpu_report = _gpu_run(request, content, cfg, label, tmpd, inputs_path,
                                         progress)
            accel_used = f"gpu ({gpu_report.adapter or 'software Vulkan'})"
            notes.append(f"GPU latency: {gpu_report.timing_note}")
        else:
            try:
                child = _run_child(request, timeout=cfg.timeout, label=label)
            except _AcceleratorUnavailable as e:
                accel_used = "cpu"
                notes.append(f"{e}; ran on the CPU instead")
                child = _run_child(
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
            delegated = _delegated_ops(child.get("ops", []))
            n_del = sum(delegated.values()) if delegated else 0
            notes.append(f"external delegate {Path(cfg.delegate).name}: {n_del} op(s) delegated")
        outputs = _outputs_from(tmpd / "outputs.npz")

        accuracy = agreement = max_diff = None
        samples = None
        width = outputs[0].shape[1] if outputs[0].ndim == 2 and outputs[0].shape[1] > 1 else None
        labels = _load_labels(inputs_path, len(outputs[0]), name=str(inputs), classes=width)
        if inputs_path is not None:
            samples = int(len(outputs[0]))
        if labels is not None:
            accuracy = float(np.mean(_top1(outputs[0]) == labels))
        if reference is not None:
            if inputs_path is None:
                raise InputDataError(
                    "a reference model needs `inputs` (an .npz) to compare outputs on"
                )
            ref_content, _ = _verify(reference)
            ref_path = tmpd / "reference.tflite"
            ref_path.write_bytes(ref_content)
            ref = _run_child(
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
            ref_out = _outputs_from(tmpd / "ref_outputs.npz")
            if ref_out[0].shape != outputs[0].shape:
                raise InputDataError(
                    f"the reference's output has shape {ref_out[0].shape}, the model's "
                    f"{outputs[0].shape}: they cannot be compared"
                )
            agreement = float(np.mean(_top1(ref_out[0]) == _top1(outputs[0])))
            max_diff = float(np.max(np.abs(ref_out[0] - outputs[0])))

        work = model_work(content)
        estimates = tuple(estimate_latency(work, n) for n in names)
        op_profile = (
            _measure_profile(label, content, cfg, child.get("ops", [])) if profile else None
        )
        device_report = None
        if device is Device.ARM64:
            # The ARM run gets exactly the host's inputs: the user's, or the
            # random ones the host child saved.
            dev_inputs = inputs_path or str(tmpd / "inputs.npz")
            device_report = _device_run(
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
