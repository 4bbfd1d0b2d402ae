"""converters: Keras / SavedModel to verified TFLite (LiteRT) flatbuffers.

This package knows TensorFlow and LiteRT, and nothing of `tflight`.

Example:
  >>> import converters
  >>> result = converters.convert(model, "int8", representative_data=x[:100])
  >>> result.save("model.tflite")
  >>> converters.TFLiteModel("model.tflite").predict(x_test)
"""

from converters import errors
from converters.analysis import ModelStats, TensorInfo
from converters.convert import convert, convert_many
from converters.errors import ConversionError, PartialConversionError
from converters.gpu import GpuRun, run_on_gpu, setup_gpu
from converters.inspection import InspectReport, inspect
from converters.modes import Mode, Target
from converters.result import ConversionResult
from converters.runtime import TFLiteModel
from converters.targets import TargetReport
from converters.validate import Thresholds, ValidationReport, default_thresholds
from converters.verify import VerifiedTFLite, verify_tflite

__all__ = [
    "errors",
    "ConversionError",
    "PartialConversionError",
    "GpuRun",
    "run_on_gpu",
    "setup_gpu",
    "ConversionResult",
    "InspectReport",
    "Mode",
    "ModelStats",
    "Target",
    "TargetReport",
    "TensorInfo",
    "TFLiteModel",
    "Thresholds",
    "ValidationReport",
    "VerifiedTFLite",
    "convert",
    "convert_many",
    "default_thresholds",
    "inspect",
    "verify_tflite",
]
