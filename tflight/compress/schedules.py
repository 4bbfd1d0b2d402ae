"""Pruning schedules: how sparsity grows during a fine-tune.

TF-MOT counts training steps from 1 (the first batch), so its default
`ConstantSparsity(begin_step=0, frequency=100)` first prunes at step 100 and a
short fine-tune silently ends at 0 % sparsity. Here `begin_step=0` means the
first batch, so `ConstantSparsity` reaches its target at once and re-selects
every `frequency` steps (cheap), and `PolynomialDecay` picks an update
frequency that always lands on `end_step`.

References:
  Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of pruning
  for model compression", 2017 (polynomial schedule).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tflight._keras import tfmot
from tflight.errors import CompressionError

__all__ = ["ConstantSparsity", "PolynomialDecay", "Schedule", "check_fraction"]


def check_fraction(name: str, value: float, *, low_open: bool = False) -> None:
    ok = isinstance(value, int | float) and (0.0 < value < 1.0 if low_open else 0.0 <= value < 1.0)
    if not ok:
        span = "(0, 1)" if low_open else "[0, 1)"
        raise CompressionError(
            f"`{name}` must be a fraction in {span}, got {value!r}.", option=name, kind="bad_argument"
        )


def _check_step(name: str, value: int, *, allow_negative: bool = False) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or (value < 0 and not allow_negative):
        raise CompressionError(f"`{name}` must be a non-negative int, got {value!r}.")


@dataclasses.dataclass(frozen=True)
class ConstantSparsity:
    """Prune to `target` from `begin_step` on, re-selecting every `frequency` steps.

    Args:
      target: fraction of weights set to zero, in (0, 1).
      begin_step: first training step that prunes; 0 (the default) and 1
        both mean the first batch, so any fine-tune reaches `target`.
      end_step: last step that updates the mask; -1 keeps updating.
      frequency: steps between later mask updates (re-selection of the
        smallest weights). Each update sorts the weights, so updating every
        step makes training several times slower.
    """

    target: float
    begin_step: int = 0
    end_step: int = -1
    frequency: int = 100

    def __post_init__(self) -> None:
        check_fraction("target", self.target, low_open=True)
        _check_step("begin_step", self.begin_step)
        _check_step("end_step", self.end_step, allow_negative=True)
        _check_step("frequency", self.frequency)
        if self.frequency < 1:
            raise CompressionError(f"`frequency` must be >= 1, got {self.frequency}.")
        if 0 <= self.end_step < self.begin_step:
            raise CompressionError(
                f"`end_step` ({self.end_step}) must be >= `begin_step` ({self.begin_step}) or -1."
            )

    @property
    def final(self) -> float:
        return self.target

    def _tfmot(self) -> Any:
        # TF-MOT's first training step is 1: a begin_step of 0 would never fire.
        return tfmot().sparsity.keras.ConstantSparsity(
            self.target, max(self.begin_step, 1), end_step=self.end_step, frequency=self.frequency
        )


@dataclasses.dataclass(frozen=True)
class PolynomialDecay:
    """Ramp sparsity from `initial` to `final` between `begin_step` and `end_step`.

    Sparsity follows `final + (initial - final) * (1 - t) ** power` with
    `t = (step - begin_step) / (end_step - begin_step)`: fast at first, gentle
    at the end, giving the network time to recover.

    Args:
      final: sparsity reached at `end_step`, in (0, 1).
      end_step: step at which `final` is reached; fine-tune at least this long.
      initial: sparsity at `begin_step`, in [0, final).
      begin_step: first pruning step.
      power: exponent of the ramp (3 in Zhu & Gupta).
      frequency: steps between mask updates; `None` picks the divisor of the
        ramp length closest to a tenth of it, so an update lands on `end_step`.
    """

    final: float
    end_step: int
    initial: float = 0.0
    begin_step: int = 0
    power: float = 3.0
    frequency: int | None = None

    def __post_init__(self) -> None:
        check_fraction("final", self.final, low_open=True)
        check_fraction("initial", self.initial)
        _check_step("begin_step", self.begin_step)
        _check_step("end_step", self.end_step)
        if self.initial >= self.final:
            raise CompressionError(
                f"`initial` ({self.initial}) must be below `final` ({self.final})."
            )
        if self.end_step <= self.begin_step:
            raise CompressionError(
                f"`end_step` ({self.end_step}) must be after `begin_step` ({self.begin_step}); "
                "set it to the number of fine-tuning steps (epochs * steps per epoch)."
            )
        if self.frequency is not None:
            _check_step("frequency", self.frequency)
            if self.frequency < 1:
                raise CompressionError(f"`frequency` must be >= 1, got {self.frequency}.")
            if (self.end_step - self.begin_step) % self.frequency:
                raise CompressionError(
                    f"`frequency` ({self.frequency}) must divide end_step - begin_step "
                    f"({self.end_step - self.begin_step}), or the last update misses end_step "
                    "and the model never reaches `final`. Leave it None to choose one."
                )

    @property
    def update_every(self) -> int:
        if self.frequency is not None:
            return self.frequency
        span = self.end_step - self.begin_step
        divisors = [d for d in range(1, span + 1) if span % d == 0]
        return min(divisors, key=lambda d: (abs(d - span / 10), d))

    def _tfmot(self) -> Any:
        return tfmot().sparsity.keras.PolynomialDecay(
            self.initial,
            self.final,
            self.begin_step,
            self.end_step,
            power=self.power,
            frequency=self.update_every,
        )


Schedule = ConstantSparsity | PolynomialDecay

