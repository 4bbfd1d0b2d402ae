"""Quantization-aware training (QAT).

`qat` wraps a copy of the model with TF-MOT's default 8-bit fake-quant
scheme, so that fine-tuning learns weights and activation ranges that survive
int8 rounding. The QAT model *is* what the converter needs:
`strip_qat` checks that and hands it back; convert it with
`converters.convert(model, "int8", representative_data=...)`.

A QAT model that scores well in Keras can still disagree with its int8
`.tflite`: `tflight.compress.agreement.check_agreement` catches that.

References:
  Jacob et al. "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", CVPR 2018.
  Krishnamoorthi. "Quantizing deep convolutional networks for efficient
  inference: A whitepaper", 2018.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tflight._keras import is_tf_keras_model, tf_keras, tfmot, tfmot_internal
from tflight.compress.compile import compile_model
from tflight.compress.masks import preserve_concat_feeds
from tflight.compress.models import is_frozen, is_input_layer, prepare
from tflight.compress.report import CompressionReport, attach_report
from tflight.compress.technique import Selector, check_names_exist, check_selector, layer_matches
from tflight.errors import CompressionError, UnsupportedLayerError

__all__ = [
    "QAT",
    "qat",
    "strip_qat",
]


def _registry() -> Any:
    registry = tfmot_internal("quantization.keras.default_8bit.default_8bit_quantize_registry")
    return registry.Default8BitQuantizeRegistry()


def _is_quantized(model: Any) -> bool:
    kinds = (
        tfmot_internal("quantization.keras.quantize_wrapper").QuantizeWrapper,
        tfmot_internal("quantization.keras.quantize_layer").QuantizeLayer,
    )
    return any(isinstance(layer, kinds) for layer in model.layers)


@dataclasses.dataclass(frozen=True)
class QAT:
    """Quantization-aware training with the default 8-bit scheme, as a technique.

    Args:
      keep_float: layers left in float (see `tflight.compress.technique.Selector`), e.g.
        a sensitive first or last layer; default: quantize every layer.
      unsupported: `"raise"` (default) names every layer TF-MOT cannot
        quantize (LayerNormalization, Conv1D, ...); `"keep_float"` leaves
        them in float, explicitly.

    After `Prune`, the sparsity-preserving scheme (PQAT) is used; after
    `Cluster`, the cluster-preserving one (CQAT, PCQAT after both).
    """

    keep_float: Selector = None
    unsupported: str = "raise"

    provides = frozenset({"int8"})

    def __post_init__(self) -> None:
        check_selector(self.keep_float, arg="keep_float")
        if self.unsupported not in ("raise", "keep_float"):
            raise CompressionError(
                f"`unsupported` must be 'raise' or 'keep_float', got {self.unsupported!r}."
            )

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
    ) -> Any:
        """Returns a QAT-wrapped tf_keras copy of `model` (see `qat`)."""
        base, flat = prepare(model, what="quantize")
        if _is_quantized(base):
            raise CompressionError(
                f"Model {base.name!r} is already quantization-aware; apply QAT to the float model."
            )
        rep = dataclasses.replace(self.plan(base, preserve=preserve), inlined=flat.inlined)
        keep = {name for name, _ in rep.kept_float}
        mot = tfmot().quantization.keras

        no_op = tfmot_internal(
            "quantization.keras.default_8bit.default_8bit_quantize_configs"
        ).NoOpQuantizeConfig

        def annotate(layer: Any) -> Any:
            if is_input_layer(layer):
                return layer
            if layer.name in keep:
                if type(layer).__name__ == "Activation" or (preserve and _float_inputs(layer)):
                    # TF-MOT's transforms would still quantize the output of an
                    # Activation that follows a quantized layer, and its sparsity- and
                    # cluster-preserving schemes ask every layer for a quantize config:
                    # say "nothing" explicitly.
                    return mot.quantize_annotate_layer(layer, quantize_config=no_op())
                return layer
            return mot.quantize_annotate_layer(layer)

        scheme = _scheme(preserve)
        try:
            annotated = tf_keras().models.clone_model(base, clone_function=annotate)
            with mot.quantize_scope({"NoOpQuantizeConfig": no_op}):
                qat = mot.quantize_apply(annotated, scheme)
        except (ValueError, RuntimeError) as e:
            raise CompressionError(
                f"TF-MOT could not quantize model {base.name!r}: {e}. Keep the layer it names "
                "in float (`keep_float=[...]`) or convert without QAT (converters.convert "
                "'int8' or 'dynamic')."
            ) from e
        if preserve == frozenset({"sparsity"}):
            preserve_concat_feeds(qat, scheme.get_quantize_registry())
        _keep_frozen(qat, set(rep.frozen))
        if "clusters" in preserve:
            _untrain_assigned_kernels(qat)
        compile_model(qat, compile)
        attach_report(qat, rep)
        return qat

    def plan(self, model: Any, *, preserve: frozenset[str] = frozenset()) -> CompressionReport:
        """Decides, without wrapping, which layers of a flat tf_keras model are quantized.

        Frozen layers are quantized too (an int8 model quantizes every layer),
        but their weights stay untrained. InputLayers are not layers to
        quantize and are left out.

        Raises:
          UnsupportedLayerError: with `unsupported="raise"`, layers TF-MOT's
            8-bit scheme cannot quantize (named with the reason).
          CompressionError: no layer with weights left to quantize.
        """
        if self.keep_float is not None:
            check_names_exist(model, self.keep_float, arg="keep_float")
        registry = _registry()
        feeds = _inbound(model)
        kept: list[tuple[str, str]] = []
        bad: list[tuple[Any, str]] = []
        wrapped: list[str] = []
        for layer in model.layers:
            if is_input_layer(layer):
                continue
            if self.keep_float is not None and layer_matches(layer, self.keep_float):
                kept.append((layer.name, "keep_float"))
                continue
            why = _qat_unsupported(layer, registry, feeds.get(layer.name, []))
            if why:
                bad.append((layer, why))
            else:
                wrapped.append(layer.name)
        if bad and self.unsupported == "raise":
            listed = ", ".join(f"{layer.name!r} ({why})" for layer, why in bad)
            bad_kinds = {type(layer).__name__ for layer, _ in bad}
            ok = [
                k
                for k in ("Conv2D", "DepthwiseConv2D", "Dense", "BatchNormalization", "ReLU")
                if k not in bad_kinds
            ]
            reason = f"TF-MOT's 8-bit QAT does not support: {listed}"
            raise UnsupportedLayerError(
                f"{reason}. Leave them in float with "
                "`unsupported='keep_float'` (or list them in `keep_float`), or replace them "
                f"with supported layers ({', '.join(ok)}, ...).",
                option="unsupported",
                layer=bad[0][0].name,
                fix="unsupported='keep_float'",
                kind="unsupported_layer",
                technique="qat",
                reason=reason,
                layers=tuple(layer.name for layer, _ in bad),
                supported=tuple(ok),
            )
        kept += [(layer.name, why) for layer, why in bad]
        if not any(model.get_layer(name).weights for name in wrapped):
            raise CompressionError(
                f"No layer with weights is left to quantize in model {model.name!r} "
                f"(kept float: {sorted(name for name, _ in kept)})."
            )
        frozen = tuple(layer.name for layer in model.layers if is_frozen(layer))
        return CompressionReport(
            technique="qat", wrapped=tuple(wrapped), kept_float=tuple(kept), frozen=frozen
        )

    def callbacks(self, model: Any) -> list[Any]:
        return []

    def strip(self, model: Any) -> Any:
        return strip_qat(model)


def _scheme(preserve: frozenset[str]) -> Any:
    mot = tfmot()
    if "clusters" in preserve:
        return mot.experimental.combine.Default8BitClusterPreserveQuantizeScheme(
            preserve_sparsity="sparsity" in preserve
        )
    if "sparsity" in preserve:
        return mot.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
    return mot.quantization.keras.default_8bit.Default8BitQuantizeScheme()


_QAT_ACTIVATIONS = frozenset(
    {"relu", "swish", "gelu", "relu6", "linear", "softmax", "sigmoid", "tanh"}
)


def _inbound(model: Any) -> dict[str, list[Any]]:
    """`{layer name: layers feeding it}` within `model`'s own graph."""
    feeds: dict[str, list[Any]] = {}
    for nodes in getattr(model, "_nodes_by_depth", {}).values():
        for node in nodes:
            if not node.is_input:
                feeds.setdefault(node.layer.name, []).extend(_as_list(node.inbound_layers))
    return feeds


def _as_list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) else [value]


_BN_FOLDS = {"Conv2D", "DepthwiseConv2D", "Dense"}


def _qat_unsupported(layer: Any, registry: Any, feeds: list[Any]) -> str | None:
    """None if the default 8-bit scheme quantizes `layer`, else why not."""
    kind = type(layer).__name__
    if kind in ("BatchNormalization", "SyncBatchNormalization"):
        # TF-MOT quantizes BatchNormalization only folded into the linear
        # Conv2D/DepthwiseConv2D/Dense that feeds it (its transforms), never alone.
        src = feeds[0] if len(feeds) == 1 else None
        if (
            src is not None
            and type(src).__name__ in _BN_FOLDS
            and getattr(getattr(src, "activation", None), "__name__", "") == "linear"
        ):
            return None
        return (
            "BatchNormalization not directly after a Conv2D/DepthwiseConv2D/Dense without "
            "activation: TF-MOT folds it only there"
        )
    if not registry.supports(layer):
        base = next(
            (c.__name__ for c in type(layer).__mro__[1:] if registry._is_supported_layer(c)), None
        )
        if base is not None:
            return f"{kind}, a subclass of {base}: TF-MOT matches exact classes only"
        return f"{kind}: no 8-bit rule in TF-MOT"
    if kind == "Activation":
        name = getattr(layer.activation, "__name__", None)
        if name not in _QAT_ACTIVATIONS:
            shown = (
                name or getattr(layer.activation, "name", None) or type(layer.activation).__name__
            )
            return f"Activation {shown!r}: no 8-bit rule in TF-MOT"
    return None


def _move_to_non_trainable(layer: Any, variables: list[Any]) -> None:
    ids = {id(v) for v in variables}
    moved = [w for w in layer._trainable_weights if id(w) in ids]
    if not moved:
        return
    # object.__setattr__: Keras' own __setattr__ would track the lists again.
    object.__setattr__(
        layer, "_trainable_weights", [w for w in layer._trainable_weights if id(w) not in ids]
    )
    object.__setattr__(layer, "_non_trainable_weights", list(layer._non_trainable_weights) + moved)


def _untrain_assigned_kernels(qat: Any) -> None:
    """Cluster-preserving QAT: the kernels it overwrites are not trained variables.

    TF-MOT's cluster-preserving quantizer trains its own copy of the original
    weights and the centroids, and *assigns* the clustered result to the
    layer's kernel at each step; the kernel itself gets no gradient, so Keras
    warns "Gradients do not exist for variables ... kernel" on every step.
    Listing those kernels as non-trainable states what they are; training
    still writes the clustered values into them.
    """
    centroids = tfmot_internal(
        "quantization.keras.collab_opts.cluster_preserve.cluster_preserve_quantize_registry"
    ).CLUSTER_CENTROIDS
    for layer in qat.layers:
        assigned = [
            weight
            for weight, _, qvars in getattr(layer, "_weight_vars", [])
            if isinstance(qvars, dict) and centroids in qvars
        ]
        if assigned:
            _move_to_non_trainable(layer, assigned)
            _move_to_non_trainable(layer.layer, assigned)


def _keep_frozen(qat: Any, frozen: set[str]) -> None:
    """Frozen layers stay frozen inside their QuantizeWrapper.

    QuantizeWrapperV2 lists the inner layer's kernel among its own trainable
    weights whatever the inner layer's `trainable` flag: move those variables
    (not the quantizer ranges) where the optimizer does not reach them.
    """
    if not frozen:
        return
    for layer in qat.layers:
        inner = getattr(layer, "layer", None)
        if inner is None or inner.name not in frozen:
            continue
        inner.trainable = False
        _move_to_non_trainable(layer, list(inner.weights))


def qat(
    model: Any,
    *,
    keep_float: Selector = None,
    unsupported: str = "raise",
    compile: dict[str, Any] | None = None,
) -> Any:
    """Wraps a copy of `model` for 8-bit quantization-aware training.

    TF-MOT drops the optimizer when wrapping, so the result is compiled only
    if `compile` is given. QAT needs no callback.

    Convert a whole-model QAT model in `"int8"` mode. With `keep_float`,
    convert in `"dynamic"` mode: the QAT layers become int8 from their learned
    ranges and the kept layers stay float; `"int8"` would quantize the kept
    layers post-training, which the QAT model never saw (`check_agreement`
    reports the gap).

    Args:
      model: a Keras 3 (bridged to tf_keras) or tf_keras Sequential/Functional
        model; it is not modified.
      keep_float: layers to leave in float (class, names or predicate).
      unsupported: `"raise"` or `"keep_float"` for layers TF-MOT cannot quantize.
      compile: `Model.compile` kwargs applied to the wrapped model.

    Returns:
      The QAT tf_keras model.

    Raises:
      UnsupportedLayerError: layers the scheme cannot quantize (names each).
      CompressionError: bad arguments or an unsupported model.

    Example:
      >>> qat = tflight.qat(model, compile={"optimizer": "adam", "loss": loss})
      >>> tflight.fit(qat, x, y, epochs=1)
      >>> result = converters.convert(tflight.strip_qat(qat), "int8",
      ...                             representative_data=x[:200])
      >>> tflight.check_agreement(qat, result, x_test)

    References:
      Jacob et al. "Quantization and Training of Neural Networks for Efficient
      Integer-Arithmetic-Only Inference", CVPR 2018.
    """
    return QAT(keep_float=keep_float, unsupported=unsupported).apply(model, compile=compile)


def strip_qat(model: Any) -> Any:
    """Returns the QAT model in the form the converter expects.

    The fake-quant wrappers carry the learned ranges the converter turns into
    int8 scales, so nothing is removed: this checks that `model` really is a
    QAT model and returns it, so that every technique ends with a strip.

    Args:
      model: a model returned by `quantize` (or a pipeline ending in QAT).

    Returns:
      `model` itself.

    Raises:
      CompressionError: `model` is not quantization-aware.
    """
    if not is_tf_keras_model(model) or not _is_quantized(model):
        raise CompressionError(
            f"strip_qat expects a model returned by tflight.quantize / tflight.qat, got "
            f"{type(model).__qualname__} {getattr(model, 'name', '')!r} without QAT wrappers."
        )
    return model


def _float_inputs(layer: Any) -> bool:
    """Whether every input of `layer` is a float tensor (an Embedding's ids are not)."""
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return False
    inputs = inputs if isinstance(inputs, list | tuple) else [inputs]
    return all(getattr(getattr(t, "dtype", None), "is_floating", False) for t in inputs)

