"""tflight: make Keras models small and fast for TFLite (LiteRT).

Compress Keras 3 or tf_keras models (pruning, quantization-aware training,
clustering, channel pruning, low rank, mixed precision, distillation), convert
them to verified `.tflite` flatbuffers with `converters`, and benchmark them on
the host, an emulated ARM64 device and LiteRT's GPU accelerator.

The package is one sub-package per stage, in pipeline order:
`tflight.devices`, `tflight.bridge`, `tflight.compress`, `tflight.distillation`,
`tflight.shrink`, `tflight.precision`, `tflight.bench`. Each declares its public
names once (its `_EXPORTS`); this namespace re-exports them, lazily, so
`import tflight` loads no TensorFlow. Importing `tflight` does not change what
the user's `import keras` or `tf.keras` refers to.
"""

from __future__ import annotations

import importlib

from tflight import _lazy, _moved

__version__ = "0.1.0"

# The stages in pipeline order: a stage may import the core modules
# (`tflight._keras`, `tflight.errors`, `tflight._io`, `tflight.datasets`,
# `tflight._lazy`), `converters` and the stages before it (tests/test_layout.py).
STAGES = (
    "tflight.devices",
    "tflight.bridge",
    "tflight.compress",
    "tflight.distillation",
    "tflight.shrink",
    "tflight.precision",
    "tflight.bench",
)

# Names that belong to no stage.
_EXPORTS = {
    "errors": "tflight.errors",
    "load_digits": "tflight.datasets",
    "TflightError": "tflight.errors",
}


def _collect() -> tuple[dict[str, str], dict[str, str]]:
    exports, deprecated = dict(_EXPORTS), {}
    for stage in STAGES:
        module = importlib.import_module(stage)  # no TensorFlow: stages load lazily
        local = getattr(module, "_LOCAL", frozenset())
        exports.update({k: v for k, v in module._EXPORTS.items() if k not in local})
        deprecated.update(getattr(module, "_DEPRECATED", {}))
    return exports, deprecated


_ALL_EXPORTS, _ALL_DEPRECATED = _collect()
__getattr__, __dir__, __all__ = _lazy.attach(__name__, _ALL_EXPORTS, deprecated=_ALL_DEPRECATED)
_moved.install()
