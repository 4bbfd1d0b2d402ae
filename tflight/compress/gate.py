"""The accuracy gate: a result much worse than its input is never reported as success.

Every single tool that trains or rewrites a model (`compress`, `distill`,
`shrink`) measures the original's and the result's top-1 accuracy on the same
held-out data and compares the drop, in percentage points, with the user's
budget (`max_drop`). `check_drop` returns the figures as an `AccuracyCheck`;
past the budget it raises the caller's `TflightError` with
`kind="budget_missed"`, `option="max_drop"` and the figures as fields
(`original`, `accuracy`, `drop`, `max_drop`, `samples`, `advice`), so a front
end can print them in its own words.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from tflight.errors import TflightError

__all__ = [
    "DEFAULT_MAX_DROP",
    "AccuracyCheck",
    "check_drop",
    "check_max_drop",
    "compare_models",
    "top1_accuracy",
]

DEFAULT_MAX_DROP = 1.0
"""The accuracy the single tools may lose by default, in percentage points."""


@dataclasses.dataclass(frozen=True)
class AccuracyCheck:
    """The original's and the result's accuracy on the same held-out data.

    Attributes:
      original: top-1 accuracy of the original (or teacher) model, in [0, 1].
      accuracy: top-1 accuracy of the result on the same samples, in [0, 1].
      samples: how many held-out samples both were measured on.
      max_drop: the budget in percentage points, or None (not checked).
      reference: what `original` was measured on ("original model", "teacher").
      result: what `accuracy` was measured on ("LiteRT .tflite", "student").
    """

    original: float
    accuracy: float
    samples: int
    max_drop: float | None
    reference: str = "original model"
    result: str = "result"

    @property
    def drop(self) -> float:
        """Accuracy lost, in percentage points (negative: the result is better)."""
        return (self.original - self.accuracy) * 100.0

    @property
    def met(self) -> bool:
        """True when no budget was set or the drop is within it."""
        # A small tolerance: the figures are ratios of sample counts.
        return self.max_drop is None or self.drop <= self.max_drop + 1e-9

    @property
    def resolution(self) -> float:
        """The smallest change the held-out set can show: one sample, in points."""
        return 100.0 / self.samples if self.samples else math.inf

    def lines(self) -> list[str]:
        """The figures as text lines (measured on the held-out samples)."""
        out = [
            f"accuracy on {self.samples} held-out samples (measured): {self.reference} "
            f"{self.original:.2%}, {self.result} {self.accuracy:.2%} "
            f"(drop {self.drop:+.1f} pt"
            + (f", budget {self.max_drop:.1f} pt)" if self.max_drop is not None else ")")
        ]
        if self.max_drop is not None and self.resolution > self.max_drop:
            out.append(
                f"note: one of {self.samples} held-out samples is {self.resolution:.1f} pt, "
                f"coarser than the {self.max_drop:.1f} pt budget: the check can only pass "
                "with no sample lost; more held-out data makes it finer."
            )
        return out

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints `lines()`."""
        for line in self.lines():
            print_fn(line)


def check_max_drop(max_drop: float | None, *, error: type[TflightError] = TflightError) -> None:
    """Raises `error` unless `max_drop` is None or a non-negative number of points."""
    if max_drop is None:
        return
    if (
        isinstance(max_drop, bool)
        or not isinstance(max_drop, int | float)
        or not math.isfinite(max_drop)
        or max_drop < 0
    ):
        raise error(
            f"`max_drop` must be a non-negative number of accuracy points (e.g. 1.0), got "
            f"{max_drop!r}.",
            option="max_drop",
            fix="max_drop=1.0 (points of top-1 accuracy the result may lose), or None",
            kind="bad_argument",
        )


def top1_accuracy(model: Any, x: Any, y: Any) -> float:
    """Top-1 accuracy of a Keras model on `x` (an array or a list of arrays) with class ids `y`."""
    pred = np.asarray(model.predict(x, verbose=0))
    labels = np.asarray(y)
    if labels.ndim == 2 and labels.shape[-1] > 1:  # one-hot
        labels = labels.argmax(-1)
    return float(np.mean(pred.reshape(len(pred), -1).argmax(-1) == labels.reshape(-1)))


def check_drop(
    original: float,
    accuracy: float,
    samples: int,
    *,
    max_drop: float | None,
    error: type[TflightError] = TflightError,
    advice: Sequence[str] = (),
    fix: str | None = None,
    reference: str = "original model",
    result: str = "result",
    payload: Any = None,
) -> AccuracyCheck:
    """Compares the result's accuracy with the original's; raises past the budget.

    Args:
      original: top-1 accuracy of the original model on the held-out samples.
      accuracy: top-1 accuracy of the result on the same samples.
      samples: the number of held-out samples.
      max_drop: the budget in percentage points; None only measures.
      error: the `TflightError` class to raise.
      advice: the arguments worth changing, in order (e.g. `("epochs",
        "sparsity")`), set on the error as `advice` for a front end to name.
      fix: what to try, in the library's words.
      reference: what the original is (for the message), e.g. "teacher".
      result: what the result is (for the message), e.g. "LiteRT .tflite".
      payload: the result object, set on the error as `result`, so that a
        caller may still keep it (e.g. `--keep-failed`).

    Returns:
      The `AccuracyCheck` (its `met` is True when this returns).

    Raises:
      TflightError (`error`): the drop is larger than `max_drop`, with
        `kind="budget_missed"`, `option="max_drop"` and the figures as fields.
    """
    check_max_drop(max_drop, error=error)
    check = AccuracyCheck(
        original=float(original),
        accuracy=float(accuracy),
        samples=int(samples),
        max_drop=max_drop,
        reference=reference,
        result=result,
    )
    if check.met:
        return check
    raise error(
        f"The {result} loses {check.drop:.1f} accuracy points on {check.samples} held-out "
        f"samples ({check.accuracy:.2%} vs the {reference}'s {check.original:.2%}), more than "
        f"the budget of max_drop={max_drop:g}; the result does not meet it."
        + (f" Try {fix}." if fix else ""),
        option="max_drop",
        fix=fix,
        kind="budget_missed",
        original=check.original,
        accuracy=check.accuracy,
        drop=check.drop,
        max_drop=max_drop,
        samples=check.samples,
        advice=tuple(advice),
        check=check,
        result=payload,
    )


def compare_models(
    reference: Any,
    model: Any,
    x: Any,
    y: Any,
    *,
    max_drop: float | None,
    error: type[TflightError] = TflightError,
    advice: Sequence[str] = (),
    fix: str | None = None,
    reference_name: str = "original model",
    result_name: str = "result",
    payload: Any = None,
) -> AccuracyCheck:
    """Measures two Keras models on the same held-out data and checks the drop.

    Args:
      reference: the original (or teacher) model.
      model: the result (shrunk, distilled, ...).
      x: held-out inputs; y: their class ids (or one-hot labels).
      max_drop, error, advice, fix, payload: as for `check_drop`.
      reference_name: what `reference` is, for the message.
      result_name: what `model` is, for the message.

    Returns:
      The `AccuracyCheck` (measured).

    Raises:
      TflightError (`error`): the drop is larger than `max_drop`
        (`kind="budget_missed"`).
    """
    check_max_drop(max_drop, error=error)
    return check_drop(
        top1_accuracy(reference, x, y),
        top1_accuracy(model, x, y),
        len(x[0]) if isinstance(x, list) else len(x),
        max_drop=max_drop,
        error=error,
        advice=advice,
        fix=fix,
        reference=reference_name,
        result=result_name,
        payload=payload,
    )
