"""Measuring a candidate: paired accuracy against the baseline, size, latency, device rules.

Accuracy is measured in LiteRT on the validation split (for selection) and,
for the winner only, once on the test split, each paired against the fp32
baseline on the same samples: the losses (samples the baseline gets right and
the candidate wrong) and gains (the reverse) give a one-sided exact bound on the
net drop on new data (`tflight.precision.stats.net_drop_bound_pt`). Latency is the device profile's estimate (labelled estimated) and a
measured median on this host's LiteRT CPU runtime (labelled measured, host).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from tflight.optimization.inputs import Device, net_drop_bound_pt

__all__ = ["Paired", "device_check", "estimated_ms", "host_ms", "paired"]


@dataclasses.dataclass(frozen=True)
class Paired:
    """A candidate's accuracy against the baseline on one split (measured in LiteRT)."""

    split: str
    samples: int
    accuracy: float
    baseline_accuracy: float
    drop_pt: float
    losses: int
    gains: int
    drop_bound_pt: float
    confidence: float

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def correct(content: bytes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per-sample top-1 correctness of a `.tflite` model, run in LiteRT."""
    import converters

    out = converters.TFLiteModel(content).predict(x)
    if isinstance(out, list):
        out = out[0]
    return np.argmax(np.asarray(out).reshape(len(x), -1), axis=-1) == y


def paired(content: bytes, x: np.ndarray, y: np.ndarray, base: np.ndarray, *, split: str,
           confidence: float) -> Paired:
    """Accuracy, drop and its bound against the baseline's correctness `base` on `(x, y)`."""
    got = correct(content, x, y)
    n = len(y)
    losses = int(np.sum(base & ~got))
    gains = int(np.sum(~base & got))
    return Paired(split, n, float(got.mean()), float(base.mean()),
                  100.0 * float(base.mean() - got.mean()), losses, gains,
                  net_drop_bound_pt(losses, gains, n, confidence), confidence)


def estimated_ms(content: bytes, profile: str) -> tuple[float, str]:
    """The device profile's latency estimate (never a measurement) and its label."""
    from tflight.devices import estimate_latency

    est = estimate_latency(content, profile)
    return float(est.ms), f"estimated ({profile} profile): {est.label}"


def host_ms(content: bytes) -> float:
    """Median latency measured on this host's LiteRT CPU runtime (1 thread, XNNPACK)."""
    from tflight.bench import BenchmarkConfig, benchmark

    config = BenchmarkConfig(runs=20, min_time=0.2, warmup_min_time=0.1)
    return float(benchmark(content, config=config).latency.median_ms)


def _mode(storage: str) -> Any:
    import converters

    return {"fp32": converters.Mode.FP32, "fp16": converters.Mode.FP16,
            "dynamic": converters.Mode.DYNAMIC, "int8": converters.Mode.INT8,
            "int16x8": converters.Mode.INT16X8}.get(storage, converters.Mode.DYNAMIC)


def device_check(content: bytes, storage: str, device: Device) -> dict[str, Any]:
    """The device's rule applied to a candidate: `eligible`, `reason`, and what was found.

    - cpu profiles: every LiteRT CPU model counts.
    - edgetpu: full int8 with int8 inputs and outputs (converters' Edge TPU
      check); ops the Edge TPU lacks are listed (they and every op after the
      first run on the CPU).
    - gpu: the model is run on LiteRT's GPU accelerator (software Vulkan); it
      counts only if every op is delegated and the outputs match the CPU's.
    - npu: converters' static NPU check (builtin ops, static shapes, integer
      compute for integer models, ops NPU compilers commonly place).
    """
    import converters
    from converters import targets

    if device.target == "cpu":
        return {"eligible": True, "reason": "", "partitions": None, "issues": []}
    if device.target == "gpu":
        if storage in ("int16x8", "int4", "mixed"):
            return {"eligible": False, "reason": "the GPU accelerator has no kernels for this "
                    "storage", "partitions": None, "issues": []}
        try:
            run = converters.run_on_gpu(content)
        except converters.ConversionError as e:
            return {"eligible": False, "reason": f"GPU accelerator: {e}", "partitions": None,
                    "issues": []}
        parts = [list(p) for p in run.partitions]
        if not run.passed:
            return {"eligible": False, "reason": "GPU outputs fail against the CPU's: "
                    + "; ".join(run.failures), "partitions": parts, "issues": list(run.fallback)}
        if not run.fully_accelerated:
            return {"eligible": False, "reason": "LiteRT's GPU accelerator leaves ops on the "
                    "CPU: " + ("; ".join(run.fallback) or "not named in its log"),
                    "partitions": parts, "issues": list(run.fallback)}
        return {"eligible": True, "reason": "", "partitions": parts or [["all", 0]],
                "issues": [], "gpu_ms_software": run.gpu_ms}
    target = converters.Target(device.target)
    if device.target == "edgetpu" and storage != "int8":
        return {"eligible": False, "reason": "the Edge TPU runs only full-integer int8 models",
                "partitions": None, "issues": []}
    if device.target == "npu" and storage not in ("int8", "int16x8", "fp16"):
        return {"eligible": False, "reason": "NPU compilers take full-integer (int8, int16x8) "
                "or float16 models", "partitions": None, "issues": []}
    stats = converters.inspect(content).stats
    try:
        report = targets.check_model(target, _mode(storage), content, stats)
    except converters.ConversionError as e:
        return {"eligible": False, "reason": str(e), "partitions": None, "issues": []}
    cpu_ops = sorted(op for op in stats.ops if op not in (
        targets.EDGETPU_OPS if device.target == "edgetpu" else targets.NPU_OPS))
    on_acc = sum(n for op, n in stats.ops.items() if op not in cpu_ops)
    on_cpu = sum(n for op, n in stats.ops.items() if op in cpu_ops)
    return {"eligible": report.compatible,
            "reason": "" if report.compatible else "; ".join(report.issues),
            "partitions": [[on_acc, on_cpu]], "issues": list(report.issues),
            "notes": list(report.notes)}
