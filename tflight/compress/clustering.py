"""Weight clustering (weight sharing): each kernel keeps only a few distinct values.

`cluster` wraps the chosen layers of a copy of the model in TF-MOT's
`ClusterWeights`: during fine-tuning every kernel value is tied to one of
`n_clusters` trainable centroids. `strip_clustering` returns a plain model
whose kernels hold at most `n_clusters` distinct values (per output channel
with `per_channel=True`), which gzip and int8 conversion store compactly.

References:
  Han, Mao, Dally. "Deep Compression: Compressing Deep Neural Networks with
  Pruning, Trained Quantization and Huffman Coding", ICLR 2016.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

import numpy as np

from tflight._keras import is_tf_keras_model, tf_keras, tfmot, tfmot_internal
from tflight.compress._kernels import has_kernel, no_kernel_reason
from tflight.compress.compile import compile_model
from tflight.compress.models import is_frozen, prepare
from tflight.compress.report import CompressionReport, attach_report, compression_report
from tflight.compress.technique import Selector, check_names_exist, check_selector, layer_matches
from tflight.errors import CompressionError, UnsupportedLayerError

__all__ = [
    "CentroidInit",
    "Cluster",
    "cluster",
    "strip_clustering",
    "unique_weights",
]


class CentroidInit(enum.StrEnum):
    """How the centroids start: the values are the CLI words."""

    KMEANS_PLUS_PLUS = "kmeans++"
    LINEAR = "linear"
    DENSITY = "density"
    RANDOM = "random"

    def _tfmot(self) -> Any:
        init = tfmot().clustering.keras.CentroidInitialization
        return {
            CentroidInit.KMEANS_PLUS_PLUS: init.KMEANS_PLUS_PLUS,
            CentroidInit.LINEAR: init.LINEAR,
            CentroidInit.DENSITY: init.DENSITY_BASED,
            CentroidInit.RANDOM: init.RANDOM,
        }[self]


def _wrapper_class() -> type:
    return tfmot_internal("clustering.keras.cluster_wrapper").ClusterWeights


def _nothing_to_cluster(layer: Any) -> bool:
    registry = tfmot_internal("clustering.keras.clustering_registry").ClusteringRegistry
    return layer.__class__ in registry._LAYERS_WEIGHTS_MAP and not registry._weight_names(layer)


def _clusterable(layer: Any, n_clusters: int, per_channel: bool) -> str | None:
    """None if TF-MOT can cluster `layer`, else the reason."""
    registry = tfmot_internal("clustering.keras.clustering_registry").ClusteringRegistry
    if not registry.supports(layer):
        return f"{type(layer).__name__} is not clusterable"
    kernel = getattr(layer, "kernel", None)
    if kernel is None:
        return None
    size = int(np.prod(kernel.shape))
    if per_channel:
        if not isinstance(layer, tf_keras().layers.Conv2D):
            return "per-channel clustering applies to Conv2D layers only"
        size //= int(kernel.shape[-1])
    # TF-MOT silently leaves such a Conv2D dense; say it instead.
    if size <= n_clusters:
        return f"has {size} weights{' per channel' if per_channel else ''}, not more than {n_clusters} clusters"
    return None


@dataclasses.dataclass(frozen=True)
class Cluster:
    """Weight clustering, as a technique for `tflight.Pipeline`.

    Args:
      n_clusters: distinct values per kernel (per channel with `per_channel`), >= 2.
      init: centroid initialization, a `CentroidInit` or its word
        ("kmeans++", "linear", "density", "random").
      per_channel: cluster each output channel of Conv2D kernels separately.
      preserve_sparsity: keep zeros at zero; `None` turns it on after `Prune`
        in a pipeline.
      select: the layers to cluster; default every layer with a kernel.
      unsupported: `"raise"` (default) names selected layers that cannot be
        clustered; `"skip"` leaves them as they are, explicitly.
    """

    n_clusters: int = 16
    init: CentroidInit | str = CentroidInit.KMEANS_PLUS_PLUS
    per_channel: bool = False
    preserve_sparsity: bool | None = None
    select: Selector = None
    unsupported: str = "raise"

    provides = frozenset({"clusters"})

    def __post_init__(self) -> None:
        if (
            not isinstance(self.n_clusters, int)
            or isinstance(self.n_clusters, bool)
            or (self.n_clusters < 2)
        ):
            raise CompressionError(f"`n_clusters` must be an int >= 2, got {self.n_clusters!r}.")
        try:
            object.__setattr__(self, "init", CentroidInit(self.init))
        except ValueError:
            words = ", ".join(repr(c.value) for c in CentroidInit)
            raise CompressionError(f"`init` must be one of {words}, got {self.init!r}.") from None
        if self.unsupported not in ("raise", "skip"):
            raise CompressionError(
                f"`unsupported` must be 'raise' or 'skip', got {self.unsupported!r}."
            )
        check_selector(self.select, arg="select")

    def apply(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        compile: dict[str, Any] | None = None,
        exclude: dict[str, str] | None = None,
    ) -> Any:
        """Returns a clustering-wrapped tf_keras copy of `model` (see `cluster`).

        `exclude` maps layer names to the reason they are left unclustered
        (a pipeline uses it for layers its QAT stage keeps float).
        """
        if "int8" in preserve:
            raise CompressionError("Cluster must come before QAT in a pipeline.")
        base, flat = prepare(model, what="cluster")
        rep = dataclasses.replace(
            self.plan(base, preserve=preserve, exclude=exclude), inlined=flat.inlined
        )
        targets = set(rep.wrapped)
        preserve_sparsity = (
            "sparsity" in preserve if self.preserve_sparsity is None else self.preserve_sparsity
        )
        mot = tfmot().clustering.keras
        kwargs: dict[str, Any] = {
            "number_of_clusters": self.n_clusters,
            "cluster_centroids_init": self.init._tfmot(),
        }
        if self.per_channel:
            kwargs["cluster_per_channel"] = True
        if preserve_sparsity:
            kwargs["preserve_sparsity"] = True
            rep, targets = self._too_sparse(base, rep, targets)

        def wrap(layer: Any) -> Any:
            return mot.cluster_weights(layer, **kwargs) if layer.name in targets else layer

        try:
            clustered = tf_keras().models.clone_model(base, clone_function=wrap)
        except ValueError as e:
            raise CompressionError(f"TF-MOT could not cluster model {base.name!r}: {e}") from e
        compile_model(clustered, compile)
        attach_report(clustered, rep)
        return clustered

    def _too_sparse(self, model: Any, rep: CompressionReport,
                    targets: set[str]) -> tuple[CompressionReport, set[str]]:
        """Leaves out kernels with too few nonzero weights for sparsity-preserving k-means.

        Sparsity-preserving clustering draws its initial centroids from the
        nonzero weights only; TF-MOT's k-means++ then fails outright on a
        pruned kernel with no more nonzero weights (per channel, with
        `per_channel`) than clusters.
        """
        few: dict[str, str] = {}
        for name in sorted(targets):
            kernel = getattr(model.get_layer(name), "kernel", None)
            if kernel is None:
                continue
            values = np.asarray(kernel.numpy())
            if self.per_channel:
                nonzero = int(np.min(np.count_nonzero(values.reshape(-1, values.shape[-1]), 0)))
            else:
                nonzero = int(np.count_nonzero(values))
            if nonzero <= self.n_clusters:
                few[name] = (f"has {nonzero} nonzero weights{' per channel' if self.per_channel else ''}"
                             f" after pruning, not more than {self.n_clusters} clusters")
        if not few:
            return rep, targets
        if self.unsupported == "raise":
            listed = "; ".join(f"{name!r}: {why}" for name, why in few.items())
            raise UnsupportedLayerError(
                f"Cannot cluster these layers and keep their zeros: {listed}. Leave them as "
                "they are with `unsupported='skip'`, or use fewer clusters."
            )
        left = targets - set(few)
        if not left:
            raise CompressionError(
                f"No layer of model {model.name!r} is left to cluster: {few}. Use fewer clusters."
            )
        return dataclasses.replace(
            rep, wrapped=tuple(n for n in rep.wrapped if n not in few),
            skipped=(*rep.skipped, *few.items()),
        ), left

    def plan(
        self,
        model: Any,
        *,
        preserve: frozenset[str] = frozenset(),
        exclude: dict[str, str] | None = None,
    ) -> CompressionReport:
        """Decides, without wrapping, which layers of a flat tf_keras model are clustered.

        Frozen layers are skipped (their weights may not change); so are layers
        outside `select` and, with `unsupported="skip"`, layers that cannot be
        clustered. Every skipped layer with weights is listed with its reason.

        Raises:
          UnsupportedLayerError: with `unsupported="raise"`, selected trainable
            layers that cannot be clustered.
          CompressionError: nothing left to cluster, or QAT already applied.
        """
        if "int8" in preserve:
            raise CompressionError("Cluster must come before QAT in a pipeline.")
        check_names_exist(model, self.select, arg="select")
        skipped: list[tuple[str, str]] = []
        bad: dict[str, str] = {}
        targets: list[str] = []
        for layer in model.layers:
            if not layer.weights:
                continue
            if not layer_matches(layer, self.select):
                skipped.append((layer.name, "not selected"))
            elif not layer.trainable:
                skipped.append((layer.name, "frozen"))
            elif exclude and layer.name in exclude:
                skipped.append((layer.name, exclude[layer.name]))
            elif _nothing_to_cluster(layer):
                # TF-MOT lists them (BatchNormalization, DepthwiseConv2D) to cluster nothing.
                skipped.append((layer.name, f"TF-MOT clusters no weight of {type(layer).__name__}"))
            elif not has_kernel(layer) and _clusterable(layer, self.n_clusters, self.per_channel):
                skipped.append((layer.name, no_kernel_reason(layer, "cluster")))
            else:
                why = _clusterable(layer, self.n_clusters, self.per_channel)
                if why:
                    bad[layer.name] = why
                else:
                    targets.append(layer.name)
        if bad and self.unsupported == "raise":
            listed = "; ".join(f"{name!r}: {why}" for name, why in bad.items())
            raise UnsupportedLayerError(
                f"Cannot cluster these layers: {listed}. Leave them as they are with "
                "`unsupported='skip'`, narrow `select`, or use fewer clusters."
            )
        skipped += list(bad.items())
        if not targets:
            raise CompressionError(
                f"No layer of model {model.name!r} is left to cluster with select={self.select!r} "
                f"(skipped: {dict(skipped)})."
            )
        frozen = tuple(layer.name for layer in model.layers if is_frozen(layer))
        return CompressionReport(
            technique="cluster", wrapped=tuple(targets), skipped=tuple(skipped), frozen=frozen
        )

    def callbacks(self, model: Any) -> list[Any]:
        return []

    def strip(self, model: Any) -> Any:
        return strip_clustering(model)


def cluster(
    model: Any,
    *,
    n_clusters: int = 16,
    init: CentroidInit | str = CentroidInit.KMEANS_PLUS_PLUS,
    per_channel: bool = False,
    preserve_sparsity: bool = False,
    select: Selector = None,
    unsupported: str = "raise",
    compile: dict[str, Any] | None = None,
) -> Any:
    """Wraps a copy of `model` for weight clustering.

    Fine-tune with an ordinary `fit` (no callback is needed), then
    `strip_clustering`. TF-MOT drops the optimizer when wrapping, so the result
    is compiled only if `compile` is given.

    Args:
      model: a trained Keras 3 (bridged) or tf_keras model; not modified.
      n_clusters: distinct values per kernel.
      init: centroid initialization ("kmeans++", "linear", "density", "random").
      per_channel: cluster each Conv2D output channel separately.
      preserve_sparsity: keep the zeros of an already pruned model.
      select: which layers to cluster (class, names or predicate).
      unsupported: `"raise"` or `"skip"` for selected layers that cannot be clustered.
      compile: `Model.compile` kwargs applied to the wrapped model.

    Returns:
      The wrapped tf_keras model.

    Raises:
      UnsupportedLayerError: selected layers that cannot be clustered (names each).
      CompressionError: bad arguments or an unsupported model.

    Example:
      >>> clustered = tflight.cluster(model, n_clusters=16, compile={...})
      >>> clustered.fit(x, y, epochs=1)
      >>> plain = tflight.strip_clustering(clustered)

    References:
      Han, Mao, Dally. "Deep Compression", ICLR 2016.
    """
    technique = Cluster(
        n_clusters=n_clusters,
        init=init,
        per_channel=per_channel,
        preserve_sparsity=preserve_sparsity,
        select=select,
        unsupported=unsupported,
    )
    return technique.apply(model, compile=compile)


def strip_clustering(model: Any) -> Any:
    """Removes the clustering wrappers; kernels keep their clustered values.

    Args:
      model: a model returned by `cluster` and fine-tuned.

    Returns:
      A plain tf_keras model with the original layer types and weight layout.

    Raises:
      CompressionError: `model` has no clustering wrappers.
    """
    wrapper = _wrapper_class()
    if not is_tf_keras_model(model) or not any(
        isinstance(layer, wrapper) for layer in model.layers
    ):
        raise CompressionError(
            f"strip_clustering expects a model returned by tflight.cluster, got "
            f"{type(model).__qualname__} {getattr(model, 'name', '')!r} without clustering wrappers."
        )
    stripped = tfmot().clustering.keras.strip_clustering(model)
    rep = compression_report(model)
    if rep is not None:
        attach_report(stripped, rep)
    return stripped


def unique_weights(model: Any) -> dict[str, int]:
    """Number of distinct values in each layer's kernel (a check after clustering).

    Args:
      model: a Keras model.

    Returns:
      `{layer name: distinct kernel values}` for layers with a `kernel`.
    """
    counts = {}
    for layer in model.layers:
        kernel = getattr(layer, "kernel", None)
        if kernel is not None:
            counts[layer.name] = int(np.unique(np.asarray(kernel)).size)
    return counts
