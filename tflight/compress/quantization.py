"""Quantization-aware training (QAT) and the Keras-vs-TFLite agreement check.

`qat` wraps a copy of the model with TF-MOT's default 8-bit fake-quant
scheme, so that fine-tuning learns weights and activation ranges that survive
int8 rounding. The QAT model *is* what the converter needs:
`strip_qat` checks that and hands it back; convert it with
`converters.convert(model, "int8", representative_data=...)`.

A QAT model that scores well in Keras can still disagree with its int8
`.tflite` (TF-MOT issue #368: "QAT good, TFLite bad"). `check_agreement` runs
both on the same inputs and raises when their top-1 predictions differ on more
than a set share of them, so the gap never passes silently.

References:
  Jacob et al. "Quantization and Training of Neural Networks for Efficient
  Integer-Arithmetic-Only Inference", CVPR 2018.
  Krishnamoorthi. "Quantizing deep convolutional networks for efficient
  inference: A whitepaper", 2018.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import numpy as np

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
    "check_agreement",
    "AgreementReport",
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


@dataclasses.dataclass(frozen=True)
class AgreementReport:
    """How often a Keras model and its `.tflite` pick the same class.

    Attributes:
      agreement: share of samples on which every output agrees: the same
        top-1 class (along the last axis, at every position of sequence
        outputs) for outputs with several units; for single-unit outputs, a
        difference within 5 % of the output's range.
      samples: number of samples compared.
      keras_accuracy: Keras top-1 accuracy (if labels were given; single
        output only).
      tflite_accuracy: TFLite top-1 accuracy (if labels were given).
      max_abs_diff: largest absolute difference over all outputs.
      per_output: `{output name: agreement}` for each output.
    """

    agreement: float
    samples: int
    keras_accuracy: float | None
    tflite_accuracy: float | None
    max_abs_diff: float
    per_output: dict[str, float] = dataclasses.field(default_factory=dict)

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints the agreement and, if known, both accuracies."""
        line = f"top-1 agreement Keras vs TFLite: {self.agreement:.2%} on {self.samples} samples"
        if self.keras_accuracy is not None and self.tflite_accuracy is not None:
            line += f"; accuracy Keras {self.keras_accuracy:.2%}, TFLite {self.tflite_accuracy:.2%}"
        print_fn(line)
        if len(self.per_output) > 1:
            print_fn(
                "  per output: " + ", ".join(f"{k} {v:.2%}" for k, v in self.per_output.items())
            )


def check_agreement(
    model: Any,
    tflite: Any,
    x: Any,
    *,
    y: np.ndarray | None = None,
    min_agreement: float = 0.99,
    batch_size: int = 256,
) -> AgreementReport:
    """Compares a (QAT) Keras model with its `.tflite` on the same inputs.

    Multi-input models take a list (in the Keras model's input order) or a
    dict keyed by input name; multi-output models are compared output by
    output, matched by name when the flatbuffer's signature uses the Keras
    names, otherwise by position.

    Args:
      model: the Keras model the flatbuffer was converted from.
      tflite: a `converters.ConversionResult`, `.tflite` bytes, a path or a
        `converters.TFLiteModel`.
      x: inputs, batched: an array, a list of arrays or a dict of arrays.
      y: optional integer labels (single-output models), to report both accuracies.
      min_agreement: the lowest acceptable share of agreeing samples.
      batch_size: Keras prediction batch size.

    Returns:
      An `AgreementReport`.

    Raises:
      CompressionError: agreement below `min_agreement`, bad arguments or
        outputs the two models disagree on in number or shape.

    References:
      tensorflow/model-optimization issue #368 (QAT accuracy lost in TFLite).
    """
    import converters

    if not 0.0 <= min_agreement <= 1.0:
        raise CompressionError(f"`min_agreement` must be in [0, 1], got {min_agreement!r}.")
    if isinstance(tflite, converters.TFLiteModel):
        runner = tflite
    else:
        source = getattr(tflite, "flatbuffer", tflite)
        runner = converters.TFLiteModel(source)
    keras_x, lite_x, n = _agreement_inputs(model, runner, x)
    keras_raw = model.predict(keras_x, batch_size=batch_size, verbose=0)
    keras_outs = _named_outputs(model, keras_raw)
    lite_raw = runner.predict(lite_x)
    lite_list = lite_raw if isinstance(lite_raw, list) else [lite_raw]
    lite_outs = _match_outputs(keras_outs, runner.output_names, lite_list)
    per_output: dict[str, float] = {}
    ok = np.ones(n, dtype=bool)
    max_diff = 0.0
    for (name, k_out), l_out in zip(keras_outs, lite_outs, strict=True):
        k_out = np.asarray(k_out, dtype=np.float32)
        l_out = np.asarray(l_out, dtype=np.float32)
        if k_out.shape != l_out.shape:
            raise CompressionError(
                f"Output {name!r}: the Keras model gives shape {k_out.shape} but the .tflite "
                f"gives {l_out.shape}; compare a model with the flatbuffer converted from it."
            )
        max_diff = max(max_diff, float(np.max(np.abs(k_out - l_out))) if k_out.size else 0.0)
        same = _agrees(k_out, l_out)
        per_output[name] = float(np.mean(same))
        ok &= same
    keras_acc = lite_acc = None
    if y is not None:
        if len(keras_outs) != 1:
            raise CompressionError(
                f"`y` gives labels for one output but the model has {len(keras_outs)} outputs; "
                "leave `y` out for multi-output models."
            )
        from tflight._io import class_ids

        labels = class_ids(y, n, error=CompressionError)
        k_top = np.asarray(keras_outs[0][1]).reshape(n, -1).argmax(axis=1)
        l_top = np.asarray(lite_outs[0]).reshape(n, -1).argmax(axis=1)
        keras_acc = float(np.mean(k_top == labels))
        lite_acc = float(np.mean(l_top == labels))
    report = AgreementReport(
        agreement=float(np.mean(ok)),
        samples=n,
        keras_accuracy=keras_acc,
        tflite_accuracy=lite_acc,
        max_abs_diff=max_diff,
        per_output=per_output,
    )
    if report.agreement < min_agreement:
        raise CompressionError(
            f"The .tflite disagrees with the Keras model: top-1 agreement "
            f"{report.agreement:.2%} on {report.samples} samples, below min_agreement "
            f"{min_agreement:.2%} (max |diff| {report.max_abs_diff:.4g}). Convert the QAT model "
            "itself (tflight.strip_qat) in 'int8' mode with representative data drawn "
            "from the training inputs, and fine-tune QAT for more steps so that its ranges settle."
        )
    return report


def _agreement_inputs(model: Any, runner: Any, x: Any) -> tuple[Any, Any, int]:
    """(inputs for Keras, inputs for LiteRT, samples), with one readable error on bad `x`."""
    names = [t.name.split(":")[0] for t in model.inputs]
    layer_names = list(getattr(model, "input_names", names))
    if isinstance(x, dict):
        arrays = {k: np.asarray(v) for k, v in x.items()}
        items = list(arrays.values())
    elif isinstance(x, list | tuple):
        items = [np.asarray(v) for v in x]
        arrays = None
    else:
        items = [np.asarray(x, dtype=np.float32)]
        arrays = None
    if not items or any(a.ndim < 1 or len(a) == 0 for a in items):
        raise CompressionError(
            "`x` must be a non-empty batch of inputs (an array, a list or a dict of arrays), "
            f"got shapes {[a.shape for a in items]}."
        )
    n = len(items[0])
    if any(len(a) != n for a in items):
        raise CompressionError(
            f"The arrays of `x` hold different numbers of samples: {[len(a) for a in items]}."
        )
    if len(items) != len(model.inputs):
        raise CompressionError(
            f"`x` holds {len(items)} array(s) but the model has {len(model.inputs)} input(s) "
            f"({', '.join(layer_names)})."
        )
    items = [a.astype(np.float32) if a.dtype.kind == "f" else a for a in items]
    if arrays is not None:
        arrays = {
            k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in arrays.items()
        }
        return arrays, arrays, n
    if len(items) == 1:
        return items[0], items[0], n
    lite_names = list(runner.input_names)
    if set(layer_names) == set(lite_names):
        return items, dict(zip(layer_names, items, strict=True)), n
    return items, items, n


def _named_outputs(model: Any, raw: Any) -> list[tuple[str, np.ndarray]]:
    if isinstance(raw, dict):
        order = [k for k in getattr(model, "output_names", []) if k in raw] or list(raw)
        return [(k, np.asarray(raw[k])) for k in order]
    outs = raw if isinstance(raw, list | tuple) else [raw]
    names = list(getattr(model, "output_names", []) or [])
    if len(names) != len(outs):
        names = [f"output_{i}" for i in range(len(outs))]
    return [(name, np.asarray(o)) for name, o in zip(names, outs, strict=True)]


def _match_outputs(
    keras_outs: list[tuple[str, np.ndarray]], lite_names: list[str], lite: list[np.ndarray]
) -> list[np.ndarray]:
    if len(lite) != len(keras_outs):
        raise CompressionError(
            f"The Keras model has {len(keras_outs)} output(s) but the .tflite has {len(lite)}; "
            "compare a model with the flatbuffer converted from it."
        )
    by_name = dict(zip(lite_names, lite, strict=False))
    if {name for name, _ in keras_outs} == set(by_name):
        return [by_name[name] for name, _ in keras_outs]
    shapes = [o.shape for _, o in keras_outs]
    if [o.shape for o in lite] == shapes:
        return lite
    # Outputs reordered by the converter: match each by its unique shape.
    matched = []
    for shape in shapes:
        same = [o for o in lite if o.shape == shape]
        if len(same) != 1 or shapes.count(shape) != 1:
            raise CompressionError(
                f"Cannot match the .tflite outputs {[o.shape for o in lite]} ({lite_names}) to the "
                f"Keras outputs {shapes}; name the Keras outputs so the signature keeps them."
            )
        matched.append(same[0])
    return matched


def _agrees(k_out: np.ndarray, l_out: np.ndarray) -> np.ndarray:
    """Per sample: same top-1 class everywhere, or close values for single-unit outputs."""
    n = len(k_out)
    if k_out.ndim >= 2 and k_out.shape[-1] > 1:
        same = k_out.argmax(axis=-1) == l_out.argmax(axis=-1)
        return same.reshape(n, -1).all(axis=1)
    span = float(np.max(k_out) - np.min(k_out)) if k_out.size else 0.0
    tol = 0.05 * max(span, 1e-6)
    return (np.abs(k_out - l_out).reshape(n, -1) <= tol).all(axis=1)


def _float_inputs(layer: Any) -> bool:
    """Whether every input of `layer` is a float tensor (an Embedding's ids are not)."""
    try:
        inputs = layer.input
    except (AttributeError, ValueError):
        return False
    inputs = inputs if isinstance(inputs, list | tuple) else [inputs]
    return all(getattr(getattr(t, "dtype", None), "is_floating", False) for t in inputs)

