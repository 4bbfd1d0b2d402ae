"""Compression techniques on a Keras model: pruning, QAT, clustering and their pipelines.

Every technique has the same small protocol (apply, the callbacks it needs,
strip), so a `Pipeline` is a list of techniques applied in order (PQAT, CQAT,
PCQAT). TF-MOT is the engine; Keras 3 models reach it through `tflight.bridge`.
`compress_to_tflite` is the one call behind `tflight compress`: fine-tune,
convert, and check the result against the original on held-out data.

Modules: `technique` (the protocol, layer selection), `models` (the tf_keras copy
a technique wraps), `compile` (Keras 3 compile arguments for tf_keras),
`report`, `training` (callbacks, `fit`, `freeze`), `checks` (data and weights),
`masks` (zeros kept across stages), `pipeline`, `schedules`, `pruning`,
`sparsity`, `quantization` (QAT), `clustering`, `gate` (the accuracy budget),
`recipe` (`compress_to_tflite`).
"""

from tflight._lazy import attach

_EXPORTS = {
    "Pipeline": "tflight.compress.pipeline",
    "PipelineResult": "tflight.compress.pipeline",
    "callbacks": "tflight.compress.training",
    "fit": "tflight.compress.training",
    "freeze": "tflight.compress.training",
    "CompressionReport": "tflight.compress.report",
    "compression_report": "tflight.compress.report",
    "ConstantSparsity": "tflight.compress.schedules",
    "PolynomialDecay": "tflight.compress.schedules",
    "Prune": "tflight.compress.pruning",
    "SparsityReport": "tflight.compress.sparsity",
    "prune": "tflight.compress.pruning",
    "sparsity_report": "tflight.compress.sparsity",
    "strip_pruning": "tflight.compress.pruning",
    "QAT": "tflight.compress.quantization",
    "qat": "tflight.compress.quantization",
    "strip_qat": "tflight.compress.quantization",
    "AgreementReport": "tflight.compress.agreement",
    "check_agreement": "tflight.compress.agreement",
    "CentroidInit": "tflight.compress.clustering",
    "Cluster": "tflight.compress.clustering",
    "cluster": "tflight.compress.clustering",
    "strip_clustering": "tflight.compress.clustering",
    "Recipe": "tflight.compress.recipe",
    "CompressedTflite": "tflight.compress.recipe",
    "compress_to_tflite": "tflight.compress.recipe",
    "AccuracyCheck": "tflight.compress.gate",
    "check_drop": "tflight.compress.gate",
}
# The one-call recipe behind `tflight compress` and the accuracy gate the single
# tools share: offered here, not in the top-level `tflight` namespace.
_LOCAL = frozenset({"Recipe", "CompressedTflite", "compress_to_tflite", "AccuracyCheck", "check_drop"})
# "quantize" meant QAT here, the mixed-precision search in the CLI and PTQ
# recipes in `tflight.precision`; the QAT verbs are now `qat` / `strip_qat`.
_DEPRECATED = {"quantize": "qat", "strip_quantization": "strip_qat"}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, deprecated=_DEPRECATED)
