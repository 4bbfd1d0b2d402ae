"""Shared, session-scoped fixtures: real data and tiny real models.

Importing TensorFlow and training even a tiny model costs seconds, so the data
and the small trained CNNs are built once per test session and shared. Tests
must not modify these objects: clone them first.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits as 8x8x1 float32 images, fixed split."""
    from tflight.datasets import load_digits

    return load_digits(seed=0)


@pytest.fixture(scope="session")
def calib(digits):
    """32 training images for calibration and validation."""
    return digits.x_train[:32]


def _tiny_cnn(k, seed: int = 0):
    """A 3-layer CNN for 8x8x1 inputs, in the Keras module `k`."""
    k.utils.set_random_seed(seed)
    return k.Sequential(
        [
            k.Input((8, 8, 1)),
            k.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            k.layers.MaxPooling2D(2, name="pool"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(10, name="logits"),
        ],
        name="tiny_cnn",
    )


def _train(model, digits, epochs: int = 3):
    model.compile(
        optimizer="adam",
        loss=_xent(model),
        metrics=["accuracy"],
    )
    model.fit(digits.x_train, digits.y_train, epochs=epochs, batch_size=64, verbose=0)
    return model


def _xent(model):
    module = type(model).__module__.split(".")[0]
    if module == "tf_keras":
        import tf_keras

        return tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    import keras

    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(scope="session")
def keras3_cnn(digits):
    """A tiny Keras 3 CNN trained for a few epochs on digits (logits output)."""
    import keras

    return _train(_tiny_cnn(keras), digits)


@pytest.fixture(scope="session")
def tf_keras_cnn(digits):
    """The same tiny CNN built and trained in tf_keras (Keras 2)."""
    from tflight._keras import tf_keras

    return _train(_tiny_cnn(tf_keras()), digits)


@pytest.fixture
def rng():
    return np.random.default_rng(0)
