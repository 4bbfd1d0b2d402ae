"""Magnitude pruning: unstructured, m:n (2:4) and block sparsity; apply and strip.

`prune` wraps the chosen layers of a copy of the model in TF-MOT's
`PruneLowMagnitude`; fine-tune it with `tflight.fit` (or with
`callbacks=tflight.callbacks(model)`), then `strip_pruning` returns the plain
model, after checking that every layer reached the sparsity it was asked for
(a schedule that never reached its target, see `tflight.compress.schedules`,
raises instead of exporting a silently dense model).

References:
  Zhu, Gupta. "To prune, or not to prune: exploring the efficacy of pruning
  for model compression", 2017 (polynomial schedule).
  Mishra et al. "Accelerating Sparse Deep Neural Networks", 2021 (2:4).
  Narang, Undersander, Diamos. "Block-Sparse Recurrent Neural Networks", 2017.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tflight._keras import is_tf_keras_model, tf_keras, tfmot, tfmot_internal
from tflight.compress.checks import check_finite
from tflight.compress.compile import compile_model
from tflight.compress.models import is_frozen, prepare
from tflight.compress.report import CompressionReport, attach_report, compression_report
from tflight.compress.schedules import ConstantSparsity, PolynomialDecay, Schedule, check_fraction
from tflight.compress.sparsity import TARGETS_ATTR, sparsity_report, wrapper_target
from tflight.compress.technique import Selector, check_names_exist, check_selector, layer_matches
from tflight.compress.training import callbacks as _callbacks
from tflight.compress.training import install_guard, pruning_wrappers
from tflight.errors import CompressionError, UnsupportedLayerError

__all__ = ["Prune", "prune", "strip_pruning"]


def _prunable_weight_names(layer: Any) -> list[str] | None:
    """Attribute names of the weights TF-MOT prunes in `layer`, found by isinstance.

    TF-MOT's registry is keyed on exact classes; walking the MRO lets a
    subclass of `Conv2D` or `Dense` be pruned like its base.
    """
    table = _registry_table()
    for cls in type(layer).__mro__:
        if cls in table:
            return list(table[cls])
    return None


def _supports(layer: Any) -> bool:
    mot = tfmot().sparsity.keras
    if isinstance(layer, mot.PrunableLayer) or hasattr(layer, "get_prunable_weights"):
        return True
    if _prunable_weight_names(layer) is not None:
        return True
    # LSTM, GRU, SimpleRNN and RNN over their cells: TF-MOT prunes each cell's
    # `kernel` and `recurrent_kernel` (exact classes only, as TF-MOT checks them).
    registry = tfmot_internal("sparsity.keras.prune_registry").PruneRegistry
    return bool(registry.supports(layer))


@dataclasses.dataclass(frozen=True)
class Prune:
    """Magnitude pruning, as a technique for `tflight.Pipeline`.

    Args:
      sparsity: a target fraction (a `ConstantSparsity` reached at the first step) or
        a schedule (`ConstantSparsity`, `PolynomialDecay`).
      m_by_n: structured sparsity, e.g. `(2, 4)`: at least 2 zeros in each 4
        consecutive weights along the input channels (needs input channels
        that are a multiple of n, other layers are unsupported; `sparsity`
        is then ignored and the mask is set at the first step).
      block_size: `(height, width)` of the blocks pruned together in 2-D
        weights (Dense kernels), e.g. `(1, 4)`.
      select: the layers to prune (see `tflight.compress.technique.Selector`); default:
        every layer with prunable weights.
      unsupported: `"raise"` (default) fails on selected layers TF-MOT cannot
        prune; `"skip"` leaves them dense, explicitly.
    """

    sparsity: float | Schedule = 0.5
    m_by_n: tuple[int, int] | None = None
    block_size: tuple[int, int] = (1, 1)
    select: Selector = None
    unsupported: str = "raise"

    provides = frozenset({"sparsity"})

    def __post_init__(self) -> None:
        if isinstance(self.sparsity, int | float) and not isinstance(self.sparsity, bool):
            check_fraction("sparsity", float(self.sparsity), low_open=True)
        elif not isinstance(self.sparsity, ConstantSparsity | PolynomialDecay):
            raise CompressionError(
                "`sparsity` must be a fraction in (0, 1), a tflight.ConstantSparsity or a "
                f"tflight.PolynomialDecay, got {self.sparsity!r}."
            )
        if self.m_by_n is not None:
            ok = (
                isinstance(self.m_by_n, tuple)
                and len(self.m_by_n) == 2
                and all(isinstance(v, int) and v > 0 for v in self.m_by_n)
                and self.m_by_n[0] < self.m_by_n[1]
            )
            if not ok:
                raise CompressionError(
                    f"`m_by_n` must be a tuple (m, n) of ints with 0 < m < n, e.g. (2, 4), "
                    f"got {self.m_by_n!r}."
                )
        ok = (
            isinstance(self.block_size, tuple)
            and len(self.block_size) == 2
            and all(isinstance(v, int) and v > 0 for v in self.block_size)
        )
        if not ok:
            raise CompressionError(
                f"`block_size` must be a tuple (height, width) of positive ints, got "
                f"{self.block_size!r}."
            )
        if self.m_by_n is not None and self.block_size != (1, 1):
            raise CompressionError(
                "`m_by_n` and `block_size` cannot be combined; choose one, got "
                f"m_by_n={self.m_by_n}, block_size={self.block_size}."
            )
        if self.unsupported not in ("raise", "skip"):
            raise CompressionError(
                f"`unsupported` must be 'raise' or 'skip', got {self.unsupported!r}."
            )
        check_selector(self.select, arg="select")

    @property
    def schedule(self) -> Schedule:
        if isinstance(self.sparsity, ConstantSparsity | PolynomialDecay):
            return self.sparsity
        return ConstantSparsity(float(self.sparsity))

    @property
    def target(self) -> float:
        if self.m_by_n is not None:
            return self.m_by_n[0] / self.m_by_n[1]
        return self.schedule.final

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
    ) -> Any:
        """Returns a pruning-wrapped tf_keras copy of `model` (see `prune`)."""
        if preserve:
            raise CompressionError(
                f"Prune must come first in a pipeline: pruning after {sorted(preserve)} would "
                "destroy them. Put tflight.Prune before tflight.Cluster and tflight.QAT."
            )
        base, flat = prepare(model, what="prune")
        rep = self.plan(base)
        rep = dataclasses.replace(rep, inlined=flat.inlined)
        targets = set(rep.wrapped)
        mot = tfmot().sparsity.keras
        params: dict[str, Any] = {"pruning_schedule": self.schedule._tfmot()}
        if self.m_by_n is not None:
            params["sparsity_m_by_n"] = self.m_by_n
        if self.block_size != (1, 1):
            params["block_size"] = self.block_size

        def wrap(layer: Any) -> Any:
            if layer.name not in targets:
                return layer
            names = _prunable_weight_names(layer)
            if (
                names is not None
                and not (
                    isinstance(layer, mot.PrunableLayer) or hasattr(layer, "get_prunable_weights")
                )
                and type(layer) not in _registry_table()
            ):
                # A subclass of a supported layer: tell TF-MOT which weights to prune.
                layer.get_prunable_weights = lambda layer=layer, names=names: [
                    getattr(layer, n) for n in names
                ]
            return mot.prune_low_magnitude(layer, **params)

        try:
            pruned = tf_keras().models.clone_model(base, clone_function=wrap)
        except ValueError as e:
            raise CompressionError(f"TF-MOT could not prune model {base.name!r}: {e}") from e
        install_guard(pruned, technique="tflight.prune")
        compile_model(pruned, compile)
        attach_report(pruned, rep)
        return pruned

    def plan(self, model: Any, *, preserve: frozenset[str] = frozenset()) -> CompressionReport:
        """Decides, without wrapping, which layers of a flat tf_keras model are pruned.

        Frozen layers (`trainable=False`) are skipped: pruning them would change
        weights that training may not repair. Layers outside `select` and, with
        `unsupported="skip"`, layers TF-MOT cannot prune are skipped too; every
        skipped layer with weights is listed with its reason.

        Raises:
          UnsupportedLayerError: with `unsupported="raise"`, selected trainable
            layers that cannot be pruned.
          CompressionError: nothing left to prune.
        """
        if preserve:
            raise CompressionError(
                f"Prune must come first in a pipeline: pruning after {sorted(preserve)} would "
                "destroy them. Put tflight.Prune before tflight.Cluster and tflight.QAT."
            )
        check_names_exist(model, self.select, arg="select")
        skipped: list[tuple[str, str]] = []
        bad: list[tuple[Any, str]] = []
        targets: list[str] = []
        frozen = [layer.name for layer in model.layers if is_frozen(layer)]
        for layer in model.layers:
            if not layer.weights:
                continue
            if not layer_matches(layer, self.select):
                skipped.append((layer.name, "not selected"))
            elif not layer.trainable:
                skipped.append((layer.name, "frozen"))
            elif not _supports(layer):
                bad.append((layer, f"TF-MOT cannot prune {type(layer).__name__}"))
            elif _prunable_weight_names(layer) == [] and not hasattr(layer, "get_prunable_weights"):
                # TF-MOT lists them (BatchNormalization, DepthwiseConv2D) to prune nothing.
                skipped.append((layer.name, f"TF-MOT prunes no weight of {type(layer).__name__}"))
            elif self.m_by_n is not None and not _fits_m_by_n(layer, self.m_by_n[1]):
                bad.append((layer, f"input channels not a multiple of {self.m_by_n[1]}"))
            else:
                targets.append(layer.name)
        if bad and self.unsupported == "raise":
            listed = ", ".join(f"{layer.name!r} ({type(layer).__name__})" for layer, _ in bad)
            why = f" with {self.m_by_n[0]}:{self.m_by_n[1]} sparsity" if self.m_by_n else ""
            reason = f"TF-MOT cannot prune these layers{why}: {listed}"
            raise UnsupportedLayerError(
                f"{reason}. Leave them dense with "
                "`unsupported='skip'`, narrow `select`, or give the layer a "
                "`get_prunable_weights()` method.",
                option="unsupported",
                layer=bad[0][0].name,
                fix="unsupported='skip'",
                kind="unsupported_layer",
                technique="prune",
                reason=reason,
                layers=tuple(layer.name for layer, _ in bad),
            )
        skipped += [(layer.name, why) for layer, why in bad]
        if not targets:
            raise CompressionError(
                f"`select`={self.select!r} picks no prunable, trainable layer in model "
                f"{model.name!r} (skipped: {dict(skipped)}); select Conv or Dense layers, or "
                "unfreeze the layers to prune."
            )
        return CompressionReport(
            technique="prune", wrapped=tuple(targets), skipped=tuple(skipped), frozen=tuple(frozen)
        )

    def callbacks(self, model: Any) -> list[Any]:
        return _callbacks(model)

    def strip(self, model: Any) -> Any:
        return strip_pruning(model)


def _fits_m_by_n(layer: Any, n: int) -> bool:
    """Rank-2 kernels need `in % n == 0` (dim 0), rank-4 ones on dim 2."""
    names = _prunable_weight_names(layer) or ["kernel"]
    for name in names:
        weight = getattr(layer, name, None)
        if weight is None:
            return False
        shape = tuple(weight.shape)
        if len(shape) == 2 and shape[0] % n == 0:
            continue
        if len(shape) == 4 and shape[2] % n == 0:
            continue
        return False
    return True


def _registry_table() -> dict[type, Any]:
    """TF-MOT's table of prunable layer classes -> weight attribute names."""
    registry = tfmot_internal("sparsity.keras.prune_registry").PruneRegistry
    return registry._LAYERS_WEIGHTS_MAP  # the only source of this table


def prune(
    model: Any,
    *,
    sparsity: float | Schedule = 0.5,
    m_by_n: tuple[int, int] | None = None,
    block_size: tuple[int, int] = (1, 1),
    select: Selector = None,
    unsupported: str = "raise",
    compile: dict[str, Any] | None = None,
) -> Any:
    """Wraps a copy of `model` for magnitude pruning.

    The returned tf_keras model zeroes the smallest-magnitude weights of the
    selected layers as training proceeds. Train it with `tflight.fit(...)` or
    pass `callbacks=tflight.callbacks(pruned)`; without them `fit` raises
    `MissingCallbackError` before the first step. TF-MOT drops the optimizer
    when wrapping, so the result is compiled only if `compile` is given.

    Args:
      model: a Keras 3 (bridged to tf_keras) or tf_keras Sequential/Functional
        model; it is not modified.
      sparsity: a fraction or a schedule (`ConstantSparsity`, `PolynomialDecay`).
      m_by_n: e.g. `(2, 4)` for 2:4 structured sparsity.
      block_size: `(h, w)` blocks pruned together, e.g. `(1, 4)`.
      select: which layers to prune (class, names or predicate).
      unsupported: `"raise"` or `"skip"` for selected layers TF-MOT cannot prune.
      compile: `Model.compile` kwargs applied to the wrapped model.

    Returns:
      The wrapped tf_keras model.

    Raises:
      CompressionError: a bad argument, or a model that is not Sequential/Functional.
      UnsupportedLayerError: selected layers that cannot be pruned (names each).

    Example:
      >>> pruned = tflight.prune(model, sparsity=tflight.PolynomialDecay(0.8, end_step=200),
      ...                        compile={"optimizer": "adam", "loss": loss})
      >>> tflight.fit(pruned, x, y, epochs=2)
      >>> small = tflight.strip_pruning(pruned)

    References:
      Zhu, Gupta. "To prune, or not to prune", 2017.
    """
    technique = Prune(
        sparsity=sparsity,
        m_by_n=m_by_n,
        block_size=block_size,
        select=select,
        unsupported=unsupported,
    )
    return technique.apply(model, compile=compile)


def strip_pruning(model: Any, *, check: bool = True, tolerance: float = 0.02) -> Any:
    """Removes the pruning wrappers and returns the plain model to convert.

    The masks are applied to the weights first, then each layer's sparsity is
    checked against its schedule's final target: a schedule that never
    reached its target (too few steps for `end_step`, a sparse `frequency`)
    raises instead of exporting a silently dense model.

    Args:
      model: a model returned by `prune` and fine-tuned.
      check: verify the achieved sparsity (default True).
      tolerance: how far below its target a layer may be.

    Returns:
      A tf_keras model with the original layer types and weight layout.

    Raises:
      CompressionError: `model` has no pruning wrappers, or (with `check`) a
        layer is more than `tolerance` below its target.
    """
    if not is_tf_keras_model(model) or not pruning_wrappers(model):
        raise CompressionError(
            f"strip_pruning expects a model returned by tflight.prune, got "
            f"{type(model).__qualname__} {getattr(model, 'name', '')!r} with no pruning wrappers."
        )
    wrappers = pruning_wrappers(model)
    for wrapper in wrappers:
        wrapper.pruning_obj.weight_mask_op()
    # NaN weights are not zeros: say that training diverged, not that pruning fell short.
    check_finite(model, stage="pruning")
    if check:
        short = [
            row
            for row in sparsity_report(model).layers
            if row.target is not None and row.sparsity < row.target - tolerance
        ]
        if short:
            listed = ", ".join(
                f"{r.layer}/{r.weight} {r.sparsity:.1%} (target {r.target:.0%})" for r in short
            )
            reason = f"Pruning did not reach its target: {listed}"
            raise CompressionError(
                f"{reason}. Fine-tune for at least the "
                "schedule's end_step (epochs * steps per epoch), make sure training used "
                "tflight.callbacks(model), or pass check=False to export anyway.",
                option="epochs",
                layer=short[0].layer,
                fix="fine-tune for at least the schedule's end_step",
                kind="target_missed",
                reason=reason,
            )
    targets = {w.layer.name: wrapper_target(w) for w in wrappers}
    stripped = tfmot().sparsity.keras.strip_pruning(model)
    object.__setattr__(stripped, TARGETS_ATTR, targets)
    rep = compression_report(model)
    if rep is not None:
        attach_report(stripped, rep)
    return stripped
