"""Low-rank factorization: one wide Dense or 1×1 convolution becomes two thin ones.

A kernel `W` (inputs × outputs) is replaced by its truncated SVD
`W ≈ (U_r √S_r)(√S_r V_rᵀ)`: a layer of `r` units without bias followed by the
original layer's width, bias and activation. It costs `r·(in + out)`
multiply-accumulates instead of `in·out`, so it is applied only where `r` is
below `in·out / (in + out)`. The rank comes from the energy (sum of squared
singular values) to retain, from a MACs target reached by one common energy
level, or is given per layer. The pair of layers is a small Sequential with
the original layer's name, so the result stays a plain Keras model of the same
generation; the user's model is not modified.

References:
  Denton et al., "Exploiting Linear Structure Within Convolutional Networks
  for Efficient Evaluation", NeurIPS 2014, https://arxiv.org/abs/1404.0736
  Xue, Li and Gong, "Restructuring of Deep Neural Network Acoustic Models with
  Singular Value Decomposition", Interspeech 2013.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from tflight.errors import CompressionError, UnsupportedLayerError
from tflight.shrink.channels import _module, rebuild_model
from tflight.shrink.depgraph import DependencyGraph

__all__ = ["LowRankLayer", "LowRankResult", "factorize"]


@dataclasses.dataclass(frozen=True)
class LowRankLayer:
    """One layer's factorization (rank == full rank when left as it was)."""

    name: str
    inputs: int
    outputs: int
    rank: int
    energy: float
    macs_before: int
    macs_after: int
    factorized: bool


@dataclasses.dataclass
class LowRankResult:
    """The factorized model and what changed per layer.

    Attributes:
      model: the new model.
      layers: one `LowRankLayer` per candidate layer.
      macs_before / macs_after: multiply-accumulates of all convolutions and
        Dense layers of the model (counted from shapes).
    """

    model: Any
    layers: tuple[LowRankLayer, ...]
    macs_before: int
    macs_after: int

    @property
    def macs_ratio(self) -> float:
        """macs_after / macs_before."""
        return self.macs_after / max(self.macs_before, 1)

    def to_dict(self) -> dict:
        """A JSON-ready dictionary."""
        return {
            "macs_before": self.macs_before,
            "macs_after": self.macs_after,
            "macs_ratio": self.macs_ratio,
            "layers": [dataclasses.asdict(x) for x in self.layers],
        }

    def summary(self, print_fn: Callable[[str], Any] = print) -> None:
        """Prints rank and MACs per layer."""
        width = max([len(x.name) for x in self.layers] + [5])
        print_fn(f"{'layer':<{width}}  in x out       rank  energy  MACs before -> after")
        for x in self.layers:
            shape = f"{x.inputs} x {x.outputs}"
            rank = str(x.rank) if x.factorized else "kept"
            print_fn(
                f"{x.name:<{width}}  {shape:<13} {rank:>5}  {x.energy:6.1%}  "
                f"{x.macs_before:,} -> {x.macs_after:,}"
            )
        print_fn(
            f"MACs (counted): {self.macs_before:,} -> {self.macs_after:,} ({self.macs_ratio:.1%})"
        )


def _candidates(graph: DependencyGraph) -> list:
    out = []
    for rec in graph.layers.values():
        layer = rec.layer
        if rec.kind == "dense" or (
            rec.kind == "conv"
            and tuple(layer.kernel_size) in ((1, 1), (1,))
            and type(layer).__name__ in ("Conv2D", "Conv1D")
            and getattr(layer, "groups", 1) == 1
        ):
            out.append(rec)
    return out


def _svd(layer: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    kernel = np.asarray(layer.kernel.numpy())
    w = kernel.reshape(-1, kernel.shape[-1])
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    return u, s, vt


def _rank_for(s: np.ndarray, energy: float) -> int:
    cum = np.cumsum(s**2) / max(np.sum(s**2), 1e-30)
    return int(min(len(s), np.searchsorted(cum, energy - 1e-12) + 1))


def factorize(
    model: Any,
    *,
    energy: float | None = None,
    macs_target: float | None = None,
    ranks: Mapping[str, int] | None = None,
    only_if_saving: bool = True,
) -> LowRankResult:
    """Replaces Dense and 1×1 convolution kernels by two thinner layers (truncated SVD).

    Give exactly one of `energy`, `macs_target` or `ranks`.

    Args:
      model: a Sequential or Functional model (Keras 3 or tf_keras).
      energy: fraction of each kernel's energy (sum of squared singular
        values) to keep, in (0, 1].
      macs_target: fraction of the model's convolution/Dense MACs to keep, in
        (0, 1); reached by one energy level common to all layers.
      ranks: layer name -> rank, for those layers only.
      only_if_saving: leave a layer whole when its rank would not reduce its
        MACs (turn off only to check a full-rank factorization).

    Returns:
      A `LowRankResult`.

    Raises:
      CompressionError: bad arguments, or an unreachable target.
      UnsupportedLayerError: a named layer that is not a Dense or 1×1
        convolution, or a rank out of range.

    Example:
      >>> result = factorize(mlp, macs_target=0.5)
      >>> result.summary()
    """
    given = [a for a in (energy, macs_target, ranks) if a is not None]
    if len(given) != 1:
        raise CompressionError(
            f"Give exactly one of `energy`, `macs_target` or `ranks` (got {len(given)})."
        )
    if energy is not None and not (isinstance(energy, int | float) and 0.0 < energy <= 1.0):
        raise CompressionError(f"`energy` must be in (0, 1], got {energy!r}.")
    if macs_target is not None and not (
        isinstance(macs_target, int | float) and 0.0 < macs_target < 1.0
    ):
        raise CompressionError(
            f"`macs_target` is the fraction of MACs to keep and must be in (0, 1), got "
            f"{macs_target!r}."
        )
    K = _module(model)
    graph = DependencyGraph(model)
    candidates = _candidates(graph)
    by_name = {}
    for rec in candidates:
        by_name[rec.path] = by_name[rec.layer.name] = rec
    if ranks is not None:
        for name, r in ranks.items():
            if name not in by_name:
                raise UnsupportedLayerError(
                    f"Layer {name!r} is not a Dense or 1x1 convolution of model {model.name!r}; "
                    f"candidates: {sorted(r.path for r in candidates)}."
                )
            rec = by_name[name]
            full = min(int(np.prod(rec.layer.kernel.shape[:-1])), rec.layer.kernel.shape[-1])
            if not isinstance(r, int) or not 1 <= r <= full:
                raise UnsupportedLayerError(f"Rank for {name!r} must be in [1, {full}], got {r!r}.")
    if not candidates:
        raise UnsupportedLayerError(f"Model {model.name!r} has no Dense or 1x1 convolution.")

    svds = {id(rec.layer): _svd(rec.layer) for rec in candidates}
    total = graph.macs()

    def plan(level: float | None) -> dict[int, tuple[int, float]]:
        out = {}
        for rec in candidates:
            u, s, vt = svds[id(rec.layer)]
            n_in, n_out = u.shape[0], vt.shape[1]
            if ranks is not None:
                if rec.path not in ranks and rec.layer.name not in ranks:
                    continue
                r = ranks.get(rec.path, ranks.get(rec.layer.name))
            else:
                r = _rank_for(s, level)
            if only_if_saving and r * (n_in + n_out) >= n_in * n_out:
                continue
            out[id(rec.layer)] = (r, float(np.sum(s[:r] ** 2) / max(np.sum(s**2), 1e-30)))
        return out

    def macs(p: dict) -> int:
        saved = 0
        for rec in candidates:
            if id(rec.layer) in p:
                u, _, vt = svds[id(rec.layer)]
                r, n_in, n_out = p[id(rec.layer)][0], u.shape[0], vt.shape[1]
                saved += (n_in * n_out - r * (n_in + n_out)) * sum(rec.spatial)
        return total - saved

    if macs_target is not None:
        lo, hi = 0.0, 1.0
        if macs(plan(1e-9)) > macs_target * total:
            raise CompressionError(
                f"A MACs target of {macs_target:.0%} cannot be reached by factorizing this model's "
                f"Dense and 1x1 convolution layers (best: {macs(plan(1e-9)) / total:.0%})."
            )
        for _ in range(40):
            mid = (lo + hi) / 2
            if macs(plan(mid)) > macs_target * total:
                hi = mid
            else:
                lo = mid
        chosen = plan(lo)
    else:
        chosen = plan(energy)

    builders, weights = {}, {}
    for rec in candidates:
        if id(rec.layer) not in chosen:
            continue
        layer, (r, _) = rec.layer, chosen[id(rec.layer)]
        u, s, vt = svds[id(layer)]
        root = np.sqrt(s[:r])
        first = (u[:, :r] * root).astype(np.float32)
        second = (root[:, None] * vt[:r]).astype(np.float32)
        kernel_shape = tuple(layer.kernel.shape)
        first = first.reshape(*kernel_shape[:-1], r)
        second = second.reshape(*kernel_shape[:-2], r, kernel_shape[-1])
        weights[id(layer)] = [first, second] + (
            [np.asarray(layer.bias.numpy())] if layer.use_bias else []
        )
        builders[id(layer)] = _builder(K, rec, r)

    new_model = rebuild_model(model, builders=builders, weights=weights)
    report = []
    for rec in candidates:
        u, s, vt = svds[id(rec.layer)]
        n_in, n_out, positions = u.shape[0], vt.shape[1], sum(rec.spatial)
        r, kept = chosen.get(id(rec.layer), (min(n_in, n_out), 1.0))
        after = r * (n_in + n_out) if id(rec.layer) in chosen else n_in * n_out
        report.append(
            LowRankLayer(
                rec.path,
                n_in,
                n_out,
                r,
                kept,
                n_in * n_out * positions,
                after * positions,
                id(rec.layer) in chosen,
            )
        )
    return LowRankResult(new_model, tuple(report), total, macs(chosen))


def _builder(K: Any, rec: Any, r: int) -> Callable[[Any], Any]:
    def build(layer: Any) -> Any:
        config = layer.get_config()
        name = config["name"]
        first_cfg = dict(config, name=f"{name}_u", use_bias=False, activation="linear")
        second_cfg = dict(config, name=f"{name}_v")
        for key in ("activity_regularizer", "kernel_regularizer", "bias_regularizer"):
            first_cfg.pop(key, None)
        if rec.kind == "dense":
            first_cfg["units"] = r
        else:
            first_cfg["filters"] = r
            second_cfg.update(strides=1, padding="valid", dilation_rate=1)
        # No Input: tf_keras's cloning expects a replacement without inbound nodes.
        return K.Sequential(
            [
                type(layer).from_config(first_cfg),
                type(layer).from_config(second_cfg),
            ],
            name=name,
        )

    return build
