"""What every compression technique shares: selection, callbacks, fit, pipelines.

Each technique (`tflight.Prune`, `tflight.QAT`, `tflight.Cluster`) is a frozen
dataclass with the same small protocol:

* `apply(model, *, preserve=frozenset(), compile=None)` returns a new, wrapped
  tf_keras model ready for fine-tuning (the user's model is never modified);
* `callbacks(model)` lists the Keras callbacks the wrapped model needs in `fit`;
* `strip(model)` returns the plain model to hand to `converters.convert`;
* `provides` names the property it leaves in the weights (``"sparsity"``,
  ``"clusters"``) so that a later technique can preserve it.

A `Pipeline` is a list of techniques applied in order, each fine-tuned and
stripped before the next one starts, in the spirit of optax's `chain`. Prune →
QAT becomes sparsity-preserving QAT (PQAT), Cluster → QAT cluster-preserving QAT
(CQAT), and Prune → Cluster → QAT the full PCQAT.

Training a wrapped model that needs a callback without it fails at the start of
`fit` with `MissingCallbackError`; `tflight.callbacks(model)` and `tflight.fit`
supply what is needed, so nothing is coupled behind the user's back.

References:
  Han, Mao, Dally. "Deep Compression: Compressing Deep Neural Networks with
  Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
  TensorFlow Model Optimization, "Collaborative optimization" guide.
"""

from __future__ import annotations

import dataclasses
import types
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from tflight._keras import is_keras3_model, is_tf_keras_model, tf_keras, tfmot, tfmot_internal
from tflight.compress.rezero import check_refills, measure_refills, pruned_masks, rezero
from tflight.errors import CompressionError, MissingCallbackError

__all__ = [
    "CompressionReport",
    "Selector",
    "Technique",
    "Pipeline",
    "PipelineResult",
    "StageResult",
    "callbacks",
    "fit",
    "freeze",
    "report",
    "selected_layers",
]

Selector = type | tuple[type, ...] | str | Sequence[str] | Callable[[Any], bool] | None
"""Which layers a technique touches.

* a layer class or a tuple of classes: every layer that is an *instance* of
  one of them (a subclass of `Conv2D` is still a `Conv2D`); Keras 3 classes
  are matched by name against the tf_keras rebuild;
* a name or a list of names: those layers (unknown names are an error);
* a predicate `f(layer) -> bool`;
* `None`: every layer the technique supports.
"""

_GUARD_ATTR = "_tflight_required_callbacks"


@runtime_checkable
class Technique(Protocol):
    """The protocol shared by `Prune`, `QAT` and `Cluster`."""

    provides: frozenset[str]

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
    ) -> Any: ...

    def plan(self, model: Any, *, preserve: frozenset[str] = frozenset()) -> Any: ...

    def callbacks(self, model: Any) -> list[Any]: ...

    def strip(self, model: Any) -> Any: ...


# --------------------------------------------------------------------------
# Models in, models out.


_OWNED_ATTR = "_tflight_owned"


def _own(model: Any) -> Any:
    """Marks a model the library made (not the user's): techniques may wrap it in place."""
    object.__setattr__(model, _OWNED_ATTR, True)
    return model


def _as_tf_keras(model: Any, *, what: str) -> Any:
    """A fresh tf_keras copy of `model` (Keras 3 through the bridge)."""
    if is_keras3_model(model):
        from tflight.bridge.core import to_tf_keras

        return to_tf_keras(model)
    if is_tf_keras_model(model):
        if getattr(model, _OWNED_ATTR, False):
            return model  # an intermediate model of a pipeline: ours to wrap
        return _clone(model, what=what)
    raise CompressionError(
        f"{what} expects a Keras 3 or tf_keras model, got {type(model).__module__}."
        f"{type(model).__qualname__}. Build the model with `keras` or `tf_keras`, or load it "
        "first with `keras.models.load_model(path)`."
    )


def _prepare(model: Any, *, what: str) -> tuple[Any, Any]:
    """A fresh, flat tf_keras copy of `model` and the `FlattenResult` that made it.

    Nested Functional/Sequential sub-models (a backbone inside a new head,
    keras-hub blocks) are inlined so that every technique reaches their layers.
    """
    from tflight.bridge.flattening import flatten

    base = _as_tf_keras(model, what=what)
    try:
        result = flatten(base)
    except ValueError as e:
        raise CompressionError(f"{what} cannot reach inside model {base.name!r}: {e}.") from e
    return result.model, result


def _is_input_layer(layer: Any) -> bool:
    return type(layer).__name__ == "InputLayer"


def _frozen(layer: Any) -> bool:
    return bool(layer.weights) and not layer.trainable


def _clone(model: Any, *, what: str) -> Any:
    """Clones a tf_keras Sequential/Functional model with its weights."""
    k = tf_keras()
    if not (isinstance(model, k.Sequential) or getattr(model, "_is_graph_network", False)):
        raise CompressionError(
            f"{what} supports Sequential and Functional models only; "
            f"{model.name!r} is a subclassed {type(model).__qualname__}. Rebuild it with the "
            "functional API (`keras.Model(inputs, outputs)`) or as a `keras.Sequential`."
        )
    mot = tfmot()
    with (
        mot.quantization.keras.quantize_scope(),
        mot.clustering.keras.cluster_scope(),
        mot.sparsity.keras.prune_scope(),
    ):
        clone = k.models.clone_model(model)
    try:
        clone.set_weights(model.get_weights())
    except ValueError:
        # Some layers (MultiHeadAttention after TF-MOT's strip) list their
        # weights in another order than a fresh build: copy them by name.
        for source, target in zip(model.layers, clone.layers, strict=True):
            by_name = {_short_name(w): w for w in source.weights}
            for w in target.weights:
                w.assign(by_name[_short_name(w)])
    return clone


def _short_name(variable: Any) -> str:
    """A variable's name inside its layer: `mha/query/kernel:0` -> `query/kernel`."""
    return variable.name.split(":")[0].split("/", 1)[-1]


def _compile(model: Any, compile: dict[str, Any] | None) -> None:
    """Compiles a tf_keras model with `compile` kwargs (Keras 3 objects translated)."""
    if compile is None:
        return
    if not isinstance(compile, dict):
        raise CompressionError(
            f"`compile` must be a dict of `Model.compile` keyword arguments, got "
            f"{type(compile).__name__}. Example: compile={{'optimizer': 'adam', "
            "'loss': 'sparse_categorical_crossentropy'}."
        )
    kwargs = {key: _translate(key, value) for key, value in compile.items()}
    try:
        model.compile(**kwargs)
    except (TypeError, ValueError) as e:
        raise CompressionError(
            f"Could not compile the compressed model with {compile!r}: {e}"
        ) from e


def _translate(key: str, value: Any) -> Any:
    """Keras 3 optimizer/loss/metric objects -> tf_keras equivalents, via their config."""
    if isinstance(value, list | tuple):
        return type(value)(_translate(key, v) for v in value)
    module = type(value).__module__.split(".")[0]
    if module != "keras":
        return value
    import inspect

    k = tf_keras()
    namespaces = {"optimizer": k.optimizers, "loss": k.losses, "metrics": k.metrics}
    if key not in namespaces:
        return value
    name = type(value).__name__
    cls = getattr(namespaces[key], name, None)
    try:
        if cls is None:
            raise ValueError(f"tf_keras.{namespaces[key].__name__.split('.')[-1]} has no {name}")
        accepted = inspect.signature(cls.__init__).parameters
        config = {
            arg: val
            for arg, val in value.get_config().items()
            if arg in accepted and arg != "name" and val is not None
        }
        return cls(**config)
    except Exception as e:  # noqa: BLE001 - any failure means "cannot translate"
        raise CompressionError(
            f"The Keras 3 {key} {name} has no tf_keras equivalent ({e}). "
            f"Pass a string (e.g. 'adam') or a tf_keras object as `compile[{key!r}]`."
        ) from e


# --------------------------------------------------------------------------
# Selection.


def _layer_matches(layer: Any, select: Selector) -> bool:
    if select is None:
        return True
    if isinstance(select, type):
        select = (select,)
    if isinstance(select, tuple) and all(isinstance(s, type) for s in select):
        return any(_isinstance(layer, cls) for cls in select)
    if isinstance(select, str):
        return layer.name == select
    if callable(select):
        return bool(select(layer))
    return layer.name in set(select)


def _isinstance(layer: Any, cls: type) -> bool:
    if isinstance(layer, cls):
        return True
    # A Keras 3 class given for a tf_keras layer (the model went through the
    # bridge): match the class name anywhere in the layer's MRO.
    if cls.__module__.split(".")[0] == "keras":
        return any(c.__name__ == cls.__name__ for c in type(layer).__mro__)
    return False


def _check_selector(select: Selector, *, arg: str) -> None:
    if select is None or callable(select) or isinstance(select, str):
        return
    if isinstance(select, tuple) and select and all(isinstance(s, type) for s in select):
        return
    if isinstance(select, Sequence) and select and all(isinstance(s, str) for s in select):
        return
    raise CompressionError(
        f"`{arg}` must be a layer class, a tuple of classes, a layer name, a list of names, "
        f"a predicate `f(layer) -> bool` or None, got {select!r}."
    )


def _check_names_exist(model: Any, select: Selector, *, arg: str) -> None:
    names = [select] if isinstance(select, str) else select
    if select is None or callable(select) or isinstance(select, type | tuple):
        return
    known = {layer.name for layer in model.layers}
    # Wrapped layers answer to the name of the layer they wrap, too.
    known |= {
        layer.layer.name for layer in model.layers if hasattr(getattr(layer, "layer", None), "name")
    }
    missing = [n for n in names if n not in known]
    if missing:
        raise CompressionError(
            f"`{arg}` names layers that are not in model {model.name!r}: {missing}. "
            f"Its layers are: {sorted(known)}."
        )


def selected_layers(model: Any, select: Selector = None) -> list[str]:
    """Names of the top-level layers of `model` that `select` picks.

    Args:
      model: a Keras 3 or tf_keras model.
      select: a `Selector` (class, tuple of classes, name(s), predicate or None).

    Returns:
      The names, in model order.

    Raises:
      CompressionError: `select` is malformed or names layers the model lacks.
    """
    _check_selector(select, arg="select")
    _check_names_exist(model, select, arg="select")
    return [layer.name for layer in model.layers if _layer_matches(layer, select)]


# --------------------------------------------------------------------------
# What a technique did to each layer.

_REPORT_ATTR = "_tflight_compression_report"


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """Which layers one technique wrapped, and which it left alone and why.

    Every layer with weights (and, for QAT, every layer) that the technique did
    not wrap is listed with its reason: nothing is silently left float or dense.

    Attributes:
      technique: `"prune"`, `"cluster"` or `"qat"`.
      wrapped: names of the layers wrapped (pruned, clustered, quantized).
      kept_float: `(layer, reason)` pairs QAT left in float.
      skipped: `(layer, reason)` pairs of layers with weights left as they were
        (dense / unclustered) by pruning or clustering.
      inlined: nested models replaced by their layers so the technique could
        reach them.
      rezeroed: `(layer, re-zeroed, pruned)` per pruned layer in a stage after
        `Prune`: how many pruned weights this stage refilled and the pipeline
        set back to zero (`tflight.compress.rezero`), counted before the repair.
      frozen: layers that were not trained (`trainable=False` on them or on an
        enclosing model). Prune and Cluster skip frozen layers (changing
        weights that may not train would break the frozen model); QAT wraps
        them (an int8 model quantizes every layer) but leaves their weights
        untrained.
    """

    technique: str
    wrapped: tuple[str, ...]
    kept_float: tuple[tuple[str, str], ...] = ()
    skipped: tuple[tuple[str, str], ...] = ()
    inlined: tuple[str, ...] = ()
    frozen: tuple[str, ...] = ()
    rezeroed: tuple[tuple[str, int, int], ...] = ()

    def lines(self) -> list[str]:
        """The report as text lines (what `summary` prints)."""
        out = [f"{self.technique}: {len(self.wrapped)} layer(s) wrapped"]
        for layer, refilled, pruned in self.rezeroed:
            out.append(
                f"  re-zeroed after training: {layer}, {refilled} of its {pruned} pruned "
                "weights (this stage refilled them; pruning's zeros were put back)"
            )
        if self.inlined:
            out.append(f"  nested models inlined: {', '.join(self.inlined)}")
        if self.frozen:
            out.append(f"  frozen (weights not trained): {len(self.frozen)} layer(s)")
        for title, rows in (("kept float", self.kept_float), ("skipped", self.skipped)):
            for reason, names in _group(rows).items():
                out.append(f"  {title} ({reason}): {', '.join(names)}")
        return out

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints what was wrapped, kept float and skipped, grouped by reason."""
        for line in self.lines():
            print_fn(line)


def _group(rows: Iterable[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for name, reason in rows:
        grouped.setdefault(reason, []).append(name)
    return grouped


def _attach(model: Any, rep: CompressionReport) -> None:
    # object.__setattr__: Keras' __setattr__ would try to track the dataclass.
    object.__setattr__(model, _REPORT_ATTR, rep)


def report(model: Any) -> CompressionReport | None:
    """The `CompressionReport` of a model returned by a technique (or its strip).

    Args:
      model: a model returned by `prune`, `quantize`, `cluster`, a strip
        function, or `PipelineResult.model`.

    Returns:
      The report of the last technique applied, or None for other models.
    """
    return getattr(model, _REPORT_ATTR, None)


# --------------------------------------------------------------------------
# Callbacks and the missing-callback guard.


def _prune_wrapper_class() -> type:
    return tfmot_internal("sparsity.keras.pruning_wrapper").PruneLowMagnitude


def _pruning_wrappers(model: Any) -> list[Any]:
    wrapper = _prune_wrapper_class()
    found = []
    for layer in model.layers:
        if isinstance(layer, wrapper):
            found.append(layer)
        elif is_tf_keras_model(layer):
            found.extend(_pruning_wrappers(layer))
    return found


def callbacks(model: Any) -> list[Any]:
    """The Keras callbacks that training `model` needs, built fresh.

    A pruned model needs TF-MOT's `UpdatePruningStep` to advance the pruning
    schedule; QAT and clustered models need none. Pass the list to `fit`
    (add your own callbacks to it), or use `tflight.fit`, which does it.

    Args:
      model: a model returned by `prune`, `quantize`, `cluster` or any model.

    Returns:
      A new list of callback objects (empty when nothing is needed).

    Example:
      >>> pruned = tflight.prune(model, sparsity=0.5, compile={...})
      >>> pruned.fit(x, y, epochs=2, callbacks=tflight.callbacks(pruned))
    """
    if not is_tf_keras_model(model):
        return []
    if _pruning_wrappers(model):
        return [tfmot().sparsity.keras.UpdatePruningStep()]
    return []


def _install_guard(model: Any, *, technique: str) -> None:
    """Makes `model.fit` fail at once if a required callback is missing."""
    required = tuple(type(cb) for cb in callbacks(model))
    if not required:
        return
    object.__setattr__(model, _GUARD_ATTR, (technique, required))
    plain_fit = type(model).fit

    def guarded_fit(self: Any, *args: Any, **kwargs: Any) -> Any:
        given = list(kwargs.get("callbacks") or [])
        missing = [cls for cls in required if not any(isinstance(cb, cls) for cb in given)]
        if missing:
            names = ", ".join(cls.__name__ for cls in missing)
            raise MissingCallbackError(
                f"Model {self.name!r} was wrapped by {technique} and needs the callback(s) "
                f"{names} during fit, but `callbacks` had {[type(cb).__name__ for cb in given]}. "
                "Pass `callbacks=tflight.callbacks(model)` (plus your own) to `fit`, or train "
                "with `tflight.fit(model, x, y, ...)`."
            )
        return plain_fit(self, *args, **kwargs)

    # An instance attribute, so that only this wrapped model is guarded.
    object.__setattr__(model, "fit", types.MethodType(guarded_fit, model))


def fit(model: Any, *args: Any, **kwargs: Any) -> Any:
    """`model.fit(*args, **kwargs)` with the callbacks the model needs added.

    Args:
      model: a compiled model returned by a technique.
      *args: passed to `Model.fit`.
      **kwargs: passed to `Model.fit`; `callbacks` are kept and completed.

    Returns:
      The Keras `History`.

    Raises:
      CompressionError: the model was not compiled.
    """
    if getattr(model, "optimizer", None) is None:
        raise CompressionError(
            f"Model {model.name!r} is not compiled. TF-MOT wrapping drops the optimizer: pass "
            "`compile={'optimizer': ..., 'loss': ...}` to the technique, or call "
            "`model.compile(...)` before `tflight.fit`."
        )
    given = list(kwargs.pop("callbacks", None) or [])
    needed = [cb for cb in callbacks(model) if not any(type(g) is type(cb) for g in given)]
    return model.fit(*args, callbacks=given + needed, **kwargs)


# --------------------------------------------------------------------------
# Parameter-efficient fine-tuning.


def _unwrap(layer: Any) -> Any:
    inner = getattr(layer, "layer", None)
    return inner if inner is not None and hasattr(layer, "layer") else layer


def freeze(model: Any, *, train: Selector) -> list[str]:
    """Freezes every top-level layer of a wrapped model except those `train` picks.

    Use during a compression fine-tune to update only a few layers (e.g. the
    classifier head), which is faster and keeps the rest of the network as it
    was. Selection looks through TF-MOT wrappers, so `train=["logits"]` and
    `train=tf_keras.layers.Dense` work on a pruned, clustered or QAT model.
    The model is changed in place (it is the library's copy, not the user's);
    call it before `compile`, as Keras requires.

    Args:
      model: a tf_keras model returned by `prune`, `quantize` or `cluster`.
      train: a `Selector` of the layers that stay trainable.

    Returns:
      The names of the layers left trainable.

    Raises:
      CompressionError: `train` is malformed, names unknown layers, or selects
        no layer with weights.

    References:
      Houlsby et al. "Parameter-Efficient Transfer Learning for NLP", ICML 2019.
    """
    if not is_tf_keras_model(model):
        raise CompressionError(
            f"freeze expects the tf_keras model returned by a technique, got "
            f"{type(model).__qualname__}. Apply `tflight.prune`/`quantize`/`cluster` first."
        )
    if train is None:
        raise CompressionError("`train` must select the layers to keep trainable, got None.")
    _check_selector(train, arg="train")
    _check_names_exist(model, train, arg="train")
    kept = []
    for layer in model.layers:
        inner = _unwrap(layer)
        chosen = _layer_matches(layer, train) or _layer_matches(inner, train)
        layer.trainable = chosen
        # TF-MOT wrappers report their inner layer's weights whatever their own flag.
        inner.trainable = chosen
        if not chosen and layer is not inner and getattr(layer, "_trainable_weights", None):
            # QuantizeWrapperV2 also lists the inner kernel among its own trainable
            # weights and ignores `trainable`: move them where Keras will not train them.
            # (object.__setattr__: Keras' own __setattr__ would track the variables
            # back into the trainable list.)
            moved = list(layer._trainable_weights)
            object.__setattr__(layer, "_trainable_weights", [])
            object.__setattr__(
                layer, "_non_trainable_weights", list(layer._non_trainable_weights) + moved
            )
        if chosen and layer.trainable_weights:
            kept.append(layer.name)
    if not kept:
        raise CompressionError(
            f"`train`={train!r} leaves no trainable weights in model {model.name!r}; select at "
            "least one layer with weights (e.g. the last Dense layer)."
        )
    return kept


# --------------------------------------------------------------------------
# Pipelines.


@dataclasses.dataclass(frozen=True)
class StageResult:
    """One fine-tuned stage of a pipeline."""

    technique: str
    preserve: frozenset[str]
    history: dict[str, list[float]]


@dataclasses.dataclass(frozen=True)
class PipelineResult:
    """The outcome of `Pipeline.fit`.

    Attributes:
      model: the stripped model, ready for `converters.convert`.
      stages: one `StageResult` per technique, in order.
      reports: one `CompressionReport` per technique, in order: what each
        stage wrapped, kept float and skipped.
    """

    model: Any
    stages: tuple[StageResult, ...]
    reports: tuple[CompressionReport, ...] = ()

    def summary(self, print_fn: Callable[[str], None] = print) -> None:
        """Prints one line per stage with its last training loss, then the layer reports."""
        for i, stage in enumerate(self.stages, 1):
            loss = stage.history.get("loss", [float("nan")])[-1]
            keep = f" preserving {', '.join(sorted(stage.preserve))}" if stage.preserve else ""
            print_fn(f"{i}. {stage.technique}{keep}: final loss {loss:.4f}")
        for rep in self.reports:
            rep.summary(print_fn)


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """Techniques applied in order, each fine-tuned and stripped before the next.

    Later techniques preserve what earlier ones produced: after `Prune`, a
    `Cluster` keeps the zeros and `QAT` uses TF-MOT's prune-preserving scheme;
    after `Cluster`, `QAT` keeps the centroids. This gives PQAT
    (`[Prune, QAT]`), CQAT (`[Cluster, QAT]`) and PCQAT (`[Prune, Cluster, QAT]`).

    Args:
      techniques: the technique objects, applied first to last.

    Example:
      >>> pipe = tflight.Pipeline([tflight.Prune(sparsity=0.5), tflight.QAT()])
      >>> out = pipe.fit(model, x, y, epochs=2, compile={"optimizer": "adam",
      ...                "loss": "sparse_categorical_crossentropy"})
      >>> converters.convert(out.model, "int8", representative_data=x[:100])

    References:
      TensorFlow Model Optimization, "Collaborative optimization" (PQAT, CQAT,
      PCQAT), 2021.
    """

    techniques: tuple[Any, ...]

    def __post_init__(self) -> None:
        techniques = tuple(self.techniques)
        object.__setattr__(self, "techniques", techniques)
        if not techniques:
            raise CompressionError("Pipeline needs at least one technique, got an empty list.")
        for t in techniques:
            if not isinstance(t, Technique):
                raise CompressionError(
                    f"Pipeline items must be techniques (tflight.Prune, tflight.QAT, "
                    f"tflight.Cluster), got {t!r}."
                )
        names = [type(t).__name__ for t in techniques]
        if "QAT" in names and names.index("QAT") != len(names) - 1:
            raise CompressionError(
                f"QAT must be the last technique of a pipeline (its fake-quant wrappers are "
                f"what the converter reads), got the order {names}."
            )
        if len(set(names)) != len(names):
            raise CompressionError(f"Each technique may appear once in a pipeline, got {names}.")

    def fit(
        self,
        model: Any,
        x: Any = None,
        y: Any = None,
        *,
        compile: dict[str, Any],
        epochs: int | Sequence[int] = 1,
        train: Selector = None,
        **fit_kwargs: Any,
    ) -> PipelineResult:
        """Applies, fine-tunes and strips each technique in turn.

        Args:
          model: a Keras 3 or tf_keras model (left unchanged).
          x: training inputs, as for `Model.fit`.
          y: training targets, as for `Model.fit`.
          compile: `Model.compile` keyword arguments used for every stage.
          epochs: epochs per stage, one number for all or one per technique.
          train: if given, only these layers are trained (parameter-efficient
            fine-tuning, see `tflight.freeze`).
          **fit_kwargs: further `Model.fit` arguments (`batch_size`, `verbose`,
            `validation_data`, `callbacks`, ...).

        Returns:
          A `PipelineResult` whose `model` is stripped and ready to convert.

        Raises:
          CompressionError: bad arguments or a technique failed.
          UnsupportedLayerError: a technique cannot handle a layer.
        """
        stage_epochs = _per_stage(epochs, len(self.techniques))
        if not isinstance(compile, dict) or "loss" not in compile:
            raise CompressionError(
                "Pipeline.fit needs `compile` with at least a loss, e.g. "
                f"compile={{'optimizer': 'adam', 'loss': ...}}, got {compile!r}."
            )
        # Everything that can be checked is checked before the first epoch.
        base, flat = _prepare(model, what="Pipeline")
        _own(base)
        preserve_at: list[frozenset[str]] = []
        done: set[str] = set()
        plans = []
        for technique in self.techniques:
            preserve_at.append(frozenset(done))
            plans.append(technique.plan(base, preserve=frozenset(done)))
            done |= technique.provides
        # Cluster-preserving QAT rebuilds every clustered layer; one it keeps
        # float (MultiHeadAttention, ...) cannot be rebuilt clustered: leave it unclustered.
        qat_float = {
            name: "kept float by the QAT stage that follows"
            for p in plans
            if p is not None and p.technique == "qat"
            for name, _ in p.kept_float
        }
        _check_data(base, x, y, compile)
        pruned_zeros: dict[str, float] = {}
        current = base
        stages = []
        reports = []
        user_callbacks = list(fit_kwargs.pop("callbacks", None) or [])
        fit_kwargs.setdefault("verbose", 0)
        for technique, n_epochs, preserve in zip(
            self.techniques, stage_epochs, preserve_at, strict=True
        ):
            if "clusters" in technique.provides and qat_float:
                wrapped = technique.apply(
                    current, preserve=preserve, compile=None, exclude=qat_float
                )
            else:
                wrapped = technique.apply(current, preserve=preserve, compile=None)
            rep = report(wrapped)
            if rep is not None and flat.inlined and not rep.inlined:
                rep = dataclasses.replace(rep, inlined=flat.inlined)
            if train is not None:
                freeze(wrapped, train=train)
            _compile(wrapped, _fresh_optimizer(compile))
            masks = pruned_masks(wrapped, pruned_zeros) if pruned_zeros else []
            history = fit(
                wrapped, x, y, epochs=n_epochs, callbacks=list(user_callbacks), **fit_kwargs
            )
            _check_finite(wrapped, history.history, stage=_label(technique))
            if masks:
                # Counted and checked before the repair, so that the check can fire.
                refills = measure_refills(masks)
                kept_sparse = set(rep.wrapped) if rep is not None else set()
                check_refills(refills, kept_sparse, technique, preserve)
                rezero(masks)
                if rep is not None:
                    rep = dataclasses.replace(rep, rezeroed=tuple(
                        (r.layer, r.refilled, r.pruned) for r in refills if r.refilled))
            current = _own(technique.strip(wrapped))
            if "sparsity" in technique.provides:
                pruned_zeros = _zeros_by_layer(current)
            if rep is not None:
                reports.append(rep)
                _attach(current, rep)
            stages.append(
                StageResult(
                    technique=_label(technique),
                    preserve=preserve,
                    history={k: [float(v) for v in vs] for k, vs in history.history.items()},
                )
            )
        return PipelineResult(model=current, stages=tuple(stages), reports=tuple(reports))


def _label(technique: Any) -> str:
    """`Prune(sparsity=0.5)`: the class and the arguments that differ from the defaults."""
    if not dataclasses.is_dataclass(technique):
        return repr(technique)

    def short(value: Any) -> str:
        if isinstance(value, type):
            return value.__name__
        if isinstance(value, str):  # includes str enums
            return repr(str(value.value if hasattr(value, "value") else value))
        return repr(value)

    args = [
        f"{f.name}={short(getattr(technique, f.name))}"
        for f in dataclasses.fields(technique)
        if getattr(technique, f.name) != f.default
    ]
    return f"{type(technique).__name__}({', '.join(args)})"


def _fresh_optimizer(compile: dict[str, Any]) -> dict[str, Any]:
    """An optimizer object is bound to one model's variables: rebuild it per stage."""
    optimizer = compile.get("optimizer")
    if optimizer is None or isinstance(optimizer, str):
        return compile
    optimizer = _translate("optimizer", optimizer)
    return {**compile, "optimizer": type(optimizer).from_config(optimizer.get_config())}


def _zeros_by_layer(model: Any) -> dict[str, float]:
    from tflight.compress.pruning import sparsity_report

    return {row.layer: row.sparsity for row in sparsity_report(model).layers}


def _check_finite(model: Any, history: dict[str, list[float]] | None = None, *, stage: str) -> None:
    """Raises when training produced a non-finite loss or non-finite weights.

    Args:
      model: the trained (wrapped) model.
      history: `History.history` of the fit, if any.
      stage: the name of the stage, for the message.

    Raises:
      CompressionError: NaN or inf in the loss or in a weight.
    """
    bad_loss = [
        key
        for key, values in (history or {}).items()
        if values and not np.all(np.isfinite(np.asarray(values, dtype=np.float64)))
    ]
    bad_weights = [
        w.name
        for w in model.weights
        if not np.all(np.isfinite(np.asarray(w.numpy(), dtype=np.float64)))
    ]
    if bad_loss or bad_weights:
        found = []
        if bad_loss:
            found.append(f"non-finite {', '.join(bad_loss)}")
        if bad_weights:
            found.append(f"NaN/inf in {len(bad_weights)} weight(s) (first: {bad_weights[0]})")
        raise CompressionError(
            f"Training diverged in {stage}: {'; '.join(found)}. Check the training data for NaN "
            "or inf values (np.isfinite(x).all()), scale the inputs, or lower the learning rate."
        )


def _check_data(model: Any, x: Any, y: Any, compile: dict[str, Any]) -> None:
    """Checks in-memory training arrays against the model before any training.

    Datasets and generators are left to Keras; arrays (or lists/dicts of
    arrays) are checked for shape, dtype, finiteness and, with a sparse
    categorical loss on a single output, the label range.
    """
    if x is None or _is_stream(x):
        return
    arrays = _flat_arrays(x, model, "x")
    if arrays is None:
        return
    if len(arrays) != len(model.inputs):
        raise CompressionError(
            f"`x` holds {len(arrays)} array(s) but model {model.name!r} has "
            f"{len(model.inputs)} input(s) ({', '.join(str(tuple(t.shape)) for t in model.inputs)})."
        )
    n = None
    for (name, arr), ref in zip(arrays, model.inputs, strict=True):
        _check_array(arr, name)
        want = tuple(ref.shape)[1:]
        got = tuple(arr.shape)[1:]
        if len(want) != len(got) or any(
            w is not None and w != g for w, g in zip(want, got, strict=False)
        ):
            raise CompressionError(
                f"`{name}` has samples of shape {got} but model {model.name!r} expects "
                f"{tuple(d if d is not None else 'None' for d in want)}; reshape the data or "
                "rebuild the model's Input."
            )
        n = len(arr) if n is None else n
    if y is None:
        return
    outputs = _flat_arrays(y, model, "y", outputs=True)
    if outputs is None:
        return
    for name, arr in outputs:
        _check_array(arr, name)
        if n is not None and len(arr) != n:
            raise CompressionError(f"`{name}` has {len(arr)} samples but `x` has {n}.")
    loss = compile.get("loss")
    loss_name = (loss if isinstance(loss, str) else type(loss).__name__).lower()
    if "sparse" in loss_name and len(outputs) == 1 and len(model.outputs) == 1:
        name, labels = outputs[0]
        classes = model.outputs[0].shape[-1]
        if classes is not None and labels.size:
            low, high = labels.min(), labels.max()
            if low < 0 or high >= classes or not np.all(np.equal(np.mod(labels, 1), 0)):
                raise CompressionError(
                    f"`{name}` holds labels from {low} to {high}, but the sparse categorical "
                    f"loss needs integer class ids in [0, {classes - 1}] for the model's "
                    f"{classes} outputs. Map the labels to 0..{classes - 1}."
                )


def _is_stream(x: Any) -> bool:
    import tensorflow as tf

    return (
        isinstance(x, tf.data.Dataset) or hasattr(x, "__next__") or type(x).__name__ == "PyDataset"
    )


def _flat_arrays(
    value: Any, model: Any, arg: str, *, outputs: bool = False
) -> list[tuple[str, np.ndarray]] | None:
    if isinstance(value, dict):
        names = model.output_names if outputs else model.input_names
        order = [k for k in names if k in value] or list(value)
        return [(f"{arg}[{k!r}]", np.asarray(value[k])) for k in order]
    if isinstance(value, list | tuple):
        return [(f"{arg}[{i}]", np.asarray(v)) for i, v in enumerate(value)]
    try:
        return [(arg, np.asarray(value))]
    except Exception:  # noqa: BLE001 - not array-like: leave it to Keras
        return None


def _check_array(arr: np.ndarray, name: str) -> None:
    if arr.dtype.kind not in "biuf":
        raise CompressionError(
            f"`{name}` must hold numbers, got dtype {arr.dtype}; convert it with "
            "np.asarray(..., dtype=np.float32) (token ids: int32)."
        )
    if arr.ndim == 0:
        raise CompressionError(f"`{name}` must be a batch of samples, got a scalar.")
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        bad = int(np.size(arr) - np.count_nonzero(np.isfinite(arr)))
        raise CompressionError(
            f"`{name}` contains {bad} NaN or inf value(s); training on them makes every weight "
            "NaN. Clean or impute the data first (np.isfinite(x).all() must hold)."
        )


def _per_stage(epochs: int | Iterable[int], n: int) -> list[int]:
    values = [epochs] * n if isinstance(epochs, int) else list(epochs)
    if len(values) != n or not all(isinstance(e, int) and e >= 1 for e in values):
        raise CompressionError(
            f"`epochs` must be a positive int or {n} positive ints (one per technique), "
            f"got {epochs!r}."
        )
    return values
