"""Benchmark `.tflite` files on the host and on an emulated ARM64 device.

`benchmark` measures one model the way `benchmark_model` does (warm-up runs,
then measured runs until both a count and a minimum time are reached) and adds
what a Keras user needs to decide what to ship: the peak memory of the
inference, the size, accuracy and agreement with a reference model on the
user's data, a per-op profile, an estimated latency on named phone and
accelerator profiles, and the same model run by LiteRT's AArch64 build under
emulation with its outputs checked against the host's.

Each measurement runs in a fresh child process (`tflight/_bench_child.py`
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

import dataclasses
import datetime
import enum
import hashlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tflight.errors import BenchmarkError, DeviceError
from tflight.profiles import PROFILES, LatencyEstimate, estimate_latency, model_work

__all__ = [
    "Accelerator",
    "Device",
    "BenchmarkConfig",
    "LatencyStats",
    "MemoryStats",
    "OpTiming",
    "OpProfile",
    "DeviceReport",
    "BenchmarkResult",
    "Comparison",
    "InputDataError",
    "benchmark",
    "benchmark_many",
    "append_history",
    "read_history",
    "plot_latency_vs_size",
]

_CHILD = Path(__file__).with_name("_bench_child.py")


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
      accelerator: `"cpu"`, `"gpu"` or `"npu"`; an accelerator that is not
        available here falls back to the CPU, with a note saying so.
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
    """Per-op times of a model, measured or estimated (see `method`)."""

    ops: tuple[OpTiming, ...]
    method: str
    estimated: bool

    def top(self, n: int = 10) -> list[OpTiming]:
        """The `n` ops that take the most time."""
        return sorted(self.ops, key=lambda o: -o.ms)[:n]

    def summary(self, print_fn: Callable[[str], None] = print, *, top: int = 10) -> None:
        label = "estimated" if self.estimated else "measured"
        print_fn(f"Per-op profile ({label}: {self.method})")
        print_fn(f"  {'#':>4}  {'op':<24} {'delegated':<9} {'ms':>9} {'share':>7}")
        for o in self.top(top):
            dele = {True: "yes", False: "no", None: "?"}[o.delegated]
            print_fn(f"  {o.index:>4}  {o.op_name:<24} {dele:<9} {o.ms:>9.4f} {o.share:>6.1%}")


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
            "timestamp": self.timestamp,
        }
        if self.profile is not None:
            d["profile"] = {
                "method": self.profile.method,
                "estimated": self.profile.estimated,
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
                f"ARM64 (emulated) {d.runtime}: outputs {verdict} the host's "
                f"(max |diff| {d.max_abs_diff:.3g} <= {d.tolerance:.3g}); {cost}"
            )
            if d.instructions_per_invoke is not None:
                print_fn(f"                 ({d.cost_note})")
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
            "model",
            "size",
            "init ms",
            "first ms",
            "median ms",
            "p90 ms",
            "p99 ms",
            "std ms",
            "peak MiB",
            "x latency",
            "x size",
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


def _verify(model: str | os.PathLike | bytes) -> tuple[bytes, Any]:
    """Reads and checks a `.tflite` safely (in a child process) before anything loads it."""
    import converters

    try:
        verified = converters.verify_tflite(model)
    except converters.errors.InvalidTFLiteError as e:
        raise BenchmarkError(str(e)) from e
    return verified.content, verified


def _run_child(request: dict, *, timeout: float, label: str) -> dict:
    from tflight._bench_child import RESULT_MARK

    with tempfile.TemporaryDirectory(prefix="tflight-bench-") as tmp:
        req_path = Path(tmp) / "request.json"
        req_path.write_text(json.dumps(request))
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        try:
            proc = subprocess.run(
                [sys.executable, "-s", str(_CHILD), str(req_path)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
                check=False,
            )
        except subprocess.TimeoutExpired as e:
            raise BenchmarkError(
                f"benchmarking {label} did not finish within {timeout:.0f} s; lower `runs`/"
                "`min_time` or raise `timeout`"
            ) from e
    line = next(
        (ln for ln in reversed(proc.stdout.splitlines()) if ln.startswith(RESULT_MARK)), None
    )
    if line is None:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        tail = " ".join(proc.stderr.strip().splitlines()[-2:])[:400]
        raise BenchmarkError(
            f"LiteRT crashed while running {label} ({how}); the caller is unharmed. {tail}".strip()
        )
    out = json.loads(line[len(RESULT_MARK) :])
    if "error" in out:
        kind, msg = out["error"]["kind"], out["error"]["message"]
        if kind == "InputDataError":
            raise InputDataError(msg)
        if kind == "AcceleratorUnavailable":
            raise _AcceleratorUnavailable(msg)
        raise BenchmarkError(msg)
    return out


class _AcceleratorUnavailable(BenchmarkError):
    pass


def _load_labels(path: str | None) -> np.ndarray | None:
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as data:
        if "y" not in data:
            return None
        y = np.asarray(data["y"])
    # Class ids (n,), a column (n, 1), or one-hot (n, classes).
    if y.ndim == 2 and y.shape[1] > 1:
        return y.argmax(axis=1)
    if y.ndim == 2 or y.ndim == 1:
        return y.reshape(-1)
    raise InputDataError(
        f"labels 'y' in {path!r} have shape {y.shape}; give class ids (n,) or one-hot (n, classes)"
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


def _prefix_models(content: bytes, tmp: Path) -> list[str]:
    """Writes models made of the first k ops of the graph, k = 1..n."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(content), 0)
    sg = m.subgraphs[0]
    ops = list(sg.operators or [])
    buffers = list(m.buffers or [])
    m.signatureDefs = None
    paths = []
    for k in range(1, len(ops) + 1):
        sg.operators = ops[:k]
        outs = [int(t) for t in ops[k - 1].outputs if int(t) >= 0]
        sg.outputs = outs
        used = {int(t) for op in ops[:k] for t in op.inputs if int(t) >= 0}
        used |= {int(t) for t in sg.inputs}
        keep = {sg.tensors[t].buffer for t in used}
        m.buffers = [b if i in keep or i == 0 else schema.BufferT() for i, b in enumerate(buffers)]
        builder = flatbuffers.Builder(1024)
        builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
        path = tmp / f"prefix_{k:04d}.tflite"
        path.write_bytes(bytes(builder.Output()))
        paths.append(str(path))
    return paths


def _measure_profile(
    path: str, content: bytes, cfg: BenchmarkConfig, ops_seen: list[dict]
) -> OpProfile:
    delegated = _delegated_ops(ops_seen) or {}
    with tempfile.TemporaryDirectory(prefix="tflight-prefix-") as tmp:
        try:
            prefixes = _prefix_models(content, Path(tmp))
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
                names = [o["op_name"] for o in ops_seen if o["op_name"] != "DELEGATE"]
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
                    method=(
                        "prefix timing: median latency of the first k ops minus that of the "
                        "first k-1, measured in one clean process; op 0 includes the per-invoke "
                        "overhead; noisy for ops under a microsecond"
                    ),
                    estimated=False,
                )
            except BenchmarkError as e:
                reason = str(e)
    est = estimate_latency(model_work(content), "pixel4")
    total = sum(est.per_op_ms) or 1.0
    names = model_work(content).ops
    return OpProfile(
        ops=tuple(
            OpTiming(o.index, o.op_name, delegated.get(o.index), t, t / total)
            for o, t in zip(names, est.per_op_ms, strict=True)
        ),
        method=f"roofline estimate on the pixel4 profile (prefix timing failed: {reason})",
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
    from tflight.device import run_on_arm64

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
      profile: also measure a per-op profile (by prefix timing).
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
        try:
            child = _run_child(request, timeout=cfg.timeout, label=label)
        except _AcceleratorUnavailable as e:
            accel_used = "cpu"
            notes.append(f"{e}; ran on the CPU instead")
            if cfg.accelerator == Accelerator.GPU:
                gpu_compat = _gpu_compat(verified)
            child = _run_child(dict(request, accelerator="cpu"), timeout=cfg.timeout, label=label)
        if cfg.accelerator != Accelerator.CPU and child.get("fully_accelerated") is False:
            notes.append(
                f"not every op runs on the {cfg.accelerator.upper()}; the rest fell back to the CPU"
            )
        if cfg.delegate:
            delegated = _delegated_ops(child.get("ops", []))
            n_del = sum(delegated.values()) if delegated else 0
            notes.append(f"external delegate {Path(cfg.delegate).name}: {n_del} op(s) delegated")
        outputs = _outputs_from(tmpd / "outputs.npz")

        accuracy = agreement = max_diff = None
        samples = None
        labels = _load_labels(inputs_path)
        if inputs_path is not None:
            samples = int(len(outputs[0]))
        if labels is not None:
            if len(labels) != len(outputs[0]):
                raise InputDataError(
                    f"labels 'y' in {str(inputs)!r} hold {len(labels)} entries but the inputs "
                    f"hold {len(outputs[0])} samples; give one label per sample"
                )
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
        timestamp=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )


def _gpu_compat(verified: Any) -> str:
    text = getattr(verified, "gpu_analysis", None)
    if not text:
        return "the GPU compatibility analysis is not available for this model"
    lines = [ln for ln in text.splitlines() if "GPU" in ln.upper() or "COMPATIB" in ln.upper()]
    if not lines:
        return "LiteRT's analyzer reports no GPU-delegate compatibility issue."
    return "\n".join(lines[:40])


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


def append_history(results: Sequence[BenchmarkResult], path: str | os.PathLike) -> None:
    """Appends one JSON line per result to a history file.

    Each line is written with a single `write` on a file opened for appending,
    so concurrent writers do not interleave within a line.
    """
    p = Path(path)
    if p.exists() and p.is_dir():
        raise BenchmarkError(f"history path {str(path)!r} is a directory; give a file name")
    p.parent.mkdir(parents=True, exist_ok=True)
    with open(p, "a", encoding="utf-8") as f:
        for r in results:
            line = json.dumps(
                {
                    "timestamp": r.timestamp,
                    "model": r.model,
                    "sha256": r.sha256,
                    "size_bytes": r.size_bytes,
                    "machine": r.machine,
                    "runtime": r.runtime,
                    "accelerator": r.accelerator,
                    "config": r.config.to_dict(),
                    "latency": dataclasses.asdict(r.latency),
                    "init_ms": r.init_ms,
                    "peak_kib": r.memory.peak_kib,
                    "inference_kib": r.memory.inference_kib,
                    "accuracy": r.accuracy,
                }
            )
            f.write(line + "\n")
            f.flush()


def read_history(path: str | os.PathLike) -> list[dict]:
    """Reads a history file; lines that are not JSON (e.g. a torn write) are skipped."""
    p = Path(path)
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def plot_latency_vs_size(results: Sequence[BenchmarkResult], path: str | os.PathLike) -> Path:
    """Draws median latency against size for several models to a PNG.

    Raises:
      BenchmarkError: matplotlib is not installed (`pip install 'tflight[plot]'`)
        or the path does not end in a format matplotlib writes.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:
        raise BenchmarkError(
            "plotting needs matplotlib: pip install 'tflight[plot]' (or matplotlib>=3.8)"
        ) from e
    out = Path(path)
    if out.suffix.lower() not in (".png", ".svg", ".pdf"):
        raise BenchmarkError(f"plot path must end in .png, .svg or .pdf, got {str(path)!r}")
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for r in results:
        x, y = r.size_bytes / 1024, r.latency.median_ms
        ax.scatter([x], [y])
        ax.annotate(Path(r.model).name, (x, y), textcoords="offset points", xytext=(4, 4))
    ax.set_xlabel("model size (KiB)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("latency vs size (measured on this host)")
    ax.margins(0.2)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.part{out.suffix}")
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    return out
