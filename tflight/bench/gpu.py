"""A benchmark on LiteRT's GPU accelerator, run on the software Vulkan device.

The accelerator runs on the Mesa llvmpipe device of `converters.gpu` (set up
on first use); its outputs are checked against the CPU's on the same inputs.
No silent fallback: a missing device, a model with free dimensions, or
outputs that fail the check raise.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from tflight.bench._runner import AcceleratorUnavailable, read_outputs, run_child
from tflight.bench.results import BenchmarkConfig, GpuReport
from tflight.errors import BenchmarkError, DeviceError

__all__ = ["gpu_run"]


def gpu_run(
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
        selected_adapter,
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
        child = run_child(
            dict(request, outputs_path=str(tmpd / "gpu_outputs.npz")),
            timeout=cfg.timeout, label=label, log=log,
            env=dict(vulkan.env(), TF_CPP_MIN_LOG_LEVEL="0"),
        )
    except AcceleratorUnavailable as e:
        raise DeviceError(f"{e} (on the software Vulkan device {vulkan.root})") from e
    # The CPU accelerator on exactly the same inputs, for the comparison.
    run_child(
        dict(
            request, accelerator="cpu", runs=1, min_time=0.0, warmup_runs=0,
            warmup_min_time=0.0, inputs_npz=inputs_path or request["inputs_save"],
            inputs_save=None,
        ),
        timeout=cfg.timeout, label=label,
    )
    gpu_out = read_outputs(tmpd / "gpu_outputs.npz")
    cpu_out = read_outputs(Path(request["outputs_path"]))
    os.replace(tmpd / "gpu_outputs.npz", request["outputs_path"])
    max_diff, snr, failures = compare_gpu_outputs(cpu_out, gpu_out)
    if failures:
        raise BenchmarkError(
            f"{label} fails validation on LiteRT's GPU accelerator: {'; '.join(failures)}. "
            "Benchmark an fp32 or fp16 conversion, or use --accelerator cpu."
        )
    fallback, partitions = parse_fallback(log[0] if log else "")
    adapter = selected_adapter(log[0] if log else "")
    if not adapter:
        raise DeviceError(
            "LiteRT's GPU accelerator found no Vulkan adapter, so nothing ran on it; run "
            "converters.gpu.setup_gpu(force=True) to rebuild the software Vulkan device"
        )
    report = GpuReport(
        adapter=adapter,
        fully_accelerated=bool(child.get("fully_accelerated")),
        fallback=fallback,
        partitions=partitions,
        max_abs_diff=max_diff,
        snr_db=snr,
        min_snr_db=30.0,
        timing_note=TIMING_LABEL,
    )
    return child, report

