"""Per-group pruning sensitivity, and ratios that meet a budget with the least predicted loss.

Layers differ in how much they tolerate losing channels. `analyze_sensitivity`
cuts each coupled group of `DependencyGraph` alone at several ratios and
measures the drop of a metric on the user's validation data (measured, not
estimated). `SensitivityResult.allocate` then picks one ratio per group so that
the MACs or parameters meet a target, greedily taking the cut with the least
predicted loss per unit of cost saved (costs are counted on the graph for the
joint cut; losses of different groups are assumed to add up, which is what
"predicted" means here). Pass the ratios to
`prune_channels(model, ratio=...)`.

References:
  Li et al., "Pruning Filters for Efficient ConvNets", ICLR 2017 (sensitivity
  analysis per layer).
  Yang et al., "NetAdapt: Platform-Aware Neural Network Adaptation for Mobile
  Applications", ECCV 2018 (greedy allocation under a budget).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from tflight.depgraph import DependencyGraph
from tflight.errors import CompressionError
from tflight.structured import (
    Importance,
    _keep_count,
    _top,
    importance_from_name,
    prune_channels,
)

__all__ = ["GroupSensitivity", "SensitivityResult", "analyze_sensitivity"]


@dataclasses.dataclass(frozen=True)
class GroupSensitivity:
    """One group's curve: metric drop (points) and cost saved at each ratio."""

    name: str
    channels: int
    ratios: tuple[float, ...]
    drops: tuple[float, ...]
    macs_saved: tuple[int, ...]
    params_saved: tuple[int, ...]


@dataclasses.dataclass
class SensitivityResult:
    """Measured sensitivity curves of every prunable group.

    Attributes:
      baseline: the uncut model's metric on the validation data.
      metric: the metric's name.
      groups: one `GroupSensitivity` per group.
      macs / params: totals of the uncut model (convolutions and Dense).
    """

    baseline: float
    metric: str
    groups: tuple[GroupSensitivity, ...]
    macs: int
    params: int
    _graph: Any = dataclasses.field(default=None, repr=False, compare=False)
    _gids: dict = dataclasses.field(default_factory=dict, repr=False, compare=False)

    def allocate(
        self, *, flops_target: float | None = None, params_target: float | None = None
    ) -> dict[str, float]:
        """Per-group ratios meeting a MACs or parameter target with the least predicted drop.

        Args:
          flops_target: fraction of the MACs to keep, in (0, 1).
          params_target: fraction of the parameters to keep, in (0, 1).

        Returns:
          Layer name -> ratio, for `prune_channels(model, ratio=...)` (groups
          left whole are omitted).

        Raises:
          CompressionError: a bad target, or one the measured ratios cannot reach.
        """
        if (flops_target is None) == (params_target is None):
            raise CompressionError("Give exactly one of `flops_target` or `params_target`.")
        target = flops_target if flops_target is not None else params_target
        if not (isinstance(target, int | float) and 0.0 < target < 1.0):
            raise CompressionError(f"The target must be in (0, 1), got {target!r}.")
        total = self.macs if flops_target is not None else self.params
        level = {g.name: -1 for g in self.groups}

        def cost(levels: dict[str, int]) -> float:
            # Counted on the graph for the joint cut: savings of coupled groups
            # do not add up (a group's consumers shrink too).
            keep = {
                self._gids[g.name]: np.arange(_keep_count(g.channels, g.ratios[levels[g.name]], 1))
                for g in self.groups
                if levels[g.name] >= 0
            }
            return self._graph.macs(keep, params=params_target is not None)

        def drop(g: GroupSensitivity, i: int) -> float:
            return 0.0 if i < 0 else max(float(g.drops[i]), 0.0)

        current = cost(level)
        while current > target * total:
            best, best_score, best_cost = None, math.inf, current
            for g in self.groups:
                i = level[g.name]
                if i + 1 >= len(g.ratios):
                    continue
                trial = cost(level | {g.name: i + 1})
                gain = current - trial
                if gain <= 0:
                    continue
                score = (drop(g, i + 1) - drop(g, i) + 1e-6) / gain
                if score < best_score:
                    best, best_score, best_cost = g, score, trial
            if best is None:
                raise CompressionError(
                    f"The measured ratios (up to {max(max(g.ratios) for g in self.groups):.0%}) "
                    f"cannot reach a target of {target:.0%}; measure larger ratios."
                )
            level[best.name] += 1
            current = best_cost
        # Greedy steps can overshoot: give back any step the target does not need,
        # the costliest in predicted drop first.
        for g in sorted(self.groups, key=lambda g: -drop(g, level[g.name])):
            while level[g.name] >= 0:
                trial = level | {g.name: level[g.name] - 1}
                if cost(trial) > target * total:
                    break
                level = trial
        return {g.name: g.ratios[level[g.name]] for g in self.groups if level[g.name] >= 0}

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return {
            "baseline": self.baseline,
            "metric": self.metric,
            "macs": self.macs,
            "params": self.params,
            "groups": [dataclasses.asdict(g) for g in self.groups],
        }

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints the drop (measured, points of the metric) per group and ratio."""
        ratios = sorted({r for g in self.groups for r in g.ratios})
        width = max([len(g.name) for g in self.groups] + [5])
        head = "".join(f"{r:>8.0%}" for r in ratios)
        print_fn(f"{self.metric} drop (measured; baseline {self.baseline:.2f})")
        print_fn(f"{'group':<{width}}  chans{head}")
        for g in self.groups:
            cells = dict(zip(g.ratios, g.drops, strict=True))
            row = "".join(f"{cells[r]:>8.2f}" if r in cells else f"{'-':>8}" for r in ratios)
            print_fn(f"{g.name:<{width}}  {g.channels:>5}{row}")

    def plot(self, path: str | Path) -> Path:
        """Writes the sensitivity curves (drop vs. ratio, one line per group) as an image."""
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as e:
            raise CompressionError("Plotting needs matplotlib: pip install tflight[plot].") from e
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for g in self.groups:
            ax.plot([0, *g.ratios], [0, *g.drops], marker="o", label=g.name)
        ax.set_xlabel("fraction of the group's channels removed")
        ax.set_ylabel(f"{self.metric} drop (points, measured)")
        ax.set_title("Channel pruning sensitivity per coupled group")
        if len(self.groups) <= 12:
            ax.legend(fontsize=7)
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path)
        plt.close(fig)
        return path


def _accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.asarray(model.predict(x, verbose=0, batch_size=256))
    return float(np.mean(np.argmax(pred, -1) == y) * 100)


def analyze_sensitivity(
    model: Any,
    x_val: Any,
    y_val: Any,
    *,
    ratios: Sequence[float] = (0.25, 0.5, 0.75),
    importance: Importance | str | None = None,
    data: Any = None,
    metric: Callable[[Any, Any, Any], float] | None = None,
    metric_name: str = "accuracy %",
) -> SensitivityResult:
    """Cuts each coupled group alone at each ratio and measures the metric drop on validation data.

    Args:
      model: a Sequential or Functional model (Keras 3 or tf_keras); not modified.
      x_val: validation inputs (not the data the model was trained on).
      y_val: validation labels (integers) for the default metric.
      ratios: fractions of a group's channels removed, each in (0, 1).
      importance: the criterion choosing channels (default "l1").
      data: `(x, y)` for data-driven criteria.
      metric: `metric(model, x_val, y_val) -> float`, higher is better; default
        top-1 accuracy in percent.
      metric_name: the metric's name in tables and plots.

    Returns:
      A `SensitivityResult` (`summary()`, `plot(path)`, `allocate(...)`).

    Raises:
      CompressionError: a ratio out of range, or a criterion needing data without it.
    """
    ratios = tuple(sorted(float(r) for r in ratios))
    if not ratios or not all(0.0 < r < 1.0 for r in ratios):
        raise CompressionError(f"`ratios` must be fractions in (0, 1), got {ratios!r}.")
    if isinstance(importance, str) or importance is None:
        importance = importance_from_name(importance or "l1")
    metric = metric or _accuracy
    y_val = np.asarray(y_val)
    if y_val.ndim == 2:
        y_val = np.argmax(y_val, -1)
    graph = DependencyGraph(model)
    groups = graph.prunable_groups()
    scores = importance.scores(graph, groups, data)
    baseline = metric(model, x_val, y_val)
    macs, params = graph.macs(), graph.macs(params=True)
    out = []
    for g in groups:
        drops, macs_saved, params_saved, used = [], [], [], []
        for r in ratios:
            n = _keep_count(g.size, r, 1)
            if n < 1 or n >= g.size:
                continue
            keep = {g.gid: _top(scores[g.gid], n)}
            cut = prune_channels(model, ratio={g.name: r}, importance=importance, data=data, graph=graph)
            drops.append(baseline - metric(cut.model, x_val, y_val))
            macs_saved.append(macs - graph.macs(keep))
            params_saved.append(params - graph.macs(keep, params=True))
            used.append(r)
        if used:
            out.append(
                GroupSensitivity(
                    g.name, g.size, tuple(used), tuple(drops), tuple(macs_saved), tuple(params_saved)
                )
            )
    gids = {g.name: g.gid for g in groups}
    return SensitivityResult(baseline, metric_name, tuple(out), macs, params, graph, gids)
