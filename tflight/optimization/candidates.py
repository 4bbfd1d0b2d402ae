"""The candidates `optimize` can try, and how each one is built from the earlier stages.

A candidate is a small frozen `Spec` (its name, the technique, the final
storage, its parameters) plus a builder. PTQ candidates and the
mixed-precision search need no training; the others fine-tune. A training
candidate's architecture is fixed before it trains (channel pruning and low
rank change shapes, QAT and clustering keep them), so `shape_of` converts the
untrained structure to predict its size and latency: the search trains it
only if that prediction can beat the best candidate found so far.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from tflight.optimization import training
from tflight.optimization.inputs import Device, OptimizeError, Prepared

__all__ = ["Built", "Context", "Spec", "build", "plan", "shape_of"]

_CALIBRATION = 200


@dataclasses.dataclass(frozen=True)
class Spec:
    """One candidate: what it is, before it is built.

    Attributes:
      name: short unique name (also the file name of its `.tflite`).
      technique: what a person would call it.
      kind: "ptq" (no training), "search" (the mixed-precision search) or "train".
      storage: the final `.tflite` storage: fp32, fp16, dynamic, int8, int16x8,
        mixed or int4.
      params: the technique's settings (ratios, clusters, distillation).
    """

    name: str
    technique: str
    kind: str
    storage: str
    params: tuple[tuple[str, Any], ...] = ()

    @property
    def full_int8(self) -> bool:
        return self.storage == "int8"

    def param(self, key: str, default: Any = None) -> Any:
        return dict(self.params).get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "technique": self.technique, "kind": self.kind,
                "storage": self.storage, "params": dict(self.params)}


@dataclasses.dataclass
class Built:
    """A built candidate: its flatbuffer and what it did to each layer."""

    flatbuffer: bytes
    layers: list[dict[str, Any]]
    kept_float: list[tuple[str, str]]
    notes: list[str]
    train_seconds: float = 0.0


@dataclasses.dataclass
class Context:
    """What builders share: the checked inputs, the device, settings and reusable pieces."""

    data: Prepared
    device: Device
    objective: str
    max_drop: float
    confidence: float
    epochs: int
    strategy: Any
    seed: int
    progress: Callable[[str], None] | None
    memo: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def calibration(self) -> np.ndarray:
        return self.data.x_train[:_CALIBRATION]


def _leaf_layers(model: Any) -> list[Any]:
    """Every layer of `model`, nested models' layers included (not the nested models)."""
    out = []
    for layer in model.layers:
        out.extend(_leaf_layers(layer) if hasattr(layer, "layers") else [layer])
    return out


def _dense_share(model: Any) -> float:
    """Share of the weights in Dense kernels (low rank pays only on Dense-heavy models)."""
    total = dense = 0
    for layer in _leaf_layers(model):
        for w in layer.weights:
            n = int(np.prod(w.shape))
            total += n
            if type(layer).__name__ == "Dense" and "kernel" in w.name:
                dense += n
    return dense / total if total else 0.0


def _residual_blocks(model: Any) -> int:
    """How many residual blocks depth pruning could drop (top-level Keras 3 graphs only)."""
    from tflight._keras import is_tf_keras_model

    if is_tf_keras_model(model):
        return 0
    from tflight.shrink import residual_blocks

    return len(residual_blocks(model))


def _has_conv(model: Any) -> bool:
    """Whether channel pruning may apply: a convolution anywhere, backbones included."""
    return any("Conv" in type(layer).__name__ for layer in _leaf_layers(model))


def plan(ctx: Context, only: tuple[str, ...] | None = None) -> list[Spec]:
    """The candidates that apply to this model, device and objective, cheap ones first."""
    model, device = ctx.data.model, ctx.device
    specs = [
        Spec("int8", "PTQ full int8", "ptq", "int8"),
        Spec("dynamic", "PTQ dynamic range", "ptq", "dynamic"),
        Spec("fp16", "PTQ float16 weights", "ptq", "fp16"),
        Spec("int16x8", "PTQ 16x8", "ptq", "int16x8"),
        Spec("mixed", "mixed-precision search", "search", "mixed"),
        Spec("int4", "PTQ int4 weights (int8 elsewhere)", "ptq", "int4"),
        Spec("qat-int8", "QAT -> int8", "train", "int8"),
    ]
    if _residual_blocks(model) >= 2:
        # Small mobile models pay per op more than per MAC: fewer blocks, fewer ops.
        for share in (0.5, 0.75, 1.0):
            tag = round(100 * share)
            specs.append(Spec(f"depth{tag}-distill-int8", f"drop {share:.0%} of the residual "
                              "blocks (those that change the predictions least) + distillation "
                              "from the original -> int8", "train", "int8",
                              (("depth", share), ("distill", True))))
    if _has_conv(model):
        for keep in (0.6, 0.35):
            tag = round(100 * keep)
            specs.append(Spec(f"channels{tag}-int8", f"channel pruning to {keep:.0%} of the "
                              "estimated cost (sensitivity-allocated) + fine-tune -> int8",
                              "train", "int8", (("keep", keep),)))
        specs.append(Spec("channels60-distill-int8", "channel pruning to 60% + distillation "
                          "from the original -> int8", "train", "int8",
                          (("keep", 0.6), ("distill", True))))
        specs.append(Spec("channels35-qat-int8", "channel pruning to 35% + fine-tune -> QAT "
                          "-> int8", "train", "int8", (("keep", 0.35), ("qat", True))))
    if _dense_share(model) > 0.5:
        specs.append(Spec("lowrank-int8", "low rank (90% energy) + fine-tune -> int8", "train",
                          "int8", (("energy", 0.9),)))
    if ctx.objective == "size":
        specs.append(Spec("cqat-int4", "16 clusters -> QAT -> int4 weights", "train", "int4",
                          (("clusters", 16),)))
        specs.append(Spec("pcqat-int4", "prune 50% (ramped) -> 16 clusters -> QAT -> int4",
                          "train", "int4", (("clusters", 16), ("sparsity", 0.5))))
        if _has_conv(model):
            specs.append(Spec("channels60-int4", "channel pruning to 60% + fine-tune -> int4",
                              "train", "int4", (("keep", 0.6),)))
    if device.target == "edgetpu":
        specs = [s for s in specs if s.full_int8]
    elif device.target == "gpu":
        specs = [s for s in specs if s.storage not in ("int16x8", "int4", "mixed")]
    if only is not None:
        specs = [s for s in specs if s.name in only]
    return specs


# ---------------------------------------------------------------------------
# Building blocks.


def _convert(ctx: Context, model: Any, storage: str, *, validate: bool = True) -> bytes:
    import converters

    if storage == "int4":
        from tflight.precision import quantize_int4

        return quantize_int4(model, calibration_data=ctx.calibration).flatbuffer
    # The accelerator targets fix every shape (batch 1) and, for the Edge TPU, int8 I/O.
    target = ctx.device.target
    result = converters.convert(
        model, storage, representative_data=ctx.calibration, target=target,
        validate=validate, sample_data=ctx.data.x_val[:32] if validate else None,
    )
    return result.flatbuffer


# A SeparableConv2D's pointwise kernel is the one pruning acts on.
_KERNEL_ROLES = ("kernel", "pointwise_kernel", "depthwise_kernel")


def _layer_rows(model: Any, precision: str | dict[str, str],
                channels: dict[str, tuple[int, int]] | None = None) -> list[dict[str, Any]]:
    """One row per layer with a kernel: precision, output channels (before -> after), sparsity."""
    rows = []
    for layer in getattr(model, "layers", []):
        # Only the kernel itself: QAT and clustering add scalars such as `kernel_min`.
        kernels = [w for w in layer.weights
                   if w.name.split("/")[-1].split(":")[0] in _KERNEL_ROLES and len(w.shape) >= 2]
        kernels.sort(key=lambda w: _KERNEL_ROLES.index(w.name.split("/")[-1].split(":")[0]))
        if not kernels:
            continue
        k = np.asarray(kernels[0].numpy() if hasattr(kernels[0], "numpy") else kernels[0])
        name = layer.name
        p = precision.get(name, "float") if isinstance(precision, dict) else precision
        before, after = (channels or {}).get(name, (int(k.shape[-1]), int(k.shape[-1])))
        rows.append({"layer": name, "type": type(layer).__name__, "precision": p,
                     "channels_before": before, "channels_after": after,
                     "sparsity": float(np.mean(k == 0)) if k.size else 0.0})
    return rows


def _compile_args(model: Any) -> dict[str, Any]:
    import keras

    return {"optimizer": keras.optimizers.Adam(1e-4),
            "loss": keras.losses.SparseCategoricalCrossentropy(from_logits=training.from_logits(model))}


def _steps(ctx: Context, batch: int = 32) -> int:
    return max(1, -(-len(ctx.data.x_train) // batch))


def _channel_model(ctx: Context, keep: float) -> tuple[Any, dict[str, tuple[int, int]], list]:
    """The untrained channel-pruned structure keeping `keep` of the cost, memoised."""
    key = f"channels:{keep}"
    if key in ctx.memo:
        return ctx.memo[key]
    from tflight.shrink import channel_sensitivity, prune_channels

    model, d = ctx.data.model, ctx.data
    kept: list[tuple[str, str]] = []
    if "sensitivity" not in ctx.memo:
        ctx.memo["sensitivity"] = channel_sensitivity(model, d.x_val, d.y_val,
                                                      data=d.x_train[:256])
    sens = ctx.memo["sensitivity"]
    if not sens.groups:
        raise OptimizeError("channel pruning finds no channel group it can cut in this model "
                            "(custom or unsupported layers hold every convolution)",
                            kind="not_applicable")
    from tflight.errors import TflightError

    try:
        if ctx.objective == "latency":
            ratios = sens.allocate(latency_target=keep, profile=ctx.device.profile)
        else:
            ratios = sens.allocate(params_target=keep)
    except TflightError as e:
        # Small models: fixed per-op costs can keep the estimate above the target
        # whatever is cut; fall back to one ratio keeping `keep` of the MACs.
        ratios = round(1.0 - keep ** 0.5, 3)
        kept.append(("(all groups)", f"sensitivity allocation could not reach {keep:.0%} "
                     f"({' '.join(str(e).split())}); every group cut by {ratios:.0%}"))
    result = prune_channels(model, ratio=ratios, data=d.x_train[:256])
    channels: dict[str, tuple[int, int]] = {}
    for g in result.groups:
        for layer in g.layers:
            channels[layer] = (g.before, g.after)
        if g.before == g.after:
            kept.append((", ".join(g.layers), "channels not cut: the sensitivity allocation "
                         "kept this group whole"))
    ctx.memo[key] = (result.model, channels, kept)
    return ctx.memo[key]


def _depth_model(ctx: Context, share: float) -> tuple[Any, list[str]]:
    """The model without `share` of its residual blocks (the least harmful first), memoised.

    Blocks are ranked on training samples against the model's own predictions:
    the validation data that judges the candidate plays no part in the choice.
    """
    key = f"depth:{share}"
    if key not in ctx.memo:
        from tflight.shrink import drop_blocks, rank_blocks

        if "depth_ranking" not in ctx.memo:
            ctx.memo["depth_ranking"] = rank_blocks(ctx.data.model, ctx.data.x_train[:256])
        ranked = [name for name, _ in ctx.memo["depth_ranking"]]
        dropped = ranked[: max(1, round(share * len(ranked)))]
        ctx.memo[key] = (drop_blocks(ctx.data.model, dropped), dropped)
    return ctx.memo[key]


def _lowrank_model(ctx: Context, energy: float) -> tuple[Any, list]:
    key = f"lowrank:{energy}"
    if key not in ctx.memo:
        from tflight.shrink import factorize

        result = factorize(ctx.data.model, energy=energy)
        kept = [(lr.name, "not factorized: the rank needed for the energy saves no MACs")
                for lr in result.layers if not lr.factorized]
        if not any(lr.factorized for lr in result.layers):
            raise OptimizeError("low rank saves nothing on this model", kind="not_applicable")
        ctx.memo[key] = (result.model, kept)
    return ctx.memo[key]


def shape_of(spec: Spec, ctx: Context) -> bytes | None:
    """The untrained structure of a training candidate, converted (for size / latency), or None."""
    if spec.kind != "train":
        return None
    if spec.param("keep") is not None:
        model = _channel_model(ctx, spec.param("keep"))[0]
    elif spec.param("depth") is not None:
        model = _depth_model(ctx, spec.param("depth"))[0]
    elif spec.param("energy") is not None:
        model = _lowrank_model(ctx, spec.param("energy"))[0]
    else:
        model = ctx.data.model  # QAT / clustering keep the architecture
    return _convert(ctx, model, spec.storage, validate=False)


def _qat(ctx: Context, model: Any, label: str, techniques: list | None = None) -> tuple[Any, list]:
    """QAT (after optional prune / cluster) with TF-MOT through `tflight.compress`."""
    from tflight._keras import tf_keras
    from tflight.compress import QAT, Pipeline

    training.refuse_under_strategy(label, ctx.strategy)
    stages = [*(techniques or []), QAT(unsupported="keep_float")]
    epochs = max(2, ctx.epochs // 2)
    out = Pipeline(stages).fit(
        model, ctx.data.x_train, ctx.data.y_train, compile=_compile_args(model),
        epochs=epochs, batch_size=32, verbose=0,
        callbacks=training.progress_callback(tf_keras(), ctx.progress, label, epochs),
    )
    kept = [pair for r in out.reports for pair in (*r.kept_float, *r.skipped)]
    return out.model, kept


def build(spec: Spec, ctx: Context) -> Built:
    """Builds one candidate's `.tflite`; raises `OptimizeError` (or a library error) if it cannot."""
    model, d = ctx.data.model, ctx.data
    if spec.kind == "ptq":
        content = _convert(ctx, model, spec.storage)
        notes = []
        if spec.storage == "int4":
            notes.append("int4 weights on FULLY_CONNECTED and CONV_2D, int8 elsewhere")
        precision = {"int4": "int4 / int8"}.get(spec.storage, spec.storage)
        return Built(content, _layer_rows(model, precision), [], notes)
    if spec.kind == "search":
        from tflight.precision import search_precision

        result = search_precision(
            model, d.x_val, d.y_val, max_drop=ctx.max_drop, confidence=ctx.confidence,
            calibration_data=ctx.calibration, test_data=(d.x_val, d.y_val),
            objective=ctx.objective, profile=ctx.device.profile, seed=ctx.seed,
        )
        assignment = {k: v.value for k, v in result.assignment.items()}
        why = ("quantizing it cost accuracy" if ctx.objective == "size" else
               "the fastest mix it found within the budget (estimated) keeps it float")
        kept = [(k, f"kept float by the mixed-precision search: {why}")
                for k, v in assignment.items() if v == "float"]
        kept += [(k, f"litert-quantizer stored it as {v}, not as assigned")
                 for k, v in result.model.not_as_assigned.items()]
        rows = [{"layer": k, "type": "", "precision": v, "channels_before": None,
                 "channels_after": None, "sparsity": None} for k, v in assignment.items()]
        return Built(result.model.flatbuffer, rows, kept,
                     [f"mixed-precision search: {result.evaluations} configurations built and "
                      "run in LiteRT on the validation data"])
    start = time.perf_counter()
    kept: list[tuple[str, str]] = []
    channels = None
    label = spec.name
    notes: list[str] = []
    if spec.param("keep") is not None or spec.param("depth") is not None:
        if spec.param("depth") is not None:
            student, dropped = _depth_model(ctx, spec.param("depth"))
            notes.append(f"dropped {len(dropped)} residual block(s), ranked on training "
                         f"samples: {', '.join(dropped)}")
        else:
            student, channels, kept = _channel_model(ctx, spec.param("keep"))
        if spec.param("distill"):
            from tflight.shrink import fine_tune

            training.refuse_under_strategy("distillation (tflight.shrink.fine_tune)",
                                           ctx.strategy)
            # fine_tune trains in place (and returns the History): train a copy, so the
            # memoised structure stays untrained for the other candidates.
            import keras

            from tflight._keras import is_tf_keras_model, tf_keras

            k = tf_keras() if is_tf_keras_model(student) else keras
            copy = k.models.clone_model(student)
            copy.set_weights(student.get_weights())
            fine_tune(copy, d.x_train, d.y_train, teacher=model, epochs=ctx.epochs)
            student = copy
        else:
            student = training.fit(student, d.x_train, d.y_train, epochs=ctx.epochs,
                                   strategy=ctx.strategy, seed=ctx.seed, progress=ctx.progress,
                                   label=label)
        if spec.param("qat"):
            student, more = _qat(ctx, student, f"{label} QAT")
            kept += more
    elif spec.param("energy") is not None:
        student, kept = _lowrank_model(ctx, spec.param("energy"))
        student = training.fit(student, d.x_train, d.y_train, epochs=ctx.epochs,
                               strategy=ctx.strategy, seed=ctx.seed, progress=ctx.progress,
                               label=label)
    else:
        from tflight.compress import Cluster, PolynomialDecay, Prune

        techniques = []
        if spec.param("sparsity") is not None:
            end = max(1, max(2, ctx.epochs // 2) - 1) * _steps(ctx)
            techniques.append(Prune(sparsity=PolynomialDecay(spec.param("sparsity"),
                                                             end_step=end),
                                    unsupported="skip"))
        if spec.param("clusters") is not None:
            techniques.append(Cluster(n_clusters=spec.param("clusters"), unsupported="skip"))
        student, kept = _qat(ctx, model, label, techniques)
    seconds = time.perf_counter() - start
    content = _convert(ctx, student, spec.storage)
    precision = "int4 / int8" if spec.storage == "int4" else spec.storage
    return Built(content, _layer_rows(student, precision, channels), kept,
                 [*notes, f"fine-tuned {ctx.epochs} epochs" if spec.param("qat") is None
                  and spec.param("clusters") is None else "trained with TF-MOT"],
                 train_seconds=seconds)
