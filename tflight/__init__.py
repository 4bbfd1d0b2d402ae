"""tflight: make Keras models small and fast for TFLite (LiteRT).

Compress Keras 3 or tf_keras models (pruning, quantization-aware training,
clustering, distillation), convert them to verified `.tflite` flatbuffers with
`converters`, and benchmark them on the host and on an emulated ARM64 device.

Importing `tflight` does not change what the user's `import keras` or `tf.keras`
refers to.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tflight import errors
    from tflight.datasets import load_digits
    from tflight.errors import TflightError

    # -- bridge --
    from tflight.bridge import (
        BridgeReport,
        to_keras3,
        to_tf_keras,
    )

    # -- compression --
    from tflight.clustering import CentroidInit
    from tflight.clustering import Cluster
    from tflight.clustering import cluster
    from tflight.clustering import strip_clustering
    from tflight.compose import Pipeline
    from tflight.compose import PipelineResult
    from tflight.compose import callbacks
    from tflight.compose import fit
    from tflight.compose import freeze
    from tflight.compose import CompressionReport
    from tflight.compose import report as compression_report
    from tflight.flatten import FlattenResult
    from tflight.flatten import flatten
    from tflight.pruning import ConstantSparsity
    from tflight.pruning import PolynomialDecay
    from tflight.pruning import Prune
    from tflight.pruning import SparsityReport
    from tflight.pruning import prune
    from tflight.pruning import sparsity_report
    from tflight.pruning import strip_pruning
    from tflight.quantization import QAT
    from tflight.quantization import AgreementReport
    from tflight.quantization import check_agreement
    from tflight.quantization import quantize
    from tflight.quantization import strip_quantization
    # -- structure: channel pruning, low rank --
    from tflight.depgraph import ChannelGroup
    from tflight.depgraph import DependencyGraph
    from tflight.importance import APoZImportance
    from tflight.importance import BNScaleImportance
    from tflight.importance import Importance
    from tflight.importance import MagnitudeImportance
    from tflight.importance import TaylorImportance
    from tflight.lowrank import LowRankResult
    from tflight.lowrank import factorize
    from tflight.sensitivity import SensitivityResult
    from tflight.sensitivity import analyze_sensitivity
    from tflight.structured import ChannelPruningResult
    from tflight.structured import GroupCut
    from tflight.structured import prune_channels
    # -- mixed precision --
    from tflight.precision import Precision
    from tflight.precision import QuantizedModel
    from tflight.precision import SensitivityReport
    from tflight.precision import quantize_int4
    from tflight.precision import quantize_layers
    from tflight.precision import sensitivity as quantization_sensitivity
    from tflight.precision_search import SearchResult
    from tflight.precision_search import search as search_precision

    # -- distillation --
    from tflight.distillation import DistillationResult
    from tflight.distillation import Distiller
    from tflight.distillation import TeacherCache
    from tflight.distillation import distill
    from tflight.distillation import load_distiller
    from tflight.distillation_losses import DistillationLoss
    from tflight.distillation_losses import FeatureLoss
    from tflight.distillation_losses import GroundTruthLoss
    from tflight.distillation_losses import HardTargetLoss
    from tflight.distillation_losses import LossInputs
    from tflight.distillation_losses import SoftTargetLoss

    # -- benchmark --
    from tflight.benchmark import Accelerator
    from tflight.benchmark import BenchmarkConfig
    from tflight.benchmark import BenchmarkResult
    from tflight.benchmark import Comparison
    from tflight.benchmark import Device
    from tflight.bench_history import append_history
    from tflight.benchmark import benchmark
    from tflight.benchmark import benchmark_many
    from tflight.bench_history import plot_latency_vs_size
    from tflight.bench_history import read_history
    from tflight.device import setup_arm64
    from tflight.profiles import PROFILES as DEVICE_PROFILES
    from tflight.profiles import DeviceProfile
    from tflight.profiles import estimate_latency

    # -- language models --
    from tflight import lm
    from tflight.lm import LiteRTLM
    from tflight.lm import benchmark_lm
    from tflight.lm import convert_lm

__version__ = "0.1.0"

# Where each public name lives. Nothing below is imported until it is first
# used, so `import tflight` (and `tflight --help`) does not load TensorFlow.
# A name mapped to "tflight" itself is the submodule of that name.
_EXPORTS: dict[str, str] = {
    "errors": "tflight",
    "load_digits": "tflight.datasets",
    "TflightError": "tflight.errors",
    # -- bridge --
    "BridgeReport": "tflight.bridge",
    "to_keras3": "tflight.bridge",
    "to_tf_keras": "tflight.bridge",
    # -- compression --
    "CentroidInit": "tflight.clustering",
    "Cluster": "tflight.clustering",
    "cluster": "tflight.clustering",
    "strip_clustering": "tflight.clustering",
    "Pipeline": "tflight.compose",
    "PipelineResult": "tflight.compose",
    "callbacks": "tflight.compose",
    "fit": "tflight.compose",
    "freeze": "tflight.compose",
    "CompressionReport": "tflight.compose",
    "compression_report": "tflight.compose",
    "FlattenResult": "tflight.flatten",
    "flatten": "tflight.flatten",
    "ConstantSparsity": "tflight.pruning",
    "PolynomialDecay": "tflight.pruning",
    "Prune": "tflight.pruning",
    "SparsityReport": "tflight.pruning",
    "prune": "tflight.pruning",
    "sparsity_report": "tflight.pruning",
    "strip_pruning": "tflight.pruning",
    "QAT": "tflight.quantization",
    "AgreementReport": "tflight.quantization",
    "check_agreement": "tflight.quantization",
    "quantize": "tflight.quantization",
    "strip_quantization": "tflight.quantization",
    # -- structure: channel pruning, low rank --
    "ChannelGroup": "tflight.depgraph",
    "DependencyGraph": "tflight.depgraph",
    "APoZImportance": "tflight.importance",
    "BNScaleImportance": "tflight.importance",
    "Importance": "tflight.importance",
    "MagnitudeImportance": "tflight.importance",
    "TaylorImportance": "tflight.importance",
    "LowRankResult": "tflight.lowrank",
    "factorize": "tflight.lowrank",
    "SensitivityResult": "tflight.sensitivity",
    "analyze_sensitivity": "tflight.sensitivity",
    "ChannelPruningResult": "tflight.structured",
    "GroupCut": "tflight.structured",
    "prune_channels": "tflight.structured",
    # -- mixed precision --
    "Precision": "tflight.precision",
    "QuantizedModel": "tflight.precision",
    "SensitivityReport": "tflight.precision",
    "quantize_int4": "tflight.precision",
    "quantize_layers": "tflight.precision",
    "quantization_sensitivity": "tflight.precision",
    "SearchResult": "tflight.precision_search",
    "search_precision": "tflight.precision_search",
    # -- distillation --
    "DistillationResult": "tflight.distillation",
    "Distiller": "tflight.distillation",
    "TeacherCache": "tflight.distillation",
    "distill": "tflight.distillation",
    "load_distiller": "tflight.distillation",
    "DistillationLoss": "tflight.distillation_losses",
    "FeatureLoss": "tflight.distillation_losses",
    "GroundTruthLoss": "tflight.distillation_losses",
    "HardTargetLoss": "tflight.distillation_losses",
    "LossInputs": "tflight.distillation_losses",
    "SoftTargetLoss": "tflight.distillation_losses",
    # -- benchmark --
    "Accelerator": "tflight.benchmark",
    "BenchmarkConfig": "tflight.benchmark",
    "BenchmarkResult": "tflight.benchmark",
    "Comparison": "tflight.benchmark",
    "Device": "tflight.benchmark",
    "append_history": "tflight.bench_history",
    "benchmark": "tflight.benchmark",
    "benchmark_many": "tflight.benchmark",
    "plot_latency_vs_size": "tflight.bench_history",
    "read_history": "tflight.bench_history",
    "setup_arm64": "tflight.device",
    "DEVICE_PROFILES": "tflight.profiles",
    "DeviceProfile": "tflight.profiles",
    "estimate_latency": "tflight.profiles",
    # -- language models --
    "lm": "tflight",
    "LiteRTLM": "tflight.lm",
    "benchmark_lm": "tflight.lm",
    "convert_lm": "tflight.lm",
}
# Public names that differ from the name inside their module.
_RENAMED: dict[str, str] = {
    "DEVICE_PROFILES": "PROFILES",
    "quantization_sensitivity": "sensitivity",
    "search_precision": "search",
    "compression_report": "report",
}

__all__ = [
    "errors",
    "load_digits",
    "TflightError",
    # -- bridge --
    "BridgeReport",
    "to_keras3",
    "to_tf_keras",
    # -- compression --
    "CentroidInit",
    "Cluster",
    "cluster",
    "strip_clustering",
    "Pipeline",
    "PipelineResult",
    "callbacks",
    "fit",
    "freeze",
    "CompressionReport",
    "compression_report",
    "FlattenResult",
    "flatten",
    "ConstantSparsity",
    "PolynomialDecay",
    "Prune",
    "SparsityReport",
    "prune",
    "sparsity_report",
    "strip_pruning",
    "QAT",
    "AgreementReport",
    "check_agreement",
    "quantize",
    "strip_quantization",
    # -- structure: channel pruning, low rank --
    "ChannelGroup",
    "DependencyGraph",
    "APoZImportance",
    "BNScaleImportance",
    "Importance",
    "MagnitudeImportance",
    "TaylorImportance",
    "LowRankResult",
    "factorize",
    "SensitivityResult",
    "analyze_sensitivity",
    "ChannelPruningResult",
    "GroupCut",
    "prune_channels",
    # -- mixed precision --
    "Precision",
    "QuantizedModel",
    "SensitivityReport",
    "quantize_int4",
    "quantize_layers",
    "quantization_sensitivity",
    "SearchResult",
    "search_precision",
    # -- distillation --
    "Distiller",
    "DistillationResult",
    "TeacherCache",
    "distill",
    "load_distiller",
    "DistillationLoss",
    "SoftTargetLoss",
    "HardTargetLoss",
    "GroundTruthLoss",
    "FeatureLoss",
    "LossInputs",
    # -- benchmark --
    "Accelerator",
    "BenchmarkConfig",
    "BenchmarkResult",
    "Comparison",
    "DEVICE_PROFILES",
    "Device",
    "DeviceProfile",
    "append_history",
    "benchmark",
    "benchmark_many",
    "estimate_latency",
    "plot_latency_vs_size",
    "read_history",
    "setup_arm64",
    # -- language models --
    "lm",
    "LiteRTLM",
    "benchmark_lm",
    "convert_lm",
]


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use (PEP 562)."""
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if module_name == __name__:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        value = getattr(importlib.import_module(module_name), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names (loaded or not) and the module's own dunder attributes."""
    return sorted({*__all__, "__version__", *(n for n in globals() if n.startswith("__"))})


class _Package(types.ModuleType):
    """Keeps a public name that is also a submodule's name bound to the public object.

    `tflight.benchmark` is the function, as it was when the package imported
    everything eagerly; the import system would otherwise rebind the package
    attribute to the submodule `tflight.benchmark` the first time anything
    imports that submodule.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if (
            isinstance(value, types.ModuleType)
            and value.__name__ == f"{__name__}.{name}"
            and _EXPORTS.get(name) not in (None, __name__)
        ):
            value = getattr(value, _RENAMED.get(name, name))
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
