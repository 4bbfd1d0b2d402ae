"""Keras 3 activations through the bridge and TF-MOT's 8-bit QAT (MobileNetV3)."""

from __future__ import annotations

import numpy as np
import pytest

import tflight
from tflight import bridge
from tflight._keras import keras, tf_keras, tfmot


@pytest.fixture(scope="module")
def mobilenet_v3():
    """MobileNetV3Small (hard_swish, hard_sigmoid squeeze-excite) and its tf_keras rebuild."""
    keras.utils.set_random_seed(0)
    source = keras.applications.MobileNetV3Small(
        weights=None, input_shape=(32, 32, 3), classes=10, include_preprocessing=False
    )
    return source, tflight.to_tf_keras(source)


def test_activations_keep_their_names(mobilenet_v3):
    _, forward = mobilenet_v3
    names = {
        str(layer.activation) for layer in forward.layers if type(layer).__name__ == "Activation"
    }
    assert "hard_silu" in names
    for layer in forward.layers:
        if type(layer.activation if hasattr(layer, "activation") else None).__name__ == (
            "Keras3Activation"
        ):
            # TF-MOT's messages format the activation with str().
            assert f"{layer.activation}" == layer.activation.__name__ == "hard_silu"


def test_quantize_config_lets_tfmot_quantize_hard_swish(mobilenet_v3):
    source, forward = mobilenet_v3
    mot = tfmot().quantization.keras
    registry = mot.default_8bit.Default8BitQuantizeRegistry()
    given = []

    def annotate(layer):
        config = bridge.quantize_config(layer)
        if config is not None:
            given.append(layer.name)
            return mot.quantize_annotate_layer(layer, quantize_config=config)
        if registry.supports(layer):
            return mot.quantize_annotate_layer(layer)
        return layer  # graph operations and Multiply stay float

    annotated = tf_keras().models.clone_model(forward, clone_function=annotate)
    with mot.quantize_scope():
        qat = mot.quantize_apply(annotated)
    hard = [
        layer.name
        for layer in forward.layers
        if type(layer).__name__ == "Activation" and layer.activation.__name__ == "hard_silu"
    ]
    assert hard and sorted(given) == sorted(hard)
    wrapped = {
        layer.layer.name for layer in qat.layers if type(layer).__name__ == "QuantizeWrapperV2"
    }
    assert set(hard) <= wrapped
    x = np.random.default_rng(0).uniform(0, 1, size=(2, 32, 32, 3)).astype("float32")
    out = np.asarray(qat(x, training=False))
    # Fake quantization moves outputs a little, never to another scale.
    np.testing.assert_allclose(out, np.asarray(source(x, training=False)), atol=0.1)


def test_quantize_config_is_none_where_tfmot_decides(mobilenet_v3):
    _, forward = mobilenet_v3
    kinds = {type(layer).__name__ for layer in forward.layers if bridge.quantize_config(layer)}
    assert kinds == {"Activation"}
    x = keras.Input((4,))
    h = keras.layers.Dense(3, activation="relu6", name="d")(x)
    h = keras.layers.Activation("relu6", name="r6")(h)
    small = tflight.to_tf_keras(keras.Model(x, keras.layers.Activation("leaky_relu", name="lr")(h)))
    assert bridge.quantize_config(small.get_layer("r6")) is None  # TF-MOT knows relu6
    assert bridge.quantize_config(small.get_layer("lr")) is None  # kept float, reported
    assert bridge.quantize_config(small.get_layer("d")) is None
