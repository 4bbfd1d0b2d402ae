"""The Keras 3 <-> tf_keras bridge: rebuild a model layer by layer, weights copied, outputs checked.

TF-MOT works only on tf_keras models; the bridge is what lets Keras 3 models
reach it. Custom layers join through `register` (or `inline` for blocks made of
layers); nested models are inlined into one graph by `flatten`. The entry
points are in `core`; its docstring maps the other modules.
"""

from tflight._lazy import attach

_EXPORTS = {
    "BridgeReport": "tflight.bridge.verify",
    "to_keras3": "tflight.bridge.core",
    "to_tf_keras": "tflight.bridge.core",
    "FlattenResult": "tflight.bridge.flattening",
    "flatten": "tflight.bridge.flattening",
    # Stage-only names (not re-exported by `tflight`): custom-layer registration.
    "Direction": "tflight.bridge.generations",
    "Translation": "tflight.bridge.registry",
    "register": "tflight.bridge.registry",
    "unregister": "tflight.bridge.registry",
    "inline": "tflight.bridge.registry",
    "compare": "tflight.bridge.verify",
    "report_of": "tflight.bridge.core",
    "unsupported_advice": "tflight.bridge.advice",
    "quantize_config": "tflight.bridge.advice",
    "custom_objects": "tflight.bridge.own_objects",
}
# Names the top-level `tflight` namespace does not re-export.
_LOCAL = frozenset(
    {"Direction", "Translation", "register", "unregister", "inline", "compare", "report_of",
     "unsupported_advice", "quantize_config", "custom_objects"}
)

__getattr__, __dir__, __all__ = attach(__name__, _EXPORTS)
