"""A benchmark's selection code cannot read its test split.

`benchmarks/_splits.py` seals the test split until `Splits.select` has chosen a
setting on train/validation. These tests check that reading it early raises,
that poisoned test labels leave the choice unchanged, and that the
distillation benchmark's own selection code goes through it.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._splits import Splits, TestSplitSealed, digits_splits  # noqa: E402


def _nearest_centroid_score(shrink, train, validation):
    """A real (tiny) model: nearest class centroid, centroids shrunk towards the mean."""
    x, y = train
    flat = x.reshape(len(x), -1)
    mean = flat.mean(0)
    cents = np.stack([flat[y == c].mean(0) for c in range(10)])
    cents = mean + (1 - shrink) * (cents - mean)
    xv, yv = validation
    d = ((xv.reshape(len(xv), -1)[:, None] - cents[None]) ** 2).sum(-1)
    return float((d.argmin(1) == yv).mean())


def test_test_split_raises_before_selection():
    splits = digits_splits(seed=0)
    with pytest.raises(TestSplitSealed):
        _ = splits.test
    assert splits.test_size == 450
    sel = splits.select([0.0, 0.5], _nearest_centroid_score)
    x_test, y_test = sel.test
    assert len(x_test) == 450 and len(y_test) == 450
    with pytest.raises(RuntimeError, match="reported once"):
        splits.select([0.0], _nearest_centroid_score)


def test_scorer_that_reads_the_test_split_fails():
    splits = digits_splits(seed=0)

    def cheating(candidate, train, validation):
        x, y = splits.test  # the test split, read during selection
        return float(candidate)

    with pytest.raises(TestSplitSealed):
        splits.select([1, 2], cheating)


def test_poisoned_test_labels_leave_the_choice_unchanged():
    clean = digits_splits(seed=0)
    candidates = [0.0, 0.3, 0.6, 0.9, 0.99]
    chosen = clean.select(candidates, _nearest_centroid_score)
    # The same splits with the test labels scrambled: if selection read them,
    # some candidate's score (and so, for these candidates, the choice) would move.
    x_test, y_test = chosen.test
    poisoned = Splits(clean.train, clean.validation,
                      (x_test, (y_test + 1 + np.arange(len(y_test)) % 9) % 10))
    again = poisoned.select(candidates, _nearest_centroid_score)
    assert again.choice == chosen.choice
    assert again.scores == chosen.scores
    # The scores vary between candidates: the check above could have failed.
    assert len({s for _, s in chosen.scores}) > 1
    assert not np.array_equal(again.test[1], chosen.test[1])


def test_splits_are_disjoint_and_stratified():
    splits = digits_splits(seed=0)
    (xt, yt), (xv, yv) = splits.train, splits.validation
    x_test, _ = splits.select([0], lambda c, t, v: 0.0).test
    rows = {a.tobytes() for a in xt} | set()
    assert not any(a.tobytes() in rows for a in xv)
    assert len(yt) + len(yv) == 1347
    assert set(np.unique(yv)) == set(range(10))


def test_distillation_benchmark_selects_without_the_test_split():
    # The benchmark's own selection code, on a short schedule: it runs with the
    # test split sealed (any read would raise inside it), and the choice and its
    # scores come from the validation split.
    from benchmarks import distillation

    class Args:
        alphas = [0.1, 0.5]
        epoch_choices = [1, 2]
        select_seeds = [0]
        temperature = 4.0
        lr = 3e-3
        teacher_epochs = 1

    splits = digits_splits(seed=0)
    teachers: dict = {}
    sel = distillation.select_schedule(splits, Args, teachers)
    assert [c for c, _ in sel.scores] == [(a, e) for a in (0.1, 0.5) for e in (1, 2)]
    assert all(0.0 <= s <= 1.0 for _, s in sel.scores)
    assert sel.choice in [c for c, _ in sel.scores]
    assert list(teachers) == [0]  # the teacher was trained during selection, on train only
    assert len(sel.test[1]) == 450
