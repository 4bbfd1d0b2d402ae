"""`ConversionResult`: a converted model and what is known about it.

The flatbuffer, its op and tensor statistics, how it fits the target and how
it compared with the source model; `save` writes it atomically, `load` runs
it in LiteRT, `summary` and `to_dict` render it.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import os
from pathlib import Path
from typing import Any

from converters.analysis import ModelStats
from converters.files import write_atomic
from converters.modes import Mode, Target
from converters.runtime import TFLiteModel
from converters.targets import TargetReport
from converters.validate import ValidationReport

__all__ = ["ConversionResult"]


@dataclasses.dataclass(frozen=True)
class ConversionResult:
    """A converted model and what is known about it.

    Attributes:
      mode: the conversion mode.
      target: the deployment target it was checked for.
      flatbuffer: the `.tflite` bytes.
      stats: ops by type and dtype, quantized tensors, inputs/outputs, sizes.
      validation: the comparison with the source model, or None if skipped.
      target_report: how the model fits the target.
      input_dtype: dtype of the model inputs in the flatbuffer.
      output_dtype: dtype of the model outputs in the flatbuffer.
      sparse: whether TFLite's sparse weight storage was requested.
      seconds: time spent converting this mode (for the first mode of a
        `convert_many` call, including the shared trace and freeze).
    """

    mode: Mode
    target: Target
    flatbuffer: bytes = dataclasses.field(repr=False)
    stats: ModelStats = dataclasses.field(repr=False)
    validation: ValidationReport | None
    target_report: TargetReport | None
    input_dtype: str
    output_dtype: str
    sparse: bool
    seconds: float

    @property
    def size(self) -> int:
        """Bytes of the flatbuffer."""
        return len(self.flatbuffer)

    @functools.cached_property
    def gzip_size(self) -> int:
        """Bytes of the flatbuffer after gzip at level 9 (what a download costs)."""
        return len(gzip.compress(self.flatbuffer, compresslevel=9, mtime=0))

    @property
    def ops(self) -> dict[str, int]:
        """Operator counts by type."""
        return self.stats.ops

    @property
    def op_dtypes(self) -> dict[str, dict[str, int]]:
        """Operator counts by type and the dtype each computes in."""
        return self.stats.op_dtypes

    @property
    def quantized_tensors(self) -> tuple[str, ...]:
        """Names of the tensors that carry quantization parameters."""
        return self.stats.quantized_tensors

    def save(self, path: str | os.PathLike) -> Path:
        """Writes the flatbuffer to `path` atomically; returns the path.

        For the `edgetpu` target, when `edgetpu_compiler` ran, its output is
        written too, next to `path` as `<stem>_edgetpu.tflite` (see
        `compiled_path`).
        """
        path = write_atomic(path, self.flatbuffer)
        compiled = None if self.target_report is None else self.target_report.compiled
        if compiled is not None:
            write_atomic(self.compiled_path(path), compiled)
        return path

    @staticmethod
    def compiled_path(path: str | os.PathLike) -> Path:
        """Where `save(path)` writes the Edge TPU compiler's output."""
        path = Path(path)
        return path.with_name(f"{path.stem}_edgetpu.tflite")

    def load(self, *, num_threads: int | None = None) -> TFLiteModel:
        """The flatbuffer loaded in LiteRT."""
        return TFLiteModel(self.flatbuffer, num_threads=num_threads, _trusted=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode.value,
            "target": self.target.value,
            "size": self.size,
            "gzip_size": self.gzip_size,
            "input_dtype": self.input_dtype,
            "output_dtype": self.output_dtype,
            "sparse": self.sparse,
            "seconds": round(self.seconds, 3),
            "stats": self.stats.to_dict(),
            "validation": None if self.validation is None else self.validation.to_dict(),
            "target_report": None if self.target_report is None else self.target_report.to_dict(),
        }

    def summary(self, print_fn: Any = None) -> str:
        """A few lines on size, ops, target fit and validation; printed if `print_fn`."""
        quant = len(self.quantized_tensors)
        lines = [
            f"{self.mode.value} for {self.target.value}: {self.size:,} bytes "
            f"({self.gzip_size:,} gzipped), {sum(self.ops.values())} ops, "
            f"{quant}/{self.stats.tensor_count} tensors quantized, "
            f"I/O {self.input_dtype}/{self.output_dtype}",
            "  ops: "
            + ", ".join(
                f"{op} x{n} ({'/'.join(sorted(self.op_dtypes.get(op, {})))})"
                for op, n in self.ops.items()
            ),
        ]
        if self.target_report is not None:
            lines.append(f"  target {self.target.value}: {self.target_report.short()}")
            lines.extend(f"    - {x}" for x in self.target_report.issues)
            lines.extend(f"    * {x}" for x in self.target_report.notes)
        if self.validation is None:
            lines.append("  validation: skipped")
        else:
            lines.append(f"  validation: {self.validation.short()}")
        text = "\n".join(lines)
        if print_fn is not None:
            print_fn(text)
        return text
