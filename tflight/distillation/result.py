"""What `distill` returns: the trained student and how training went (`DistillationResult`)."""

from __future__ import annotations

import dataclasses
from typing import Any

__all__ = ["DistillationResult"]


@dataclasses.dataclass(frozen=True)
class DistillationResult:
    """What `distill` returns: the trained student and how training went.

    Attributes:
      student: the trained student (the same object that was passed in).
      history: per-epoch metrics (`loss`, each loss term, `accuracy`, and the
        same with a `val_` prefix when validation data was given).
      epochs: epochs trained.
      seconds: wall time of training.
      cache_seconds: time spent computing the teacher cache (0 if not cached).
      cached: whether teacher outputs were cached.
      samples: training examples (None if unknown).
      validation_samples: examples of the validation data, or None.
    """

    student: Any
    history: dict[str, list[float]]
    epochs: int
    seconds: float
    cache_seconds: float
    cached: bool
    samples: int | None = None
    validation_samples: int | None = None

    def summary(self, print_fn=print) -> None:
        """Prints a short report of the run, naming the data each figure comes from."""
        print_fn(
            f"Distilled {self.student.name!r} for {self.epochs} epoch(s) in {self.seconds:.1f} s"
            + (f" (teacher cached in {self.cache_seconds:.1f} s)" if self.cached else "")
        )
        last = {k: v[-1] for k, v in self.history.items() if v}
        train = {k: v for k, v in last.items() if not k.startswith("val_")}
        held = {k[4:]: v for k, v in last.items() if k.startswith("val_")}
        n = f"{self.samples} " if self.samples is not None else ""
        print_fn(f"  on the {n}training examples (last epoch, not held out):")
        for key, value in train.items():
            print_fn(f"    {key:<18} {value:.4f}")
        if held:
            m = f"{self.validation_samples} " if self.validation_samples is not None else ""
            print_fn(f"  on the {m}validation examples (not trained on):")
            for key, value in held.items():
                print_fn(f"    {key:<18} {value:.4f}")
