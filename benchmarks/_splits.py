"""Train / validation / test splits whose test part opens only after a setting is chosen.

A benchmark that picks a setting (a distillation schedule, a temperature, a
ratio) and then reports a figure must not let the test split take part in the
choice, or the figure is better than the evidence. `Splits.select` hands the
scoring code the train and validation splits only; the test split stays sealed
(reading it raises `TestSplitSealed`) until `select` has returned, and it is
then read through the returned `Selection`, once per benchmark run. A
benchmark whose setting is a speed setting (e.g. channel rounding) uses the
same `select` with a scorer that times separate selection models or rounds.

Example:
  >>> splits = digits_splits(seed=0)
  >>> sel = splits.select([0.1, 0.5], lambda alpha, train, val: score(alpha, train, val))
  >>> x_test, y_test = sel.test       # only now
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

__all__ = ["Selection", "Splits", "TestSplitSealed", "choose", "digits_splits"]


class TestSplitSealed(RuntimeError):
    """The test split was read before the benchmark finished choosing its settings."""

    __test__ = False  # not a pytest test class


class _SealedArrays:
    """Arrays that raise on every read until `_open()` is called."""

    __slots__ = ("_arrays", "_opened")

    def __init__(self, *arrays: np.ndarray):
        self._arrays = arrays
        self._opened = False

    def _open(self) -> None:
        self._opened = True

    def read(self) -> tuple[np.ndarray, ...]:
        if not self._opened:
            raise TestSplitSealed(
                "the test split is sealed until Splits.select() has chosen the settings; "
                "score candidates on the validation split"
            )
        return self._arrays

    def __len__(self) -> int:  # the size is not a leak, and reports name it
        return len(self._arrays[0])


@dataclasses.dataclass(frozen=True)
class Selection:
    """The outcome of `Splits.select`.

    Attributes:
      choice: the candidate with the best validation score.
      scores: `(candidate, validation score)` for every candidate, in order.
      rule: how the choice was made, for the report.
    """

    choice: Any
    scores: tuple[tuple[Any, float], ...]
    rule: str
    _test: _SealedArrays = dataclasses.field(repr=False)

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """`(x_test, y_test)`, readable now that the choice is made."""
        return self._test.read()

    def to_dict(self) -> dict:
        return {
            "choice": _jsonable(self.choice),
            "validation_scores": [[_jsonable(c), float(s)] for c, s in self.scores],
            "rule": self.rule,
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    return value


class Splits:
    """Train, validation and a sealed test split.

    Args:
      train: `(x, y)` to fit on.
      validation: `(x, y)` to choose settings on.
      test: `(x, y)` for the final report only.
    """

    def __init__(self, train, validation, test):
        self.train = tuple(train)
        self.validation = tuple(validation)
        self._test = _SealedArrays(*test)
        self._selection: Selection | None = None

    @property
    def test(self) -> tuple[np.ndarray, np.ndarray]:
        """The test split; raises `TestSplitSealed` before `select` has returned."""
        return self._test.read()

    @property
    def test_size(self) -> int:
        return len(self._test)

    def select(
        self,
        candidates: Iterable[Any],
        score: Callable[[Any, tuple, tuple], float],
        *,
        maximize: bool = True,
        rule: str | None = None,
    ) -> Selection:
        """Scores each candidate on train/validation only and unseals the test split.

        Args:
          candidates: the settings to choose among.
          score: `score(candidate, train, validation) -> float`; it cannot read
            the test split (it is sealed while this runs).
          maximize: True if a higher score is better.
          rule: a sentence for the report (default: "best validation score").

        Returns:
          A `Selection`; its `test` property gives the test split.

        Raises:
          RuntimeError: `select` was called a second time (the test split is
            reported once).
        """
        if self._selection is not None:
            raise RuntimeError("settings were already chosen on these splits; the test split "
                               "is reported once")
        candidates = list(candidates)
        if not candidates:
            raise ValueError("`candidates` is empty")
        scores = tuple((c, float(score(c, self.train, self.validation))) for c in candidates)
        pick = (max if maximize else min)(range(len(scores)), key=lambda i: scores[i][1])
        self._test._open()
        self._selection = Selection(
            choice=scores[pick][0],
            scores=scores,
            rule=rule or f"{'highest' if maximize else 'lowest'} validation score",
            _test=self._test,
        )
        return self._selection


def digits_splits(*, seed: int = 0, validation_fraction: float = 0.2) -> Splits:
    """scikit-learn's digits: the usual 450 test digits sealed, the rest split train/validation.

    The test split is exactly `tflight.load_digits(seed=seed)`'s; the
    validation split is a stratified `validation_fraction` of its training
    split, so the training set is smaller than `load_digits` gives.
    """
    import tflight

    data = tflight.load_digits(seed=seed)
    rng = np.random.default_rng(seed + 1_000)
    train_idx, val_idx = [], []
    for label in np.unique(data.y_train):
        idx = rng.permutation(np.flatnonzero(data.y_train == label))
        n_val = int(round(len(idx) * validation_fraction))
        val_idx.append(idx[:n_val])
        train_idx.append(idx[n_val:])
    tr = rng.permutation(np.concatenate(train_idx))
    va = rng.permutation(np.concatenate(val_idx))
    return Splits(
        (data.x_train[tr], data.y_train[tr]),
        (data.x_train[va], data.y_train[va]),
        (data.x_test, data.y_test),
    )


def choose(
    candidates: Iterable[Any],
    score: Callable[[Any], float],
    *,
    maximize: bool = True,
    rule: str,
) -> Selection:
    """Chooses a setting measured apart from the report (a speed setting, say).

    For settings scored by timing rather than on data: `score` measures each
    candidate on selection models or selection rounds that the report does not
    reuse; `rule` says which, for the report. The returned `Selection` has no
    test split.
    """
    candidates = list(candidates)
    if not candidates:
        raise ValueError("`candidates` is empty")
    scores = tuple((c, float(score(c))) for c in candidates)
    pick = (max if maximize else min)(range(len(scores)), key=lambda i: scores[i][1])
    return Selection(choice=scores[pick][0], scores=scores, rule=rule,
                     _test=_SealedArrays(np.empty(0)))
