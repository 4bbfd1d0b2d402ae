"""Benchmark `.tflite` files: host, emulated ARM64, LiteRT's GPU accelerator, with history."""

from tflight._lazy import attach

_EXPORTS = {
    "Accelerator": "tflight.bench.run",
    "BenchmarkConfig": "tflight.bench.run",
    "BenchmarkResult": "tflight.bench.run",
    "Comparison": "tflight.bench.run",
    "Device": "tflight.bench.run",
    "benchmark": "tflight.bench.run",
    "benchmark_many": "tflight.bench.run",
    "append_history": "tflight.bench.history",
    "plot_latency_vs_size": "tflight.bench.history",
    "read_history": "tflight.bench.history",
    "setup_arm64": "tflight.bench.emulator",
}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
