"""Running a benchmark on the emulated ARM64 device, and counting its cost.

`run_on_arm64` runs the benchmark child (`tflight/bench/child.py`) with
LiteRT's AArch64 build under qemu user-mode emulation, in the user space
`setup_arm64` (`tflight.bench.arm64`) builds on first use.

Wall time under emulation is not phone time. The repeatable cost figure this
module reports instead is the number of **guest AArch64 instructions executed
in LiteRT's own libraries per invoke**, counted from qemu's execution trace
(`-d exec,in_asm,nochain,strace` restricted with `-dfilter` to the address
ranges of the LiteRT libraries) between two marker system calls that the child
makes around a fixed number of invokes. It does not include time in libc or the kernel, and
an instruction is not a cycle; it is repeatable to the instruction on a given
set-up and moves with the work a model does on ARM.

References:
  Bellard. "QEMU, a fast and portable dynamic translator". USENIX ATC 2005.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import statistics
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tflight.bench._runner import read_outputs
from tflight.bench.arm64 import (
    ARM64_RUNTIME,
    Arm64Environment,
    RegistryUnreachableError,
    _say,
    default_cache_dir,
    setup_arm64,
)
from tflight.bench.results import BenchmarkConfig, Device, DeviceReport
from tflight.errors import DeviceError

# The set-up's public names are offered here too: this module is the device.
__all__ = [
    "ARM64_RUNTIME",
    "Arm64Environment",
    "RegistryUnreachableError",
    "EmulatedRun",
    "default_cache_dir",
    "setup_arm64",
    "run_on_arm64",
]

_CHILD = Path(__file__).with_name("child.py")

@dataclasses.dataclass(frozen=True)
class EmulatedRun:
    """What one benchmark run under the ARM64 emulator returned.

    Attributes:
      child: the child's JSON result (timings are under emulation).
      wall_s: wall time of the emulated process.
      instructions_per_invoke: guest AArch64 instructions executed in LiteRT's
        libraries per invoke, or None if not counted.
      cost_note: how `instructions_per_invoke` was obtained, or why not.
      unsized_blocks: executed translation blocks between the markers whose
        size the trace did not give (not counted; reported, never dropped
        silently); None when not traced.
    """

    child: dict
    wall_s: float
    instructions_per_invoke: float | None
    cost_note: str
    unsized_blocks: int | None = None
    emulator: str = ""


_ADDR_NO_RANDOMIZE = 0x0040000
_TRACE_FLAGS = "exec,in_asm,nochain,strace"


def _no_aslr() -> None:
    """Turns off address randomisation in the child so qemu maps the guest alike every run."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        current = libc.personality(0xFFFFFFFF)
        if current != -1:
            libc.personality(current | _ADDR_NO_RANDOMIZE)
    except (OSError, AttributeError):
        pass


def _child_call(
    env: Arm64Environment,
    request: dict,
    *,
    timeout: float,
    qemu_args: tuple[str, ...] = (),
) -> tuple[dict, float]:
    from converters import _child

    try:
        run = _child.run_child(
            env.command(str(_CHILD), qemu_args=qemu_args),
            request=request,
            env=env.env(),
            timeout=timeout,
            name="tflight-arm64",
            preexec_fn=_no_aslr,
        )
    except _child.ChildTimeout as e:
        raise DeviceError(
            f"the emulated ARM64 run did not finish within {timeout:.0f} s; "
            "use a smaller model, fewer runs, or a longer timeout"
        ) from e
    except _child.ChildCrashed as e:
        raise DeviceError(
            f"LiteRT {e.how} under the ARM64 emulator: {e.tail}"
            + (f" (its output is kept in {e.log})" if e.log else "")
        ) from None
    except _child.ChildFailed as e:
        error = {"kind": e.kind, "message": e.message, "traceback": e.traceback}
        return {"error": error}, e.seconds
    return run.reply, run.seconds


def _count_trace(fifo: Path, out: dict) -> None:
    """Reads qemu's exec+in_asm+strace log (a fifo or a file) into `out`.

    Sums the guest instructions of the translation blocks executed between the
    child's begin and end marker system calls. Each `IN:` block lists a
    translated block's instructions, one `0x<pc>:` line each; each
    `Trace N: 0x<host> [<flags>/<pc>/...]` line is one execution of the block
    starting at <pc>. `out` gets `instructions`, `misses` (executions inside
    the markers of blocks never listed), `begin` / `end` (markers seen) and
    `error` if reading failed.
    """
    sizes: dict[int, int] = {}
    total = misses = 0
    inside = False
    pending_start, pending_n = None, 0
    try:
        with open(fifo, "rb") as f:
            for line in f:
                if line.startswith(b"0x") and pending_start is not None:
                    if pending_n == 0:
                        pending_start = int(line[: line.index(b":")], 16)
                    pending_n += 1
                elif line.startswith(b"IN:"):
                    pending_start, pending_n = -1, 0
                elif line.startswith(b"Trace"):
                    if pending_start is not None and pending_n:
                        sizes[pending_start] = pending_n
                    pending_start = None
                    if not inside:
                        continue
                    pc = int(line.split(b"[", 1)[1].split(b"/")[1], 16)
                    n = sizes.get(pc)
                    if n is None:
                        misses += 1
                    else:
                        total += n
                elif pending_start is not None and pending_n and not line.strip():
                    sizes[pending_start] = pending_n
                    pending_start = None
                elif b"@@tflight-invokes-begin@@" in line:
                    inside = True
                    out["begin"] = True
                elif b"@@tflight-invokes-end@@" in line:
                    inside = False
                    out["end"] = True
    except Exception as e:  # noqa: BLE001 - reported as a missing figure, not a crash
        out["error"] = f"{type(e).__name__}: {e}"
    out["instructions"] = total
    out["misses"] = misses


class _RangesMoved(Exception):
    def __init__(self, ranges: list):
        super().__init__("LiteRT was mapped at other addresses")
        self.ranges = ranges


def _traced_run(
    env: Arm64Environment, request: dict, ranges: list, *, timeout: float
) -> tuple[dict, float, int | None, int]:
    """One emulated run under qemu's tracer: (child result, wall s, instructions, unsized)."""
    with tempfile.TemporaryDirectory(prefix="tflight-trace-") as tmp:
        fifo = Path(tmp) / "trace.fifo"
        os.mkfifo(fifo)
        counted: dict = {}
        reader = threading.Thread(target=_count_trace, args=(fifo, counted), daemon=True)
        reader.start()
        dfilter = ",".join(f"0x{lo:x}..0x{hi - 1:x}" for lo, hi, *_ in ranges)
        try:
            traced, wall = _child_call(
                env,
                request,
                timeout=timeout,
                qemu_args=(
                    "-d", _TRACE_FLAGS, "-dfilter", dfilter, "-D", str(fifo),
                ),
            )
        finally:
            # Unblock the reader if qemu never opened the fifo.
            with contextlib.suppress(OSError):
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
                os.close(fd)
            reader.join(timeout=120)
    if "error" in traced:
        return traced, wall, None, 0
    if traced.get("litert_ranges") != ranges:
        raise _RangesMoved(traced.get("litert_ranges") or [])
    if "error" in counted or not (counted.get("begin") and counted.get("end")):
        raise DeviceError(
            f"could not read qemu's trace: {counted.get('error', 'the invoke markers are missing')}"
        )
    return traced, wall, int(counted["instructions"]), int(counted["misses"])


def _cached_ranges(env: Arm64Environment) -> list:
    try:
        return json.loads((env.site.parent / "litert_ranges.json").read_text())
    except (OSError, ValueError):
        return []


def _store_ranges(env: Arm64Environment, ranges: list) -> None:
    from converters.files import write_atomic

    # A cache: if it cannot be written, the next run learns the ranges again.
    with contextlib.suppress(OSError, DeviceError):
        write_atomic(env.site.parent / "litert_ranges.json", json.dumps(ranges).encode(),
                     error=DeviceError)


def run_on_arm64(
    request: dict,
    *,
    env: Arm64Environment | None = None,
    count_instructions: bool = True,
    extra_invokes: int = 4,
    timeout: float = 900.0,
    progress: Callable[[str], None] | None = None,
) -> EmulatedRun:
    """Runs one benchmark request of `tflight.bench.child` under the ARM64 emulator.

    Args:
      request: the child request (model path, runs, inputs ...); runs are
        counted exactly (no minimum time) so that the traced runs repeat.
      env: a ready environment; `setup_arm64(progress=progress)` by default.
      count_instructions: also count guest instructions per invoke (the run
        is made under qemu's tracer, a few times slower).
      extra_invokes: how many invokes are counted, after the timed ones.
      timeout: seconds allowed for each emulated process.
      progress: called with one line per step.

    Returns:
      An `EmulatedRun`.

    Raises:
      DeviceError: set-up failed, LiteRT crashed or timed out under emulation.
    """
    env = env if env is not None else setup_arm64(progress=progress)
    run = _run_on_arm64(env, request, count_instructions=count_instructions,
                        extra_invokes=extra_invokes, timeout=timeout, progress=progress)
    cpu = env.env()["QEMU_CPU"]
    return dataclasses.replace(run, emulator=f"{env.qemu_version}, -cpu {cpu}")


def _run_on_arm64(
    env: Arm64Environment,
    request: dict,
    *,
    count_instructions: bool,
    extra_invokes: int,
    timeout: float,
    progress: Callable[[str], None] | None,
) -> EmulatedRun:
    req = dict(
        request, min_time=0.0, warmup_min_time=0.0, max_time=0.0, threads=1, report_ranges=True
    )
    ranges = _cached_ranges(env) if count_instructions else []
    child = None
    if not ranges:
        # Learn where LiteRT's code is mapped: the same every run (no ASLR, no
        # helper threads) under the same qemu options. qemu's logging changes
        # its own allocations, which share the address space with the guest's,
        # so the learning run logs too, to /dev/null and for an empty range.
        _say(progress, "[arm64] running the model under emulation")
        learn = (
            ("-d", _TRACE_FLAGS, "-dfilter", "0x0..0xfff", "-D", os.devnull)
            if count_instructions
            else ()
        )
        child, wall = _child_call(env, req, timeout=timeout, qemu_args=learn)
        ranges = child.get("litert_ranges") or []
        if ranges and count_instructions:
            _store_ranges(env, ranges)
        if "error" in child or not count_instructions:
            return EmulatedRun(child, wall, None, "not counted")
        if not ranges:
            return EmulatedRun(
                child, wall, None, "not counted: LiteRT's address ranges are unknown"
            )
    _say(progress, "[arm64] running the model under emulation, counting guest instructions")
    counted = None
    for _attempt in range(3):
        try:
            counted = _traced_run(
                env, dict(req, extra_invokes=extra_invokes), ranges, timeout=timeout
            )
            break
        except _RangesMoved as moved:
            # Logging from a new guest thread makes qemu (which shares the
            # address space) reserve a malloc arena first: LiteRT then loads
            # elsewhere, at addresses that repeat from one traced run to the
            # next. Count again with the traced run's own addresses.
            ranges = moved.ranges
            _store_ranges(env, ranges)
    if counted is None:
        raise DeviceError(
            "LiteRT was mapped at other addresses in each traced run; instructions cannot be "
            "counted on this set-up (use --no-instructions)"
        )
    traced, wall, n, unsized = counted
    if n is None:
        return EmulatedRun(traced, wall, None, "not counted")
    note = (
        "guest AArch64 instructions executed in LiteRT's libraries per invoke "
        f"(qemu exec trace between markers around {extra_invokes} invokes; 1 thread; "
        "libc and kernel time excluded)"
    )
    if unsized:
        note += (
            f"; {unsized} executed block(s) could not be sized (their translation was not in "
            "the trace) and are not counted"
        )
    if n <= 0:
        return EmulatedRun(traced, wall, None, "not counted: no LiteRT code ran between markers",
                           unsized_blocks=unsized)
    return EmulatedRun(traced, wall, n / extra_invokes, note, unsized_blocks=unsized)


def compare_on_arm64(
    path: str,
    inputs_npz: str,
    host_outputs: list[np.ndarray],
    out_scales: list[float],
    cfg: BenchmarkConfig,
    progress: Callable[[str], None] | None,
    count_instructions: bool,
) -> DeviceReport:
    """Runs the benchmarked model under the emulator on the host's inputs; compares the outputs.

    The tolerance is one output quantization step for a quantized output,
    else 1e-4 of the largest float output (at least 1e-4): LiteRT's ARM and
    x86 kernels may round differently.
    """
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
        arm = read_outputs(Path(out_path))
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
