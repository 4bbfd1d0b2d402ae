"""Measuring a prefill/decode `.tflite` LM: prefill and decode tokens/s, time to first token, memory.

The measurement runs in a child process (`python -m tflight.lm._bench_child`),
so that a file LiteRT crashes on cannot take the caller down, and so that the
child's peak resident memory (`ru_maxrss`) is the model's and the runtime's,
not the caller's TensorFlow. Rounds are repeated and the medians reported.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

from tflight.errors import BenchmarkError

__all__ = ["LMBenchmarkResult", "benchmark_lm", "is_lm_file", "render_cli"]

_PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@dataclasses.dataclass(frozen=True)
class LMBenchmarkResult:
    """Speed and memory of one LM file (measured on this host, CPU, XNNPACK).

    Attributes:
      path: the file.
      prompt_tokens: prompt length.
      new_tokens: tokens generated per round.
      prefill_tokens_per_second: median over rounds.
      decode_tokens_per_second: median over rounds.
      time_to_first_token_ms: median prefill time (the prompt to the first token).
      peak_memory_mb: peak resident memory of the measuring process.
      file_bytes: file size.
      rounds: rounds run.
      threads: interpreter threads.
      device: "host" (measured) or "arm64" (emulated: qemu wall time).
    """

    path: str
    prompt_tokens: int
    new_tokens: int
    prefill_tokens_per_second: float
    decode_tokens_per_second: float
    time_to_first_token_ms: float
    peak_memory_mb: float
    file_bytes: int
    rounds: int
    threads: int
    device: str = "host"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        return (f"{os.path.basename(self.path)}: prefill {self.prefill_tokens_per_second:,.0f} "
                f"tokens/s ({self.prompt_tokens} tokens), decode "
                f"{self.decode_tokens_per_second:,.1f} tokens/s ({self.new_tokens} tokens), "
                f"time to first token {self.time_to_first_token_ms:.2f} ms, peak memory "
                f"{self.peak_memory_mb:.0f} MB, {self.file_bytes:,} bytes "
                f"({'measured, this host' if self.device == 'host' else 'emulated ARM64, qemu wall time'}"
                f", {self.threads} threads, median of {self.rounds})")


def is_lm_file(path: str | os.PathLike) -> bool:
    """Whether `path` is a `.tflite` with `decode` and `prefill_<L>` signatures.

    Reads the signature names with the flatbuffer reader (pure Python), not with
    LiteRT, so that a malformed file cannot crash the caller here.
    """
    from converters.flatbuffer import parse, text

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if head[4:8] != b"TFL3":
                return False
            m = parse(head + f.read())
        names = {text(s.signatureKey) for s in m.signatureDefs or []}
    except Exception:  # noqa: BLE001 - anything unreadable is not an LM file; bench says why
        return False
    return "decode" in names and any(n.startswith("prefill_") for n in names)


def benchmark_lm(
    path: str | os.PathLike,
    *,
    prompt_tokens: int | None = None,
    new_tokens: int | None = None,
    rounds: int = 3,
    threads: int = 2,
    device: str = "host",
    timeout: float = 900.0,
) -> LMBenchmarkResult:
    """Measures prefill and decode speed of an LM file in a child process.

    Args:
      path: a `.tflite` written by `convert_lm`.
      prompt_tokens: prompt length (random byte ids, fixed seed) [default:
        min(32, max_length / 4)].
      new_tokens: tokens generated per round (greedy) [default: min(128, what
        fits the cache after the prompt)].
      rounds: rounds; medians are reported.
      threads: interpreter threads.
      device: "host", or "arm64": the same child under the emulated ARM64
        device of `tflight.setup_arm64` (AArch64 LiteRT under qemu; its speeds
        are emulator wall time, not phone time, and its peak memory includes
        qemu's own).
      timeout: seconds before the child is killed.

    Returns:
      An `LMBenchmarkResult`.

    Raises:
      BenchmarkError: the file is not an LM file, does not fit the lengths, or
        the child crashed.
    """
    from converters import _child

    request = {"path": os.path.abspath(path), "prompt_tokens": prompt_tokens,
               "new_tokens": new_tokens, "rounds": rounds, "threads": threads}
    if device == "host":
        argv = _child.python_command("-m", "tflight.lm._bench_child")
        env = _child.child_env(project_path=True)
    elif device == "arm64":
        from tflight.bench import setup_arm64

        emulator = setup_arm64()
        argv = emulator.command("-m", "tflight.lm._bench_child")
        env = emulator.env()
        # The child needs only numpy and LiteRT (the emulator's) and this
        # project's pure-Python modules.
        env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], _PROJECT_ROOT])
    else:
        raise BenchmarkError(f"device must be 'host' or 'arm64', got {device!r}")
    try:
        run = _child.run_child(argv, request=request, env=env, timeout=timeout,
                               name="tflight-lm-bench")
    except _child.ChildFailed as e:
        raise BenchmarkError(e.message) from None
    except (_child.ChildCrashed, _child.ChildTimeout) as e:
        raise BenchmarkError(f"the LM benchmark process {e}") from None
    r = run.reply
    return LMBenchmarkResult(path=os.fspath(path), file_bytes=os.path.getsize(path),
                             device=device, **r)


def render_cli(models: Sequence[str], *, threads: int, device: str, as_json: bool,
               print_fn: Callable[[str], None]) -> None:
    """`tflight bench` on LM files: one line each (or JSON), decode speed relative to the first."""
    results = [benchmark_lm(m, threads=threads, device=device) for m in models]
    if as_json:
        print_fn(json.dumps([r.as_dict() for r in results], indent=2))
        return
    base = results[0].decode_tokens_per_second
    for r in results:
        ratio = r.decode_tokens_per_second / base if base > 0 else float("nan")
        print_fn(r.summary() + (f"; decode {ratio:.2f}x the first" if len(results) > 1 else ""))
