"""What a benchmark returns: configuration, result objects and their summaries.

`tflight.benchmark` measures and fills these; `tflight.bench_history` keeps
history files and draws plots. The objects here hold data, convert to JSON
(`to_dict`) and print themselves (`summary`); they run nothing.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from tflight.devices.profiles import LatencyEstimate
from tflight.errors import BenchmarkError

__all__ = [
    "Accelerator",
    "Device",
    "InputDataError",
    "BenchmarkInternalError",
    "GpuReport",
    "BenchmarkConfig",
    "LatencyStats",
    "MemoryStats",
    "OpTiming",
    "OpProfile",
    "DeviceReport",
    "BenchmarkResult",
    "Comparison",
]


class Accelerator(enum.StrEnum):
    """Where LiteRT runs the model; values are the CLI words."""

    CPU = "cpu"
    GPU = "gpu"
    NPU = "npu"


class Device(enum.StrEnum):
    """The machine the model runs on; values are the CLI words."""

    HOST = "host"
    ARM64 = "arm64"


class InputDataError(BenchmarkError):
    """User-supplied inputs or labels do not fit the model."""


class BenchmarkInternalError(RuntimeError):
    """A failure of tflight's own benchmark code (not the user's input).

    Deliberately not a `TflightError`: the command line reports it as an
    internal error (exit 1) with the path of the full traceback.

    Attributes:
      traceback_path: the file holding the child's traceback, or None.
    """

    def __init__(self, message: str, traceback_path: str | None = None):
        super().__init__(message)
        self.traceback_path = traceback_path


@dataclasses.dataclass(frozen=True)
class GpuReport:
    """How LiteRT's GPU accelerator ran the model (on a software Vulkan device).

    Attributes:
      adapter: the Vulkan adapter the accelerator selected.
      fully_accelerated: `CompiledModel.is_fully_accelerated()`.
      fallback: ops the accelerator did not take, with its reason (its log).
      partitions: (ops on the GPU, ops on the CPU) per delegated graph.
      max_abs_diff: largest |GPU - CPU| over the outputs.
      snr_db: SNR of the GPU outputs against the CPU accelerator's.
      min_snr_db: the bound the check requires.
      timing_note: what the latency figures are on this device.
    """

    adapter: str
    fully_accelerated: bool
    fallback: tuple[str, ...]
    partitions: tuple[tuple[int, int], ...]
    max_abs_diff: float
    snr_db: float
    min_snr_db: float
    timing_note: str


@dataclasses.dataclass(frozen=True)
class BenchmarkConfig:
    """How to run a benchmark (the defaults follow `benchmark_model`).

    Attributes:
      runs: minimum number of measured invokes.
      min_time: minimum seconds of measured invokes.
      max_time: stop measuring after this many seconds (once at least one run
        was made); 0 means no cap.
      warmup_runs: minimum number of warm-up invokes (after the first one).
      warmup_min_time: minimum seconds of warm-up.
      threads: CPU threads; None lets LiteRT decide.
      xnnpack: keep LiteRT's default XNNPACK delegate on the CPU.
      accelerator: `"cpu"`, `"gpu"` or `"npu"`. `"gpu"` runs LiteRT's GPU
        accelerator on the software Vulkan device of `converters.gpu` (set
        up on first use; its timing is not GPU timing) and checks its outputs
        against the CPU's; it never falls back silently. An absent NPU falls
        back to the CPU, with a note saying so.
      delegate: path of an external delegate shared library (e.g.
        libedgetpu.so.1), or None.
      delegate_options: string options passed to that delegate.
      seed: seed of the random inputs.
      timeout: seconds a child process may take before it is stopped.
    """

    runs: int = 50
    min_time: float = 1.0
    max_time: float = 150.0
    warmup_runs: int = 1
    warmup_min_time: float = 0.5
    threads: int | None = 1
    xnnpack: bool = True
    accelerator: Accelerator | str = Accelerator.CPU
    delegate: str | None = None
    delegate_options: Mapping[str, str] = dataclasses.field(default_factory=dict)
    seed: int = 0
    timeout: float = 600.0

    def __post_init__(self) -> None:
        if not isinstance(self.runs, int) or self.runs < 1:
            raise BenchmarkError(f"`runs` must be an integer >= 1, got {self.runs!r}.")
        if not isinstance(self.warmup_runs, int) or self.warmup_runs < 0:
            raise BenchmarkError(
                f"`warmup_runs` must be an integer >= 0, got {self.warmup_runs!r}."
            )
        for name in ("min_time", "max_time", "warmup_min_time"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or v < 0 or math.isnan(v):
                raise BenchmarkError(f"`{name}` must be a number of seconds >= 0, got {v!r}.")
        if self.timeout <= 0:
            raise BenchmarkError(f"`timeout` must be > 0 seconds, got {self.timeout!r}.")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise BenchmarkError(
                f"`threads` must be an integer >= 1 or None (LiteRT decides), got {self.threads!r}."
            )
        try:
            object.__setattr__(self, "accelerator", Accelerator(self.accelerator))
        except ValueError:
            raise BenchmarkError(
                f"`accelerator` must be one of {[a.value for a in Accelerator]}, "
                f"got {self.accelerator!r}."
            ) from None
        if self.delegate is not None:
            if self.accelerator is not Accelerator.CPU:
                raise BenchmarkError(
                    "an external `delegate` replaces the accelerator choice: use it with "
                    f"accelerator='cpu', not {self.accelerator.value!r}."
                )
            if not Path(self.delegate).is_file():
                raise BenchmarkError(
                    f"delegate library {self.delegate!r} does not exist; pass the path of the "
                    "delegate's shared library (e.g. /usr/lib/x86_64-linux-gnu/libedgetpu.so.1)."
                )
        opts = dict(self.delegate_options)
        if opts and self.delegate is None:
            raise BenchmarkError("`delegate_options` were given without a `delegate` library.")
        object.__setattr__(self, "delegate_options", {str(k): str(v) for k, v in opts.items()})

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["accelerator"] = Accelerator(self.accelerator).value
        return d


@dataclasses.dataclass(frozen=True)
class LatencyStats:
    """Statistics of measured invoke latencies, in milliseconds."""

    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    median_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float]) -> LatencyStats:
        if not samples_ms:
            raise BenchmarkError("no measured runs to compute statistics from")
        a = np.asarray(samples_ms, dtype=np.float64)
        return cls(
            count=int(a.size),
            mean_ms=float(a.mean()),
            std_ms=float(a.std(ddof=1)) if a.size > 1 else 0.0,
            min_ms=float(a.min()),
            median_ms=float(np.median(a)),
            p90_ms=float(np.percentile(a, 90)),
            p99_ms=float(np.percentile(a, 99)),
            max_ms=float(a.max()),
        )


@dataclasses.dataclass(frozen=True)
class MemoryStats:
    """Resident memory of the child process that ran the model, in KiB.

    Attributes:
      baseline_kib: RSS after importing numpy and LiteRT, before the model.
      after_load_kib: RSS once the model is loaded and its tensors allocated.
      peak_kib: peak RSS from loading through the last measured invoke.
      peak_is_model_only: True if the kernel's peak counter was reset at the
        baseline (Linux), so the peak cannot include earlier imports.
    """

    baseline_kib: int | None
    after_load_kib: int | None
    peak_kib: int | None
    peak_is_model_only: bool

    @property
    def inference_kib(self) -> int | None:
        """Peak minus baseline: what loading and running the model added."""
        if self.peak_kib is None or self.baseline_kib is None:
            return None
        return max(self.peak_kib - self.baseline_kib, 0)


@dataclasses.dataclass(frozen=True)
class OpTiming:
    """One operator's share of an invoke."""

    index: int
    op_name: str
    delegated: bool | None
    ms: float
    share: float


@dataclasses.dataclass(frozen=True)
class OpProfile:
    """Per-op times of a model, measured or estimated (see `method`).

    Attributes:
      ops: one `OpTiming` per op.
      method: how the times were obtained.
      estimated: True unless measured op by op.
      device: where the times apply: `"host"` (this machine, timed model
        prefixes) or a device profile's name when the times are that
        profile's *estimate* (the fallback when timing prefixes fails); the
        table then labels its column so, never as host milliseconds.
    """

    ops: tuple[OpTiming, ...]
    method: str
    estimated: bool
    device: str = "host"

    def top(self, n: int = 10) -> list[OpTiming]:
        """The `n` ops that take the most time."""
        return sorted(self.ops, key=lambda o: -o.ms)[:n]

    def summary(self, print_fn: Callable[[str], None] = print, *, top: int = 10) -> None:
        method = self.method if self.estimated else f"measured: {self.method}"
        print_fn(f"Per-op profile ({method})")
        unit = "host ms" if self.device == "host" else f"{self.device} ms (est.)"
        print_fn(f"  {'#':>4}  {'op':<24} {'delegated':<9} {unit:>18} {'share':>7}")
        for o in self.top(top):
            dele = {True: "yes", False: "no", None: "?"}[o.delegated]
            print_fn(f"  {o.index:>4}  {o.op_name:<24} {dele:<9} {o.ms:>18.4f} {o.share:>6.1%}")


@dataclasses.dataclass(frozen=True)
class DeviceReport:
    """The same model run by LiteRT's AArch64 build under qemu.

    Attributes:
      device: `"arm64"`.
      runtime: the LiteRT build used there.
      outputs_match: the ARM outputs equal the host's within `tolerance`.
      max_abs_diff: largest absolute difference between ARM and host outputs.
      tolerance: the bound used (one quantization step for quantized outputs).
      instructions_per_invoke: guest instructions per invoke in LiteRT's
        libraries (repeatable), or None.
      cost_note: exactly what `instructions_per_invoke` counts, or why missing.
      emulated_median_ms: median invoke time under emulation, and under qemu's
        tracer when instructions are counted (never phone time).
      wall_s: wall time of the emulated runs.
      emulator: the qemu that ran it (`qemu --version`).
      unsized_blocks: executed blocks the instruction count could not size
        (reported in `cost_note` too), or None when not counted.
    """

    device: str
    runtime: str
    outputs_match: bool
    max_abs_diff: float
    tolerance: float
    instructions_per_invoke: float | None
    cost_note: str
    emulated_median_ms: float
    wall_s: float
    emulator: str = ""
    unsized_blocks: int | None = None


@dataclasses.dataclass(frozen=True)
class BenchmarkResult:
    """Everything one benchmark of one `.tflite` file measured.

    Figures from `estimates` are estimates from device profiles and are
    labelled so; everything else was measured on this machine.
    """

    model: str
    size_bytes: int
    sha256: str
    config: BenchmarkConfig
    accelerator: str
    notes: tuple[str, ...]
    init_ms: float
    first_ms: float
    latency: LatencyStats
    memory: MemoryStats
    runtime: str
    machine: str
    inputs: tuple[dict, ...]
    outputs: tuple[dict, ...]
    input_source: str
    accuracy: float | None = None
    agreement: float | None = None
    max_abs_diff: float | None = None
    samples: int | None = None
    estimates: tuple[LatencyEstimate, ...] = ()
    profile: OpProfile | None = None
    device: DeviceReport | None = None
    gpu_compatibility: str | None = None
    gpu: GpuReport | None = None
    timestamp: str = ""

    def estimate(self, profile: str) -> LatencyEstimate | None:
        return next((e for e in self.estimates if e.profile == profile), None)

    def to_dict(self) -> dict:
        d = {
            "model": self.model,
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "config": self.config.to_dict(),
            "accelerator": self.accelerator,
            "notes": list(self.notes),
            "init_ms": self.init_ms,
            "first_ms": self.first_ms,
            "latency": dataclasses.asdict(self.latency),
            "memory": dict(
                dataclasses.asdict(self.memory), inference_kib=self.memory.inference_kib
            ),
            "runtime": self.runtime,
            "machine": self.machine,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
            "input_source": self.input_source,
            "accuracy": self.accuracy,
            "agreement": self.agreement,
            "max_abs_diff": self.max_abs_diff,
            "samples": self.samples,
            "estimates": [e.to_dict() for e in self.estimates],
            "profile": None,
            "device": dataclasses.asdict(self.device) if self.device else None,
            "gpu": dataclasses.asdict(self.gpu) if self.gpu else None,
            "timestamp": self.timestamp,
        }
        if self.profile is not None:
            d["profile"] = {
                "method": self.profile.method,
                "estimated": self.profile.estimated,
                "device": self.profile.device,
                "ops": [dataclasses.asdict(o) for o in self.profile.ops],
            }
        return d

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints a readable report of this result."""
        lat = self.latency
        print_fn(f"Model            {self.model} ({_fmt_size(self.size_bytes)})")
        threads = self.config.threads if self.config.threads is not None else "default"
        xnn = "on" if self.config.xnnpack else "off"
        print_fn(
            f"Runtime          {self.runtime} on {self.machine}, {self.accelerator}, "
            f"threads={threads}, XNNPACK {xnn}"
        )
        print_fn(f"Inputs           {self.input_source}")
        print_fn(f"Init             {self.init_ms:.2f} ms   first run {self.first_ms:.3f} ms")
        print_fn(
            f"Latency ({lat.count} runs)  mean {lat.mean_ms:.4f} ± {lat.std_ms:.4f} ms, "
            f"min {lat.min_ms:.4f}, median {lat.median_ms:.4f}, p90 {lat.p90_ms:.4f}, "
            f"p99 {lat.p99_ms:.4f} ms"
        )
        m = self.memory
        if m.peak_kib is not None:
            print_fn(
                f"Memory           baseline {m.baseline_kib / 1024:.1f} MiB, peak "
                f"{m.peak_kib / 1024:.1f} MiB (+{(m.inference_kib or 0) / 1024:.1f} MiB for the model)"
            )
        if self.accuracy is not None:
            print_fn(f"Accuracy         {self.accuracy:.2%} on {self.samples} samples")
        if self.agreement is not None:
            print_fn(
                f"Agreement        {self.agreement:.2%} top-1 with the reference "
                f"(max |diff| {self.max_abs_diff:.3g})"
            )
        for e in self.estimates:
            print_fn(f"Estimate         {e.profile}: {e.ms:.3f} ms ({e.label})")
        if self.device is not None:
            d = self.device
            verdict = "match" if d.outputs_match else "DIFFER"
            cost = (
                f"{d.instructions_per_invoke:,.0f} instructions/invoke"
                if d.instructions_per_invoke is not None
                else d.cost_note
            )
            print_fn(
                f"ARM64 (emulated) {d.runtime} under {d.emulator or 'qemu'}: outputs {verdict} the host's "
                f"(max |diff| {d.max_abs_diff:.3g} <= {d.tolerance:.3g}); {cost}"
            )
            if d.instructions_per_invoke is not None:
                print_fn(f"                 ({d.cost_note})")
        if self.gpu is not None:
            g = self.gpu
            from converters.gpu import describe_placement

            placed = describe_placement(g.fully_accelerated, g.partitions)
            print_fn(f"GPU accelerator  {g.adapter or 'Vulkan'}: {placed}")
            for op in g.fallback:
                print_fn(f"  falls back      {op}")
            print_fn(
                f"GPU vs CPU       max |diff| {g.max_abs_diff:.3g}, SNR {g.snr_db:.1f} dB "
                f"(>= {g.min_snr_db:.0f} dB): ok"
            )
            print_fn(f"GPU timing       {g.timing_note}")
        for n in self.notes:
            print_fn(f"Note             {n}")
        if self.gpu_compatibility:
            print_fn("GPU compatibility (LiteRT analyzer):")
            for line in self.gpu_compatibility.splitlines():
                print_fn(f"  {line}")
        if self.profile is not None:
            self.profile.summary(print_fn)


@dataclasses.dataclass(frozen=True)
class Comparison:
    """Several results side by side, with ratios against the first."""

    results: tuple[BenchmarkResult, ...]

    def ratios(self) -> list[dict[str, float | None]]:
        """Per result: median latency, size and peak-memory ratios vs the first."""
        base = self.results[0]
        out = []
        for r in self.results:
            mem = (
                r.memory.inference_kib / base.memory.inference_kib
                if r.memory.inference_kib and base.memory.inference_kib
                else None
            )
            out.append(
                {
                    "latency": r.latency.median_ms / base.latency.median_ms,
                    "size": r.size_bytes / base.size_bytes,
                    "memory": mem,
                }
            )
        return out

    def rows(self, *, estimate: Sequence[str] = ("pixel4",)) -> list[list[str]]:
        """The table's header and rows as strings."""
        header = [
            "model", "size", "init ms", "first ms", "median ms", "p90 ms", "p99 ms",
            "std ms", "peak MiB", "x latency", "x size",
        ]
        has_acc = any(r.accuracy is not None for r in self.results)
        has_agree = any(r.agreement is not None for r in self.results)
        has_dev = any(r.device is not None for r in self.results)
        if has_acc:
            header.append("accuracy")
        if has_agree:
            header.append("agree")
        for p in estimate:
            header.append(f"{p} ms (est.)")
        if has_dev:
            header += ["arm64 instr/inv", "arm64 out"]
        rows = [header]
        for r, q in zip(self.results, self.ratios(), strict=True):
            row = [
                Path(r.model).name,
                _fmt_size(r.size_bytes),
                f"{r.init_ms:.1f}",
                f"{r.first_ms:.3f}",
                f"{r.latency.median_ms:.4f}",
                f"{r.latency.p90_ms:.4f}",
                f"{r.latency.p99_ms:.4f}",
                f"{r.latency.std_ms:.4f}",
                f"{r.memory.inference_kib / 1024:.1f}" if r.memory.inference_kib else "-",
                f"{q['latency']:.2f}x",
                f"{q['size']:.2f}x",
            ]
            if has_acc:
                row.append(f"{r.accuracy:.2%}" if r.accuracy is not None else "-")
            if has_agree:
                row.append(f"{r.agreement:.2%}" if r.agreement is not None else "-")
            for p in estimate:
                e = r.estimate(p)
                row.append(f"{e.ms:.3f}" if e is not None and not math.isnan(e.ms) else "-")
            if has_dev:
                d = r.device
                row.append(
                    f"{d.instructions_per_invoke:,.0f}"
                    if d is not None and d.instructions_per_invoke is not None
                    else "-"
                )
                row.append(("ok" if d.outputs_match else "DIFFER") if d is not None else "-")
            rows.append(row)
        return rows

    def summary(
        self, print_fn: Callable[[str], None] = print, *, estimate: Sequence[str] = ("pixel4",)
    ) -> None:
        """Prints the side-by-side table; ratios are against the first model."""
        rows = self.rows(estimate=estimate)
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        for k, row in enumerate(rows):
            cells = [
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            print_fn("  ".join(cells))
            if k == 0:
                print_fn("  ".join("-" * w for w in widths))
        first = self.results[0]
        print_fn(
            f"Ratios are against {Path(first.model).name}; latency is the median of measured "
            f"runs on this host ({first.machine}); '(est.)' columns are estimates from "
            "device profiles, not measurements."
        )
        for r in self.results:
            for n in r.notes:
                print_fn(f"Note ({Path(r.model).name}): {n}")


def _fmt_size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.2f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.1f} KiB"
    return f"{n} B"
