"""tflight: make Keras models small and fast for TFLite (LiteRT).

Compress Keras 3 or tf_keras models (pruning, quantization-aware training,
clustering, distillation), convert them to verified `.tflite` flatbuffers with
`converters`, and benchmark them on the host and on an emulated ARM64 device.

Importing `tflight` does not change what the user's `import keras` or `tf.keras`
refers to.
"""

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
from tflight.benchmark import append_history
from tflight.benchmark import benchmark
from tflight.benchmark import benchmark_many
from tflight.benchmark import plot_latency_vs_size
from tflight.benchmark import read_history
from tflight.device import setup_arm64
from tflight.profiles import PROFILES as DEVICE_PROFILES
from tflight.profiles import DeviceProfile
from tflight.profiles import estimate_latency

__version__ = "0.1.0"

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
]
