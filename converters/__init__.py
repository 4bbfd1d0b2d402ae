"""converters: Keras / SavedModel to verified TFLite (LiteRT) flatbuffers.

This package knows TensorFlow and LiteRT, and nothing of `tflight`.
"""

from converters import errors
from converters.errors import ConversionError

__all__ = [
    "errors",
    "ConversionError",
]
