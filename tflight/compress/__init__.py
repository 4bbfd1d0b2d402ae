"""Compression techniques on a Keras model: pruning, QAT, clustering and their pipelines.

Every technique has the same small protocol (apply, the callbacks it needs,
strip), so a `Pipeline` is a list of techniques applied in order (PQAT, CQAT,
PCQAT). TF-MOT is the engine; Keras 3 models reach it through `tflight.bridge`.
"""

from tflight._lazy import attach

_EXPORTS = {
    "Pipeline": "tflight.compress.pipeline",
    "PipelineResult": "tflight.compress.pipeline",
    "callbacks": "tflight.compress.pipeline",
    "fit": "tflight.compress.pipeline",
    "freeze": "tflight.compress.pipeline",
    "CompressionReport": "tflight.compress.pipeline",
    "compression_report": "tflight.compress.pipeline:report",
    "ConstantSparsity": "tflight.compress.pruning",
    "PolynomialDecay": "tflight.compress.pruning",
    "Prune": "tflight.compress.pruning",
    "SparsityReport": "tflight.compress.pruning",
    "prune": "tflight.compress.pruning",
    "sparsity_report": "tflight.compress.pruning",
    "strip_pruning": "tflight.compress.pruning",
    "QAT": "tflight.compress.quantization",
    "qat": "tflight.compress.quantization:quantize",
    "strip_qat": "tflight.compress.quantization:strip_quantization",
    "AgreementReport": "tflight.compress.quantization",
    "check_agreement": "tflight.compress.quantization",
    "CentroidInit": "tflight.compress.clustering",
    "Cluster": "tflight.compress.clustering",
    "cluster": "tflight.compress.clustering",
    "strip_clustering": "tflight.compress.clustering",
}
# "quantize" meant QAT here, the mixed-precision search in the CLI and PTQ
# recipes in `tflight.precision`; the QAT verbs are now `qat` / `strip_qat`.
_DEPRECATED = {"quantize": "qat", "strip_quantization": "strip_qat"}

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS, deprecated=_DEPRECATED)
