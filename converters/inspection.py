"""Describing an existing `.tflite` file: inputs, outputs, ops, sizes, GPU fit."""

from __future__ import annotations

import dataclasses
import gzip
import os
from typing import Any

from converters.analysis import ModelStats, analyze_flatbuffer
from converters.targets import gpu_compatibility
from converters.verify import verify_tflite

__all__ = ["InspectReport", "inspect"]


@dataclasses.dataclass(frozen=True)
class InspectReport:
    """What a `.tflite` file holds.

    Attributes:
      source: the path inspected, or `"<bytes>"`.
      stats: inputs/outputs (shapes, dtypes, quantization), ops by type and
        dtype, quantized tensors, and the size split into weights and graph.
      gzip_size: bytes after gzip at level 9.
      gpu_compatible: whether LiteRT's analyzer finds every op GPU-delegate
        compatible.
      gpu_issues: the analyzer's warnings.
      load_error: why LiteRT cannot run the model here, or None.
    """

    source: str
    stats: ModelStats
    gzip_size: int
    gpu_compatible: bool
    gpu_issues: tuple[str, ...]
    load_error: str | None

    @property
    def size(self) -> int:
        return self.stats.size

    def to_dict(self) -> dict[str, Any]:
        d = {"source": self.source, **self.stats.to_dict()}
        d.update(
            gzip_size=self.gzip_size,
            gpu_compatible=self.gpu_compatible,
            gpu_issues=list(self.gpu_issues),
            load_error=self.load_error,
        )
        return d

    def summary(self, print_fn: Any = None) -> str:
        """A human-readable description; printed if `print_fn` is given."""
        s = self.stats
        lines = [f"{self.source}: {s.size:,} bytes ({self.gzip_size:,} gzipped)"]
        weights_pct = 100.0 * s.weights_bytes / s.size if s.size else 0.0
        lines.append(
            f"  size: weights {s.weights_bytes:,} bytes ({weights_pct:.1f}%), "
            f"graph {s.graph_bytes:,} bytes"
        )
        for title, tensors in (("inputs", s.inputs), ("outputs", s.outputs)):
            lines.append(f"  {title}:")
            for t in tensors:
                shape = list(t.shape_signature)
                q = ""
                if t.quantized:
                    if len(t.scales) == 1:
                        q = f", scale {t.scales[0]:.6g}, zero point {t.zero_points[0]}"
                    else:
                        q = f", per-channel ({len(t.scales)} scales, axis {t.quantized_dimension})"
                lines.append(f"    {t.name}: {shape} {t.dtype}{q}")
        lines.append(
            f"  ops ({sum(s.ops.values())}, {len(s.quantized_tensors)}/{s.tensor_count} "
            "tensors quantized):"
        )
        width = max((len(op) for op in s.ops), default=0)
        for op, n in s.ops.items():
            by = ", ".join(f"{d} {c}" for d, c in sorted(s.op_dtypes.get(op, {}).items()))
            lines.append(f"    {op:<{width}}  {n:>4}  ({by})")
        lines.append(f"  GPU delegate: {'compatible' if self.gpu_compatible else 'not compatible'}")
        lines.extend(f"    - {x}" for x in self.gpu_issues)
        if self.load_error:
            lines.append(f"  LiteRT cannot run it here: {self.load_error}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text


def inspect(path_or_bytes: str | os.PathLike | bytes | bytearray) -> InspectReport:
    """Describes a `.tflite` file after verifying it safely.

    Args:
      path_or_bytes: a path to a `.tflite` file or its bytes.

    Returns:
      An `InspectReport`.

    Raises:
      InvalidTFLiteError: the input is missing or not a well-formed `.tflite` model.

    Example:
      >>> inspect("model.tflite").summary(print_fn=print)
    """
    verified = verify_tflite(path_or_bytes)
    stats = analyze_flatbuffer(verified.content)
    if verified.gpu_analysis is None:
        ok, issues = False, ["the GPU compatibility analyzer is unavailable"]
    else:
        ok, issues = gpu_compatibility(verified.content, verified.gpu_analysis)
    custom = [op for op in stats.ops if op.startswith("CUSTOM")]
    if custom:
        ok = False
        issues.append(f"custom ops run on the CPU: {', '.join(custom)}")
    return InspectReport(
        source=verified.source,
        stats=stats,
        gzip_size=len(gzip.compress(verified.content, compresslevel=9, mtime=0)),
        gpu_compatible=ok,
        gpu_issues=tuple(issues),
        load_error=verified.load_error,
    )
