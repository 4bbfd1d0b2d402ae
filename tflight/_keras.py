"""The one place that decides which Keras generation is in play.

TensorFlow 2.21 ships Keras 3 as `tf.keras`; TF-MOT only works on tf_keras
(Keras 2) models and, when imported, sets `TF_USE_LEGACY_KERAS=1`, which can
flip the user's own `tf.keras` to tf_keras if it had not been resolved yet.
Everything in `tflight` imports Keras through this module so that:

* `import tflight` leaves the user's `import keras` and `tf.keras` as they were;
* TF-MOT is imported lazily (only when a compression technique is used) and
  with the environment variable restored afterwards;
* when this module imports TensorFlow first, it starts quietly: the native
  start-up lines (CUDA probes on a machine without a GPU, CPU-feature, oneDNN
  and absl notices) stay off the terminal, as they do on the command line. A
  user who set `TF_CPP_MIN_LOG_LEVEL` (or `TFLIGHT_VERBOSE=1`), or imported
  TensorFlow before, sees TensorFlow exactly as configured.
"""

from __future__ import annotations

import functools
import importlib
import os
import sys
from types import ModuleType
from typing import Any

_LEGACY_ENV = "TF_USE_LEGACY_KERAS"
_LOG_LEVEL_ENV = "TF_CPP_MIN_LOG_LEVEL"
_VERBOSE_ENV = "TFLIGHT_VERBOSE"


def _start_quietly() -> bool:
    """Whether TensorFlow is still to be imported and the user left its logging to us."""
    return (
        "tensorflow" not in sys.modules
        and _LOG_LEVEL_ENV not in os.environ
        and os.environ.get(_VERBOSE_ENV, "").strip() in ("", "0")
    )


def _quiet_python_logs() -> bool:
    """Whether TensorFlow is still to be imported and its C++ logs are asked to be quiet.

    True when nobody set `TF_CPP_MIN_LOG_LEVEL` or it is set to 2 or more (the
    `tflight` command sets 2 before anything imports TensorFlow).
    """
    level = os.environ.get(_LOG_LEVEL_ENV, "2").strip()
    return (
        "tensorflow" not in sys.modules
        and os.environ.get(_VERBOSE_ENV, "").strip() in ("", "0")
        and level.isdigit() and int(level) >= 2
    )


_QUIET_PYTHON_LOGS = _quiet_python_logs()

if _start_quietly():
    from converters._native_log import quiet_start_up

    os.environ[_LOG_LEVEL_ENV] = "2"  # C++ INFO and WARNING logs, for this process and its children
    with quiet_start_up():
        import keras
        import tensorflow as tf

        # CUDA is probed (and complains on a machine without a GPU) at the first
        # device query, so that happens here too.
        tf.config.list_physical_devices()
else:
    import keras
    import tensorflow as tf
if _QUIET_PYTHON_LOGS:
    # TensorFlow's Python loggers (absl's and `tf.get_logger()`, e.g. the retracing
    # notices that tflight's repeated `predict` calls cause) at ERROR, as the C++ side.
    from absl import logging as _absl_logging

    _absl_logging.set_verbosity(_absl_logging.ERROR)
    tf.get_logger().setLevel("ERROR")

__all__ = [
    "keras",
    "tf",
    "tf_keras",
    "tfmot",
    "tfmot_internal",
    "tf_keras_internal",
    "is_keras3_model",
    "is_tf_keras_model",
]


@functools.cache
def tf_keras() -> ModuleType:
    """Returns the `tf_keras` (Keras 2) module."""
    import tf_keras as _tf_keras

    return _tf_keras


@functools.cache
def tfmot() -> ModuleType:
    """Imports TF-MOT without changing which Keras `tf.keras` means for the user."""
    # Resolve the lazy `tf.keras` attribute first, under the user's own setting,
    # so that TF-MOT's environment change cannot retarget it.
    _ = tf.keras.__name__
    saved = os.environ.get(_LEGACY_ENV)
    try:
        import tensorflow_model_optimization as _tfmot
    finally:
        if saved is None:
            os.environ.pop(_LEGACY_ENV, None)
        else:
            os.environ[_LEGACY_ENV] = saved
    return _tfmot


def tfmot_internal(path: str) -> ModuleType:
    """A private TF-MOT module, e.g. `"sparsity.keras.prune_registry"`.

    Some things tflight needs (the layer registries, the wrapper classes) are not
    in TF-MOT's public API; every such import goes through here, after `tfmot()`.
    """
    tfmot()
    return importlib.import_module(f"tensorflow_model_optimization.python.core.{path}")


def tf_keras_internal(path: str) -> ModuleType:
    """A private tf_keras module, e.g. `"engine.keras_tensor"`."""
    tf_keras()
    return importlib.import_module(f"tf_keras.src.{path}")


def is_keras3_model(obj: Any) -> bool:
    """True for a Keras 3 `keras.Model` (Sequential, Functional or subclassed)."""
    return isinstance(obj, keras.Model)


def is_tf_keras_model(obj: Any) -> bool:
    """True for a tf_keras (Keras 2) `Model`."""
    # Look at the class hierarchy first so that tf_keras is not imported for a
    # Keras 3 model.
    if not any(c.__module__.split(".")[0] == "tf_keras" for c in type(obj).__mro__):
        return False
    return isinstance(obj, tf_keras().Model)
