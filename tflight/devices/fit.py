"""Fitting device profiles to published latencies, and judging them on what they did not see.

A profile's coefficients are **shared across the devices of a pool** (the ARM
phone and board CPUs running LiteRT's CPU kernels) up to one speed factor per
device and arithmetic: what a depthwise convolution costs relative to a
pointwise one, or what an output element costs beside a multiply-accumulate,
is learned from every device's figures at once, while each device keeps its own
fp32 and int8 speed. This is what lets a family that one device never
published (MobileNetV3 on the Pixel 4) be costed from the families other
devices did publish.

The fit minimizes the squared relative error ``sum((estimate / published -
1)^2)`` with non-negative coefficients (Lawson-Hanson NNLS), alternating with a
closed-form update of the speed factors, plus a small ridge pulling every
work coefficient towards one flat rate so that an operator kind the figures
barely exercise keeps a sensible cost.

Cross-validation holds out whole **families** (every width, resolution and
precision of MobileNetV1, of EfficientNet-Lite, ...) from **every** device of
the pool at once: the fit that estimates a MobileNetV2 never saw a MobileNetV2
figure of any device.

References:
  Lawson, Hanson. "Solving Least Squares Problems" (non-negative least
    squares), 1974.
  Spearman. "The proof and measurement of association between two things",
    1904 (rank correlation).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from tflight.devices.costs import DeviceProfile, columns_for, features_from_totals, work_columns
from tflight.devices.published import PublishedRow, model_family

__all__ = ["Validation", "PoolFit", "fit_pool", "calibrate", "cross_validate", "build_profile"]

# Strength of the pull of each work coefficient towards the pool's flat rate.
# Fixed a priori (kept from the single-device fit), not tuned on held-out error.
_RIDGE = 0.1
_ALTERNATIONS = 30


@dataclasses.dataclass(frozen=True)
class Validation:
    """Held-out error of a profile: each figure predicted by a fit without it.

    Attributes:
      method: how figures were held out.
      rows: published figures that were predicted.
      median_abs_err_pct: median |estimate / published - 1| on held-out rows, in %.
      worst_abs_err_pct: the largest such error, in %.
      rank_corr: Spearman rank correlation of held-out estimates and published
        figures (None with fewer than 3 rows).
      int8_speedup_median_abs_err_pct: median error of the estimated fp32/int8
        speed-up over architectures published in both precisions (None if none).
      predictions: `(model, precision, published_ms, heldout_estimate_ms)`.
      unpredicted: figures that could not be predicted because holding out
        their family left the device no figure of that arithmetic.
    """

    method: str
    rows: int
    median_abs_err_pct: float
    worst_abs_err_pct: float
    rank_corr: float | None
    int8_speedup_median_abs_err_pct: float | None
    predictions: tuple[tuple[str, str, float, float], ...] = ()
    unpredicted: int = 0

    def short(self) -> str:
        return (f"family-held-out error median {self.median_abs_err_pct:.0f}%, worst "
                f"{self.worst_abs_err_pct:.0f}% over {self.rows} published figures")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["predictions"] = [list(p) for p in self.predictions]
        return d


def _group(kind: str, column: str) -> str:
    """The speed factor a column scales with: its arithmetic on a CPU, one per accelerator."""
    return column.split(":")[0] if kind == "cpu" else kind


def _row_group(kind: str, row: PublishedRow) -> str:
    return row.precision if kind == "cpu" else kind


@dataclasses.dataclass(frozen=True)
class PoolFit:
    """Shared coefficients of a pool and each device's speed factors.

    Attributes:
      kind: `"cpu"`, `"edgetpu"` or `"gpu"`.
      shared: seconds per unit of each column, before a device's factor.
      factors: `(device, group) -> factor`; a group is an arithmetic on a CPU.
      devices: the devices of the fit, with the groups each has figures for.
      range_ms: per device, the smallest and largest figure fitted.
      sources: per device, the sources of its figures.
    """

    kind: str
    shared: Mapping[str, float]
    factors: Mapping[tuple[str, str], float]
    devices: Mapping[str, tuple[str, ...]]
    range_ms: Mapping[str, tuple[float, float]]
    sources: Mapping[str, tuple[str, ...]]

    def coefficients(self, device: str) -> tuple[dict[str, float], tuple[str, ...]]:
        """A device's coefficients and the groups its figures calibrate.

        A group the device has no figure for (fp32 on an int8-only board) takes
        the device's other factor times the pool's median ratio between the two.
        """
        have = self.devices[device]
        out = {}
        for col, v in self.shared.items():
            g = _group(self.kind, col)
            f = self.factors.get((device, g))
            if f is None:
                other = next(iter(have))
                ratios = [self.factors[(d, g)] / self.factors[(d, other)]
                          for d, gs in self.devices.items() if g in gs and other in gs]
                f = self.factors[(device, other)] * (float(np.median(ratios)) if ratios else 1.0)
            out[col] = v * f
        return out, tuple(sorted(have))


def fit_pool(rows: Sequence[PublishedRow], *, kind: str) -> PoolFit:
    """Fits shared coefficients and per-device speed factors to published figures.

    Args:
      rows: published figures of the pool's devices.
      kind: `"cpu"`, `"edgetpu"` or `"gpu"` (sets the feature columns).

    Returns:
      A `PoolFit`.

    Raises:
      ValueError: no rows, or a non-positive latency.
    """
    from scipy.optimize import nnls

    if not rows:
        raise ValueError("need at least 1 published figure to fit, got 0.")
    if any(not r.ms > 0 for r in rows):
        raise ValueError("published latencies must be > 0 ms.")
    cols = columns_for(kind)
    work = [i for i, c in enumerate(cols) if c in work_columns(kind)]
    x = np.array([[features_from_totals(r.totals, kind).get(c, 0.0) for c in cols] for r in rows])
    y = np.array([r.ms * 1e-3 for r in rows])
    groups = sorted({(r.device, _row_group(kind, r)) for r in rows})
    gi = np.array([groups.index((r.device, _row_group(kind, r))) for r in rows])
    total_work = np.maximum(x[:, work].sum(axis=1), 1.0)
    flat = float(np.median(y / total_work))
    # Column scales: the flat rate for work columns, a typical share of the
    # latency for the others, so the ridge and the solver see unit-sized terms.
    scale = np.empty(len(cols))
    for j in range(len(cols)):
        col = x[:, j]
        if j in work:
            scale[j] = flat
        else:
            scale[j] = float(np.median(y[col > 0] / col[col > 0])) if np.any(col > 0) else 1.0
    s = np.array([float(np.median(y[gi == g] / total_work[gi == g])) / flat
                  for g in range(len(groups))])
    reg = np.zeros((len(work), len(cols)))
    for k, j in enumerate(work):
        reg[k, j] = np.sqrt(_RIDGE)
    b = np.concatenate([np.ones(len(y)), np.full(len(work), np.sqrt(_RIDGE))])
    u = np.zeros(len(cols))
    for _ in range(_ALTERNATIONS if len(groups) > 1 else 1):
        a = (x * scale * s[gi][:, None]) / y[:, None]
        u, _ = nnls(np.vstack([a, reg]), b, maxiter=50 * len(cols))
        f = (x * scale) @ u / y
        for g in range(len(groups)):
            m = gi == g
            den = float((f[m] ** 2).sum())
            if den > 0:
                s[g] = float(f[m].sum()) / den
    shared = dict(zip(cols, (u * scale).tolist(), strict=True))
    devices: dict[str, tuple[str, ...]] = {}
    for d, g in groups:
        devices[d] = (*devices.get(d, ()), g)
    return PoolFit(
        kind=kind,
        shared=shared,
        factors={grp: float(v) for grp, v in zip(groups, s, strict=True)},
        devices=devices,
        range_ms={d: (min(r.ms for r in rows if r.device == d),
                      max(r.ms for r in rows if r.device == d)) for d in devices},
        sources={d: tuple(sorted({r.source for r in rows if r.device == d})) for d in devices},
    )


def calibrate(
    samples: Sequence[tuple[Mapping[str, Sequence[float]], float]],
    *,
    name: str,
    description: str,
    kind: str = "cpu",
    threads: int | None = None,
    fallback: str | None = None,
    calibration: str = "",
) -> DeviceProfile:
    """Fits one device's profile to its own published latencies.

    The single-device case of `fit_pool`: use it for a device of your own
    (the named profiles share coefficients across a pool of devices).

    Args:
      samples: `(totals, ms)` pairs: the work of a model (`ModelWork.totals()`)
        and its latency in milliseconds.
      name: profile name.
      description: what the device is.
      kind: `"cpu"`, `"edgetpu"` or `"gpu"`.
      threads: threads of the figures.
      fallback: profile for unsupported operators (required for `"edgetpu"`
        and `"gpu"`).
      calibration: where the figures come from.

    Returns:
      A `DeviceProfile` (without `validation`; see `cross_validate`).

    Raises:
      ValueError: with fewer than 2 samples or a non-positive latency.
    """
    if len(samples) < 2:
        raise ValueError(f"need at least 2 published figures to fit, got {len(samples)}.")
    rows = []
    for totals, ms in samples:
        arith = {k.split("/")[1] for k, v in totals.items() if v[1]}
        prec = "int8" if arith & {"int8", "hybrid"} and "fp32" not in arith else "fp32"
        rows.append(PublishedRow(name, "", prec, float(ms), "", totals))
    fit = fit_pool(rows, kind=kind)
    return profile_from(fit, name, description=description, threads=threads,
                        fallback=fallback, calibration=calibration)


def profile_from(fit: PoolFit, device: str, *, description: str, threads: int | None,
                 fallback: str | None, calibration: str = "") -> DeviceProfile:
    """The `DeviceProfile` of one device of a pool fit."""
    coef, calibrated = fit.coefficients(device)
    if fit.kind == "cpu":
        calibrated = tuple(g for g in calibrated if g in ("fp32", "int8"))
    elif fit.kind == "edgetpu":
        calibrated = ("int8",)
    else:
        calibrated = ("fp32",)
    return DeviceProfile(
        name=device, description=description, kind=fit.kind, coefficients=coef,
        threads=threads, calibrated=calibrated, fallback=fallback,
        calibration=calibration, published_range_ms=fit.range_ms[device],
    )


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 3:
        return None
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).statistic)


def cross_validate(
    device: str,
    rows: Sequence[PublishedRow],
    fit: Callable[[Sequence[PublishedRow]], DeviceProfile | None],
    *,
    by: str = "family",
) -> Validation:
    """Cross-validation in which every prediction comes from a fit without its model.

    Args:
      device: the device whose figures are predicted.
      rows: the figures of the pool the device is fitted in (every device's).
      fit: `fit(train_rows) -> DeviceProfile` of `device`, or None when the
        training rows leave it no figure.
      by: `"family"`: each family (all MobileNetV1 sizes and precisions, all
        EfficientNet-Lites, ...) is held out from every device of the pool in
        turn; `"architecture"`: each model (fp32 and int8 together) is held
        out from every device in turn, a weaker test (near-twins of the model
        stay in the fit).

    Returns:
      A `Validation` of `device`.
    """
    if by not in ("architecture", "family"):
        raise ValueError(f"`by` must be 'architecture' or 'family', got {by!r}.")
    key = (lambda r: r.model) if by == "architecture" else (lambda r: model_family(r.model))
    mine = [r for r in rows if r.device == device]
    preds: list[tuple[str, str, float, float]] = []
    missed = 0
    for held in sorted({key(r) for r in mine}):
        train = [r for r in rows if key(r) != held]
        prof = fit(train) if train else None
        for r in mine:
            if key(r) != held:
                continue
            if prof is None:
                missed += 1
                continue
            est = prof.cost(features_from_totals(r.totals, prof.kind)) * 1e3
            preds.append((r.model, r.precision, r.ms, est))
    errs = [abs(p / t - 1) * 100 for _, _, t, p in preds]
    speed = []
    pairs = {(m, prec): (t, p) for m, prec, t, p in preds}
    for (m, prec), (t, p) in pairs.items():
        if prec == "int8" and (m, "fp32") in pairs:
            tf, pf = pairs[(m, "fp32")]
            speed.append(abs((pf / p) / (tf / t) - 1) * 100)
    return Validation(
        method=(
            "leave-one-architecture-out (fp32 and int8 of a model held out from every device)"
            if by == "architecture"
            else "leave-one-family-out (every size and precision of a family held out from "
            "every device of the pool)"
        ),
        rows=len(preds),
        median_abs_err_pct=float(np.median(errs)) if errs else float("nan"),
        worst_abs_err_pct=float(np.max(errs)) if errs else float("nan"),
        rank_corr=_spearman([p[2] for p in preds], [p[3] for p in preds]),
        int8_speedup_median_abs_err_pct=float(np.median(speed)) if speed else None,
        predictions=tuple(preds),
        unpredicted=missed,
    )


def pool_rows(pool: Sequence[str]) -> tuple[PublishedRow, ...]:
    """The published figures of a pool's devices."""
    from tflight.devices.published import published_rows

    return tuple(r for r in published_rows() if r.device in pool)


@functools.cache
def _pool_fit(pool: tuple[str, ...], kind: str, by: str | None, held: str | None) -> PoolFit | None:
    """The pool's fit, without the figures whose `by` key is `held` (None: all figures)."""
    key = {"architecture": lambda r: r.model, "family": lambda r: model_family(r.model)}
    rows = [r for r in pool_rows(pool) if by is None or key[by](r) != held]
    return fit_pool(rows, kind=kind) if rows else None


def build_profile(name: str, devices: Mapping[str, Mapping], pools: Mapping[str, Sequence[str]]
                  ) -> DeviceProfile:
    """Fits the named profile with its pool and attaches both cross-validations.

    Args:
      name: a key of `devices`.
      devices: profile name -> `description`, `kind`, `threads`, `fallback`, `pool`.
      pools: pool name -> the devices fitted together.
    """
    spec = devices[name]
    pool = tuple(pools[spec["pool"]])
    kind = spec["kind"]
    rows = pool_rows(pool)

    def make(fit: PoolFit | None) -> DeviceProfile | None:
        if fit is None or name not in fit.devices:
            return None
        srcs = ", ".join(fit.sources[name])
        shared = f"; coefficients shared with {', '.join(d for d in pool if d != name)}" \
            if len(pool) > 1 else ""
        return profile_from(
            fit, name, description=spec["description"], threads=spec["threads"],
            fallback=spec["fallback"],
            calibration=f"{sum(r.device == name for r in rows)} published figures ({srcs}; "
            f"see published_latency.csv){shared}",
        )

    prof = make(_pool_fit(pool, kind, None, None))
    if prof is None:
        raise ValueError(f"profile {name!r} has no published figure in its pool {pool}.")
    vals = {}
    for by in ("family", "architecture"):
        def fit(train: Sequence[PublishedRow], by: str = by) -> DeviceProfile | None:
            # Every training set cross_validate asks for is the pool minus one key;
            # recover the key to share the fit between the pool's devices.
            left = {(model_family(r.model) if by == "family" else r.model) for r in rows} - {
                (model_family(r.model) if by == "family" else r.model) for r in train}
            if len(left) != 1 or len(train) + sum(
                    (model_family(r.model) if by == "family" else r.model) in left
                    for r in rows) != len(rows):
                return make(fit_pool(train, kind=kind) if train else None)
            return make(_pool_fit(pool, kind, by, next(iter(left))))

        vals[by] = cross_validate(name, rows, fit, by=by)
    return dataclasses.replace(prof, validation=vals["family"],
                               model_validation=vals["architecture"])
