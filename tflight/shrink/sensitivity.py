"""Per-group pruning sensitivity, and ratios that meet a budget with the least predicted loss.

Layers differ in how much they tolerate losing channels. `analyze_sensitivity`
cuts each coupled group of `DependencyGraph` alone at several ratios and
measures the drop of a metric on the user's validation data (measured, not
estimated). `SensitivityResult.allocate` then picks one ratio per group so that
the MACs, the parameters or the estimated latency on a named device profile
(`tflight.devices.profiles`: pixel3, pixel4, cortex-a53, edgetpu) meet a target, greedily taking the cut with the least
predicted loss per unit of cost saved (costs are counted on the graph for the
joint cut; losses of different groups are assumed to add up, which is what
"predicted" means here). The latency is estimated, not measured: the
profile's cost model applied to the convolution and Dense layers of the cut
graph (`estimated_latency_ms`). Pass the ratios to
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

from tflight.errors import CompressionError
from tflight.shrink.channels import (
    Importance,
    _keep_count,
    _top,
    importance_from_name,
    prune_channels,
)
from tflight.shrink.depgraph import DependencyGraph

__all__ = [
    "GroupSensitivity",
    "SensitivityResult",
    "analyze_sensitivity",
    "estimated_latency_ms",
]

_ARITHMETICS = ("fp32", "int8")


def estimated_latency_ms(
    graph: DependencyGraph,
    keep: dict[int, np.ndarray] | None = None,
    *,
    profile: str = "pixel4",
    arithmetic: str = "int8",
) -> float:
    """Estimated latency (ms) of a graph's convolutions and Dense layers on a device profile.

    The cost model of `tflight.devices.profiles` (fitted to published latencies) is
    applied to each convolution, depthwise convolution and Dense layer of the
    graph with `keep` applied: its MACs by kind (k x k, pointwise, depthwise),
    the bytes it reads and writes, and a fixed cost per operator. BatchNorm is
    taken as folded and activations as fused; the other element-wise operators
    (additions, pooling) are left out, so the figure is for comparing cuts of
    one model, not a whole-model estimate (`tflight.devices.profiles.estimate_latency`
    estimates a converted `.tflite`).

    Args:
      graph: the model's `DependencyGraph`.
      keep: kept channel indices per group id (missing groups are whole).
      profile: a profile name from `tflight.devices.profiles.PROFILES`.
      arithmetic: "int8" or "fp32", the arithmetic the model will run in.

    Returns:
      Estimated milliseconds.

    Raises:
      CompressionError: an unknown profile or arithmetic.
    """
    from tflight.devices import profiles as P
    from tflight.errors import BenchmarkError

    if arithmetic not in _ARITHMETICS:
        raise CompressionError(f"`arithmetic` must be one of {_ARITHMETICS}, got {arithmetic!r}.")
    try:
        prof = P.get_profile(profile)
    except BenchmarkError as e:
        raise CompressionError(str(e)) from None
    keep = keep or {}
    size = 1 if arithmetic == "int8" else 4
    total, weights = 0.0, 0.0
    for rec in graph.layers.values():
        if rec.kind not in ("conv", "dense", "separable", "depthwise"):
            continue
        cin = len(graph.keep_indices(rec.in_space, keep))
        cout = len(graph.keep_indices(rec.out_space, keep))
        k = int(np.prod(getattr(rec.layer, "kernel_size", (1,))))
        stride = int(np.prod(getattr(rec.layer, "strides", (1,))))
        for spatial in rec.spatial:
            parts = []  # (op class, macs, weight count, input channels, output channels)
            if rec.kind == "depthwise":
                parts.append(("depthwise", k * cin * spatial, k * cin, cin, cin))
            elif rec.kind == "separable":
                m = rec.layer.depth_multiplier
                parts.append(("depthwise", k * cin * m * spatial, k * cin * m, cin, cin * m))
                parts.append(("pointwise", cin * m * cout * spatial, cin * m * cout, cin * m, cout))
            else:
                op_class = "dense" if rec.kind == "dense" else ("pointwise" if k == 1 else "conv")
                parts.append((op_class, k * cin * cout * spatial, k * cin * cout, cin, cout))
            for i, (op_class, macs, wcount, c_in, c_out) in enumerate(parts):
                in_spatial = spatial * (stride if i == 0 else 1)
                elements = c_out * spatial
                nbytes = (c_in * in_spatial + elements) * size
                wbytes = wcount * size
                if prof.kind == "edgetpu":
                    over = P.EDGETPU_SRAM_BYTES
                    off = max(0.0, weights + wbytes - over) - max(0.0, weights - over)
                    weights += wbytes
                    feats = P._tpu_features(op_class, 1, macs, elements, off)
                    total += prof.cost(feats)
                else:
                    feats = P._cpu_features(op_class, arithmetic, 1, macs, elements, nbytes, wbytes)
                    total += prof.cost(feats)
    return total * 1e3


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
        self,
        *,
        flops_target: float | None = None,
        params_target: float | None = None,
        latency_target: float | None = None,
        profile: str = "pixel4",
        arithmetic: str = "int8",
    ) -> dict[str, float]:
        """Per-group ratios meeting a target with the least predicted drop.

        Args:
          flops_target: fraction of the MACs to keep, in (0, 1).
          params_target: fraction of the parameters to keep, in (0, 1).
          latency_target: fraction of the estimated latency on `profile` to
            keep, in (0, 1); estimated with `estimated_latency_ms`, not
            measured.
          profile: device profile for `latency_target` (pixel3, pixel4,
            cortex-a53, edgetpu).
          arithmetic: "int8" or "fp32", for `latency_target`.

        Returns:
          Layer name -> ratio, for `prune_channels(model, ratio=...)` (groups
          left whole are omitted).

        Raises:
          CompressionError: a bad target or profile, or a target the measured
            ratios cannot reach.
        """
        given = [t for t in (flops_target, params_target, latency_target) if t is not None]
        if len(given) != 1:
            raise CompressionError(
                "Give exactly one of `flops_target`, `params_target` or `latency_target`."
            )
        target = given[0]
        if not (isinstance(target, int | float) and 0.0 < target < 1.0):
            raise CompressionError(f"The target must be in (0, 1), got {target!r}.")

        def keep_of(levels: dict[str, int]) -> dict[int, np.ndarray]:
            return {
                self._gids[g.name]: np.arange(_keep_count(g.channels, g.ratios[levels[g.name]], 1))
                for g in self.groups
                if levels[g.name] >= 0
            }

        if latency_target is not None:

            def cost(levels: dict[str, int]) -> float:
                return estimated_latency_ms(
                    self._graph, keep_of(levels), profile=profile, arithmetic=arithmetic
                )

            total = estimated_latency_ms(self._graph, profile=profile, arithmetic=arithmetic)
        else:
            total = self.macs if flops_target is not None else self.params

            def cost(levels: dict[str, int]) -> float:
                # Counted on the graph for the joint cut: savings of coupled groups
                # do not add up (a group's consumers shrink too).
                return self._graph.macs(keep_of(levels), params=params_target is not None)

        level = {g.name: -1 for g in self.groups}

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
                if not self.groups:
                    raise CompressionError(
                        "No channel group of this model can be cut, so no target can be "
                        "reached; use another technique (quantization, low rank).",
                        kind="not_applicable",
                    )
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
