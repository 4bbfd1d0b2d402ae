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

# -- compression --

# -- distillation --

# -- benchmark --

__version__ = "0.1.0"

__all__ = [
    "errors",
    "load_digits",
    "TflightError",
    # -- bridge --
    # -- compression --
    # -- distillation --
    # -- benchmark --
]
