"""Benchmark history files and plots: what `tflight bench --history/--plot` writes.

Kept apart from measuring (`tflight.benchmark`): these functions only read
and write files from `BenchmarkResult` objects.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
from collections.abc import Sequence
from pathlib import Path

from converters.files import write_atomic
from tflight.bench.results import BenchmarkResult
from tflight.errors import BenchmarkError

__all__ = ["append_history", "read_history", "history_changes", "plot_latency_vs_size"]


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
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format=out.suffix.lower().lstrip("."))
    finally:
        plt.close(fig)
    return write_atomic(out, buffer.getvalue(), error=BenchmarkError)


def history_changes(
    results: Sequence[BenchmarkResult], previous: Sequence[dict], path: str | os.PathLike
) -> list[str]:
    """One line per result: its median against the last entry of the same file and config."""
    out = []
    for r in results:
        same = [
            h for h in previous
            if h.get("sha256") == r.sha256 and h.get("config") == r.config.to_dict()
        ]
        if same:
            before = same[-1]["latency"]["median_ms"]
            change = r.latency.median_ms / before - 1
            out.append(
                f"history {r.model}: median {before:.4f} -> {r.latency.median_ms:.4f} ms "
                f"({change:+.1%}) vs {same[-1]['timestamp']}"
            )
        else:
            out.append(f"history {r.model}: first entry in {path}")
    return out
