"""What one technique did to each layer: wrapped, kept float, skipped, and why.

Every technique attaches a `CompressionReport` to the model it returns (and its
strip keeps it), so nothing is silently left float or dense.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

__all__ = [
    "CompressionReport",
    "attach_report",
    "compression_report",
]

_REPORT_ATTR = "_tflight_compression_report"


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """Which layers one technique wrapped, and which it left alone and why.

    Every layer with weights (and, for QAT, every layer) that the technique did
    not wrap is listed with its reason: nothing is silently left float or dense.

    Attributes:
      technique: `"prune"`, `"cluster"` or `"qat"`.
      wrapped: names of the layers wrapped (pruned, clustered, quantized).
      kept_float: `(layer, reason)` pairs QAT left in float.
      skipped: `(layer, reason)` pairs of layers with weights left as they were
        (dense / unclustered) by pruning or clustering.
      inlined: nested models replaced by their layers so the technique could
        reach them.
      rezeroed: `(layer, re-zeroed, pruned)` per pruned layer in a stage after
        `Prune`: how many pruned weights this stage refilled and the pipeline
        set back to zero (`tflight.compress.masks`), counted before the repair.
      frozen: layers that were not trained (`trainable=False` on them or on an
        enclosing model). Prune and Cluster skip frozen layers (changing
        weights that may not train would break the frozen model); QAT wraps
        them (an int8 model quantizes every layer) but leaves their weights
        untrained.
    """

    technique: str
    wrapped: tuple[str, ...]
    kept_float: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    inlined: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    rezeroed: tuple[tuple[str, int, int], ...] = ()

    def lines(self) -> list[str]:
        """The report as text lines (what `summary` prints)."""
        out = [f"{self.technique}: {len(self.wrapped)} layer(s) wrapped"]
        for layer, refilled, pruned in self.rezeroed:
            out.append(
                f"  re-zeroed after training: {layer}, {refilled} of its {pruned} pruned "
                "weights (this stage refilled them; pruning's zeros were put back)"
            )
        if self.inlined:
            out.append(f"  nested models inlined: {', '.join(self.inlined)}")
        if self.frozen:
            out.append(f"  frozen (weights not trained): {len(self.frozen)} layer(s)")
        for title, rows in (("kept float", self.kept_float), ("skipped", self.skipped)):
            for reason, names in _group(rows).items():
                out.append(f"  {title} ({reason}): {', '.join(names)}")
        return out

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints what was wrapped, kept float and skipped, grouped by reason."""
        for line in self.lines():
            print_fn(line)


def _group(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, reason in rows:
        grouped.setdefault(reason, []).append(name)
    return grouped


def attach_report(model: Any, rep: CompressionReport) -> None:
    # object.__setattr__: Keras' __setattr__ would try to track the dataclass.
    object.__setattr__(model, _REPORT_ATTR, rep)


def compression_report(model: Any) -> CompressionReport | None:
    """The `CompressionReport` of a model returned by a technique (or its strip).

    Args:
      model: a model returned by `prune`, `quantize`, `cluster`, a strip
        function, or `PipelineResult.model`.

    Returns:
      The report of the last technique applied, or None for other models.
    """
    return getattr(model, _REPORT_ATTR, None)

